package logto

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

const testAPI = "https://api.example.com"

// orgRoute is a route whose organization comes from the request.
func orgRoute(h *Handler) { h.Organization = "{http.request.header.X-Org}" }

// TestOrganizationTokenForMember: the route's organization, taken from the
// request, yields an organization token for a member, asked of Logto with
// organization_id.
func TestOrganizationTokenForMember(t *testing.T) {
	hx := newHarness(t, nil, orgRoute)
	b := newBrowser()
	auth := hx.startSignIn(b, "/")
	q := auth.Query()
	if !strings.Contains(q.Get("scope"), "urn:logto:scope:organizations") || !slices.Contains(q["resource"], "urn:logto:resource:organizations") {
		t.Errorf("organization scope/resource not requested: scope=%q resource=%q", q.Get("scope"), q["resource"])
	}
	code := hx.idp.issueCode(auth, "user-1")
	hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)

	res := hx.serve(http.MethodGet, "/", b, fetchAPI(), withHeader("X-Org", "org1"))
	mustPass(t, res, "user-1")
	if res.ph["http.auth.logto.organization_id"] != "org1" {
		t.Errorf("{http.auth.logto.organization_id} = %q", res.ph["http.auth.logto.organization_id"])
	}
	claims, err := jwtClaims(res.ph["http.auth.logto.access_token"])
	if err != nil || claims["aud"] != "urn:logto:organization:org1" {
		t.Errorf("access token claims %v (%v), want the organization token", claims, err)
	}
	reqs := hx.idp.refreshRequests()
	if len(reqs) != 1 || reqs[0].Get("organization_id") != "org1" || reqs[0].Has("resource") {
		t.Errorf("refresh requests %v, want one with organization_id=org1", reqs)
	}
	// Each organization has its own token.
	res = hx.serve(http.MethodGet, "/", b, fetchAPI(), withHeader("X-Org", "org2"))
	mustPass(t, res, "user-1")
	if claims, _ := jwtClaims(res.ph["http.auth.logto.access_token"]); claims["aud"] != "urn:logto:organization:org2" {
		t.Errorf("org2 request got a token for %v", claims["aud"])
	}
}

// TestOrganizationInjection: the organization id comes from the request
// (a header, a subdomain). A user who names an organization they are not
// in gets 403, and Logto is not even asked for its token: the module must
// not be a way to probe or obtain tokens of other organizations.
func TestOrganizationInjection(t *testing.T) {
	for _, infoOnly := range []bool{false, true} {
		name := "organizations in ID token"
		if infoOnly {
			name = "organizations only in userinfo"
		}
		t.Run(name, func(t *testing.T) {
			idp := newFakeIdP(t)
			if infoOnly {
				idp.mu.Lock()
				idp.infoOnly["user-1"] = []string{"organizations", "organization_roles"}
				idp.mu.Unlock()
			}
			hx := newHarness(t, idp, orgRoute)
			b := hx.signedIn()
			for _, org := range []string{"org-evil", "", "org1 ", " org1", "../org1", "org1,org2", "org1%00", "ORG1", "org1/../org2"} {
				res := hx.serve(http.MethodGet, "/", b.clone(), navigation(), withHeader("X-Org", org))
				res.mustHandlerError(t, http.StatusForbidden)
				if loc := res.rec.Header().Get("Location"); loc != "" {
					t.Errorf("X-Org %q: 403 with a redirect to %q", org, loc)
				}
				if c := res.setCookie(t, sessionCookie); c != nil && c.MaxAge < 0 {
					t.Errorf("X-Org %q: a 403 signed the user out", org)
				}
			}
			if reqs := idp.refreshRequests(); len(reqs) != 0 {
				t.Fatalf("Logto was asked for tokens: %v", reqs)
			}
			mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI(), withHeader("X-Org", "org1")), "user-1")
		})
	}
}

// TestRequireRules: each kind of rule lets the right users through and
// gives the others 403 (no redirect: that would loop back to a user who is
// already signed in).
func TestRequireRules(t *testing.T) {
	for _, c := range []struct {
		name     string
		rules    []Rule
		org      string // X-Org, for rules on the route's organization
		resource bool
		pass     bool
	}{
		{"role held", []Rule{{Kind: "role", Values: []string{"admin"}}}, "", false, true},
		{"one of the roles", []Rule{{Kind: "role", Values: []string{"superuser", "editor"}}}, "", false, true},
		{"role not held", []Rule{{Kind: "role", Values: []string{"superuser"}}}, "", false, false},
		{"role is case-sensitive", []Rule{{Kind: "role", Values: []string{"Admin"}}}, "", false, false},
		{"claim bool", []Rule{{Kind: "claim", Claim: "email_verified", Values: []string{"true"}}}, "", false, true},
		{"claim string", []Rule{{Kind: "claim", Claim: "email", Values: []string{"ada@example.com"}}}, "", false, true},
		{"claim other value", []Rule{{Kind: "claim", Claim: "email", Values: []string{"root@example.com"}}}, "", false, false},
		{"claim list contains", []Rule{{Kind: "claim", Claim: "roles", Values: []string{"editor"}}}, "", false, true},
		{"claim absent", []Rule{{Kind: "claim", Claim: "department", Values: []string{"x"}}}, "", false, false},
		{"claim null", []Rule{{Kind: "claim", Claim: "picture", Values: []string{""}}}, "", false, false},
		{"organization listed", []Rule{{Kind: "organization", Values: []string{"org9", "org2"}}}, "", false, true},
		{"organization not listed", []Rule{{Kind: "organization", Values: []string{"org9"}}}, "", false, false},
		{"route organization", []Rule{{Kind: "organization"}}, "org1", false, true},
		{"organization role", []Rule{{Kind: "organization_role", Values: []string{"admin"}}}, "org1", false, true},
		{"organization role elsewhere", []Rule{{Kind: "organization_role", Values: []string{"admin"}}}, "org2", false, false},
		{"resource permission", []Rule{{Kind: "scope", Values: []string{"read:docs"}}}, "", true, true},
		{"resource permission not granted", []Rule{{Kind: "scope", Values: []string{"delete:docs"}}}, "", true, false},
		{"organization permission", []Rule{{Kind: "scope", Values: []string{"invite:member"}}}, "org1", false, true},
		{"organization permission elsewhere", []Rule{{Kind: "scope", Values: []string{"invite:member"}}}, "org2", false, false},
		{"all rules must hold", []Rule{{Kind: "role", Values: []string{"admin"}}, {Kind: "role", Values: []string{"superuser"}}}, "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			idp := newFakeIdP(t)
			idp.permissions[testAPI] = []string{"read:docs", "write:docs"}
			idp.permissions["urn:logto:organization:org1"] = []string{"invite:member"}
			hx := newHarness(t, idp, func(h *Handler) {
				h.Require = c.rules
				if c.org != "" {
					orgRoute(h)
				}
				if c.resource {
					h.TokenResource = testAPI
				}
				// delete:docs is asked for, but the user's roles do not grant it.
				h.Scopes = []string{"read:docs", "delete:docs"}
			})
			b := hx.signedIn()
			var opts []reqOpt
			if c.org != "" {
				opts = append(opts, withHeader("X-Org", c.org))
			}
			res := hx.serve(http.MethodGet, "/", b, append(opts, navigation())...)
			if c.pass {
				mustPass(t, res, "user-1")
				return
			}
			res.mustHandlerError(t, http.StatusForbidden)
			if res.rec.Header().Get("Location") != "" {
				t.Error("a failed rule redirected")
			}
		})
	}
}

// TestUserinfoFallbackCached: a tenant without extended ID token claims
// leaves roles out of the ID token; a rule on roles reads userinfo once per
// session generation, not on every request.
func TestUserinfoFallbackCached(t *testing.T) {
	idp := newFakeIdP(t)
	idp.mu.Lock()
	idp.infoOnly["user-1"] = []string{"roles", "organizations", "organization_roles"}
	idp.mu.Unlock()
	hx := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}} })
	b := hx.signedIn()
	for range 5 {
		mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	}
	if n := idp.userinfoHits.Load(); n != 1 {
		t.Errorf("userinfo fetched %d times, want 1", n)
	}
	if n := idp.refreshGrants.Load(); n != 0 {
		t.Errorf("%d refresh grants; the code exchange's access token should do", n)
	}
}

// TestOrganizationScopedResourceToken: token_resource with an organization
// gives a token for the API, scoped to that organization.
func TestOrganizationScopedResourceToken(t *testing.T) {
	idp := newFakeIdP(t)
	idp.permissions["urn:logto:organization:org1"] = []string{"read:docs"}
	hx := newHarness(t, idp, func(h *Handler) {
		orgRoute(h)
		h.TokenResource = testAPI
		h.Scopes = []string{"read:docs"}
	})
	b := hx.signedIn()
	res := hx.serve(http.MethodGet, "/", b, fetchAPI(), withHeader("X-Org", "org1"))
	mustPass(t, res, "user-1")
	claims, _ := jwtClaims(res.ph["http.auth.logto.access_token"])
	if claims["aud"] != testAPI || claims["organization_id"] != "org1" {
		t.Errorf("token claims %v, want aud %s for org1", claims, testAPI)
	}
	reqs := idp.refreshRequests()
	if len(reqs) != 1 || reqs[0].Get("resource") != testAPI || reqs[0].Get("organization_id") != "org1" {
		t.Errorf("refresh requests %v", reqs)
	}
}

// TestStackedHandlers: a site-wide logto block and a stricter one for
// /admin (same application) run one after the other. The second finds the
// user the first found (the first removed the cookies), applies its own
// rules, and a user who fails them gets 403 rather than being sent to sign
// in again (a loop).
func TestStackedHandlers(t *testing.T) {
	idp := newFakeIdP(t)
	idp.addUser("user-2", map[string]any{"name": "Grace", "roles": []any{"viewer"}})
	site := newHarness(t, idp, nil)
	admin := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}} })
	serve := func(b *tbrowser, opts ...reqOpt) *result {
		r, repl, w := newRequest(http.MethodGet, "/admin", nil, append([]reqOpt{b.send}, opts...)...)
		res := &result{rec: w, ph: map[string]string{}, known: map[string]bool{}}
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			res.next = true
			res.nextReq = r
			rr := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			res.ph["http.auth.user.id"] = rr.ReplaceAll("{http.auth.user.id}", "")
			return nil
		})
		res.err = site.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return admin.h.ServeHTTP(w, r, next)
		}))
		_ = repl
		return res
	}
	ada := site.signedIn()
	mustPass(t, serve(ada, fetchAPI()), "user-1")
	grace := newBrowser()
	site.signIn(grace, "/", "user-2")
	res := serve(grace, navigation())
	res.mustHandlerError(t, http.StatusForbidden)
	if res.rec.Header().Get("Location") != "" {
		t.Error("the stricter block sent a signed-in user to sign in again")
	}
	anon := serve(newBrowser(), navigation())
	site.mustRedirectToAuth(t, anon)
}

// TestStackedHandlersPruneAttempts: with a site-wide pass block first (it
// strips the module's cookies) and a protected block after it, the block
// that starts the sign-in must still see the browser's earlier attempts to
// prune them; otherwise one more attempt cookie piles up per visit.
func TestStackedHandlersPruneAttempts(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) { h.Pass = true })
	private := newHarness(t, idp, nil)
	tabs := newBrowser()
	for range 3 * maxAttempts {
		r, _, w := newRequest(http.MethodGet, "/private", nil, tabs.send, navigation())
		// Caddy gives each request its variables, which the handlers
		// share their state through.
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
		res := &result{rec: w, ph: map[string]string{}, known: map[string]bool{}}
		res.err = site.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return private.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
				t.Fatal("an anonymous request reached the protected content")
				return nil
			}))
		}))
		private.mustRedirectToAuth(t, res)
		tabs.absorb(t, res)
	}
	if n := len(tabs.names(sessionCookie + "-signin-")); n > maxAttempts {
		t.Errorf("%d attempt cookies after %d anonymous visits through stacked blocks, want at most %d", n, 3*maxAttempts, maxAttempts)
	}
}
