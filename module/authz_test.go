package logto

import (
	"context"
	"net/http"
	"net/url"
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

// authScopes and authResources read what an authorization request asked.
func authScopes(u *url.URL) []string    { return strings.Fields(u.Query().Get("scope")) }
func authResources(u *url.URL) []string { return u.Query()["resource"] }

func mustInclude(t *testing.T, what string, have, want []string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("%s %v lacks %q", what, have, w)
		}
	}
}

// TestSignInAsksForTheApplicationsUnion: Logto grants nothing later that
// the sign-in did not ask for, so a sign-in started by a site-wide pass
// block must ask for what a stricter /admin block of the same application
// needs (the README's B2B recipe kept organization admins out of /admin
// when only the first block's scopes were asked). Choices such as
// first_screen stay with the block that made them; another application on
// the same endpoint adds nothing; a block of the same application with
// another cookie_secret is still the same application at Logto.
func TestSignInAsksForTheApplicationsUnion(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) { h.Pass = true; h.Scopes = []string{"email"} })
	newHarness(t, idp, func(h *Handler) {
		orgRoute(h)
		h.FirstScreen = "register"
		h.Require = []Rule{{Kind: "organization_role", Values: []string{"admin"}}}
	})
	newHarness(t, idp, func(h *Handler) {
		h.CookieSecrets = []string{strings.Repeat("k", 32)}
		h.TokenResource = "https://api.example.com"
		h.Require = []Rule{{Kind: "scope", Values: []string{"write:docs"}}}
	})
	other := newFakeIdP(t)
	newHarness(t, other, func(h *Handler) {
		h.Endpoint = idp.srv.URL // same tenant, another application
		h.Scopes = []string{"phone"}
		h.Resources = []string{"https://billing.example.com"}
	})

	for _, path := range []string{"/logto/sign-in", "/logto/sign-up"} {
		auth := site.mustRedirectToAuth(t, site.serve(http.MethodGet, path, newBrowser(), navigation()))
		mustInclude(t, path+" scope", authScopes(auth), []string{
			"openid", "offline_access", "profile", "email", "urn:logto:scope:organizations",
			"urn:logto:scope:organization_roles", "write:docs",
		})
		mustInclude(t, path+" resource", authResources(auth), []string{"urn:logto:resource:organizations", "https://api.example.com"})
		if slices.Contains(authScopes(auth), "phone") || slices.Contains(authResources(auth), "https://billing.example.com") {
			t.Errorf("%s asks for another application's needs: %v", path, auth.Query())
		}
		if path == "/logto/sign-in" && auth.Query().Get("first_screen") != "" {
			t.Errorf("the pass block's sign-in took another block's first_screen: %q", auth.Query().Get("first_screen"))
		}
	}
}

// TestNeedsRegistryFollowsReloads: a config reload provisions the new
// blocks before it cleans up the old ones; while both are loaded a sign-in
// asks for both, and once the old ones are gone, for the new ones only.
func TestNeedsRegistryFollowsReloads(t *testing.T) {
	endpoint, appID := "https://reload.example", "app-"+randomString(6)
	_, dropOld := registerNeeds(endpoint, appID, &needs{scopes: []string{"roles"}, resources: []string{"https://old.example"}})
	app, dropNew := registerNeeds(endpoint, appID, &needs{scopes: []string{"email"}})
	other, dropOther := registerNeeds(endpoint, "another-app", &needs{scopes: []string{"phone"}})
	defer dropOther()
	if other == app {
		t.Fatal("two applications share one registry")
	}
	u := app.union.Load()
	if !slices.Equal(u.scopes, []string{"roles", "email"}) || !slices.Equal(u.resources, []string{"https://old.example"}) {
		t.Errorf("union while both configs are loaded: %+v", *u)
	}
	dropOld()
	dropOld() // Cleanup may run twice; the second must not drop another's needs
	if u := app.union.Load(); !slices.Equal(u.scopes, []string{"email"}) || len(u.resources) != 0 {
		t.Errorf("union after the old config is cleaned up: %+v", *u)
	}
	dropNew()
	appsMu.Lock()
	_, kept := apps[endpoint+"\x00"+appID]
	appsMu.Unlock()
	if kept {
		t.Error("an application without blocks is kept in the registry")
	}
}

// TestStepUpForSessionThatNeverAsked: a user signed in before the
// configuration grew a rule whose claim their sign-in never asked for.
// Logto would not grant it later, so a 403 would strand them until they
// signed out; instead a navigation is sent through sign-in once more with
// the application's needs and comes back to the same page, and anything
// else gets 401 naming what is missing. After that second sign-in the
// route lets them in.
func TestStepUpForSessionThatNeverAsked(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, nil)
	b := site.signedIn()
	before := b.get(sessionCookie)

	// The configuration changes: /admin now needs a role.
	admin := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}} })

	api := admin.serve(http.MethodGet, "/admin/data?x=1", b.clone(), fetchAPI())
	api.mustHandlerError(t, http.StatusUnauthorized)
	wa := api.rec.Header().Get("WWW-Authenticate")
	if !strings.Contains(wa, `error="insufficient_scope"`) || !strings.Contains(wa, `scope="roles"`) {
		t.Errorf("401 WWW-Authenticate %q does not say roles is missing", wa)
	}

	nav := admin.serve(http.MethodGet, "/admin/panel?tab=2", b, navigation())
	auth := admin.mustRedirectToAuth(t, nav)
	mustInclude(t, "step-up scope", authScopes(auth), []string{"roles"})
	code := idp.issueCode(auth, "user-1")
	cb := admin.serve(http.MethodGet, admin.callbackURL(auth, code), b, navigation())
	if loc := cb.rec.Header().Get("Location"); loc != "/admin/panel?tab=2" {
		t.Fatalf("after the second sign-in the browser goes to %q, want back to /admin/panel?tab=2", loc)
	}
	if b.get(sessionCookie) == before {
		t.Fatal("the second sign-in left the old session cookie")
	}
	mustPass(t, admin.serve(http.MethodGet, "/admin/panel?tab=2", b, navigation()), "user-1")
	mustPass(t, admin.serve(http.MethodGet, "/admin/data", b, fetchAPI()), "user-1")
}

// TestStepUpNeverLoops: a session that lacks what a route needs right
// after the second sign-in (the configuration changed again in between)
// gets 403 and a log line naming what is missing, not another trip to
// Logto.
func TestStepUpNeverLoops(t *testing.T) {
	_, admin, strict, b := steppedUpStillLacking(t, nil)

	mark := len(capturedLogs.String())
	res := strict.serve(http.MethodGet, "/admin", b, navigation())
	res.mustHandlerError(t, http.StatusForbidden)
	if res.rec.Header().Get("Location") != "" {
		t.Fatal("a session that just signed in again was sent to sign in once more")
	}
	logs := capturedLogs.String()[mark:]
	if !strings.Contains(logs, "still lacks what the route needs") || !strings.Contains(logs, `"missing_scopes":["custom_data"]`) {
		t.Errorf("no log line naming the missing scope; captured:\n%s", logs)
	}
	// The route that was stepped up for works.
	mustPass(t, admin.serve(http.MethodGet, "/admin", b, navigation()), "user-1")
}

// steppedUpStillLacking signs user-1 in on a site (configured by
// configureSite), sends them through a second sign-in for admin's role
// rule, and meanwhile adds a block (strict) that also needs custom_data:
// Logto is sent what the application needed when the step-up started, so
// by the time the user is back the session lacks custom_data.
func steppedUpStillLacking(t *testing.T, configureSite func(*Handler)) (idp *fakeIdP, admin, strict *harness, b *tbrowser) {
	t.Helper()
	idp = newFakeIdP(t)
	b = newHarness(t, idp, configureSite).signedIn()
	admin = newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}} })
	auth := admin.mustRedirectToAuth(t, admin.serve(http.MethodGet, "/admin", b, navigation()))
	newHarness(t, idp, func(h *Handler) { h.Scopes = []string{"custom_data"} })
	strict = newHarness(t, idp, func(h *Handler) {
		h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}, {Kind: "claim", Claim: "custom_data", Values: []string{"x"}}}
	})
	admin.serve(http.MethodGet, admin.callbackURL(auth, idp.issueCode(auth, "user-1")), b, navigation())
	return idp, admin, strict, b
}

// TestStepUpSkipsPassBlocksAndCoveredSessions: a session whose sign-in
// asked for everything passes without a second sign-in, and a pass block
// without rules never sends a signed-in visitor of a public page to Logto
// for a scope it only uses in a placeholder.
func TestStepUpSkipsPassBlocksAndCoveredSessions(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}} })
	b := site.signedIn()
	mustPass(t, site.serve(http.MethodGet, "/", b, navigation()), "user-1")

	public := newHarness(t, idp, func(h *Handler) { h.Pass = true; h.Scopes = []string{"phone"} })
	mustPass(t, public.serve(http.MethodGet, "/", b, navigation()), "user-1")
}

// TestTokenRefusalLogsLogtosError: when Logto refuses a grant the log line
// carries its error and error_description, so "invalid_target" (a
// resource Logto no longer knows) is told from any other 403; tokens and
// codes stay out (the leak check runs at cleanup).
func TestTokenRefusalLogsLogtosError(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
	b := hx.signedIn()
	// The API resource is deleted in Logto after the sign-in.
	idp.dropGrantedResources()
	mark := len(capturedLogs.String())
	hx.serve(http.MethodGet, "/", b, fetchAPI())
	logs := capturedLogs.String()[mark:]
	for _, want := range []string{`"error":"invalid_target"`, `"error_description":"resource not granted"`, `"resource":"https://api.example.com"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the refusal's log line lacks %s; captured:\n%s", want, logs)
		}
	}
}

// TestAskedSurvivesTheCookie: what a sign-in asked for is kept in the
// session (Logto's URNs abbreviated) and read back as it was asked.
func TestAskedSurvivesTheCookie(t *testing.T) {
	in := []string{"email", "urn:logto:scope:organization_roles", "urn:logto:resource:organizations", "https://api.example.com"}
	ab := abbreviateAsked(in)
	if strings.Contains(strings.Join(ab, " "), "urn:logto:") {
		t.Errorf("not abbreviated: %v", ab)
	}
	s := session{Scopes: ab, Resources: abbreviateAsked([]string{"urn:logto:resource:organizations"})}
	u := &user{asked: askedSet(&s)}
	n := &needs{scopes: in[:2], resources: []string{"urn:logto:resource:organizations"}}
	if !n.coveredBy(u) {
		t.Errorf("needs %+v not covered by what was asked %+v", *n, s)
	}
	if m := (&needs{resources: []string{"https://api.example.com"}}).missingFrom(u); !slices.Equal(m.resources, []string{"https://api.example.com"}) {
		t.Errorf("a scope was taken for a resource: missing %+v", m)
	}
}

// TestCoveredByDoesNotAllocate: the step-up check runs on every request of
// a block with needs; for a session that has what it needs it must cost
// map lookups only, no allocation (and it takes no lock).
func TestCoveredByDoesNotAllocate(t *testing.T) {
	s := session{
		Scopes:    abbreviateAsked([]string{"email", "urn:logto:scope:organizations", "urn:logto:scope:organization_roles", "write:docs"}),
		Resources: abbreviateAsked([]string{"urn:logto:resource:organizations", "https://api.example.com"}),
	}
	u := &user{asked: askedSet(&s)}
	n := &needs{
		scopes:    []string{"urn:logto:scope:organizations", "urn:logto:scope:organization_roles", "write:docs"},
		resources: []string{"urn:logto:resource:organizations", "https://api.example.com"},
	}
	if !n.coveredBy(u) {
		t.Fatal("not covered")
	}
	if a := testing.AllocsPerRun(100, func() { n.coveredBy(u) }); a != 0 {
		t.Errorf("coveredBy allocates %v times per call", a)
	}
}

// TestInvalidTargetStepsUpOnce: the grant lacks a resource its sign-in
// asked for (an API resource deleted and re-created in Console), so Logto
// answers invalid_target. An API request gets 401 naming the resource; a
// navigation is sent through sign-in once, and a new sign-in gets the
// resource. If Logto keeps refusing it (the sign-in never completes), the
// next navigation gets 403: one trip per session and window, not one per
// navigation.
func TestInvalidTargetStepsUpOnce(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
	b := hx.signedIn()
	idp.dropGrantedResources()

	api := hx.serve(http.MethodGet, "/data", b.clone(), fetchAPI())
	api.mustHandlerError(t, http.StatusUnauthorized)
	if wa := api.rec.Header().Get("WWW-Authenticate"); !strings.Contains(wa, `resource="https://api.example.com"`) {
		t.Errorf("401 WWW-Authenticate %q does not name the resource", wa)
	}

	stuck := b.clone()
	auth := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/data?page=3", stuck, navigation()))
	mustInclude(t, "the second sign-in's resources", authResources(auth), []string{"https://api.example.com"})
	again := hx.serve(http.MethodGet, "/data?page=3", stuck, navigation())
	again.mustHandlerError(t, http.StatusForbidden)
	hx.serve(http.MethodGet, "/data", stuck, fetchAPI()).mustHandlerError(t, http.StatusForbidden)

	// The resource exists again: the second sign-in gets it.
	cb := hx.serve(http.MethodGet, hx.callbackURL(auth, idp.issueCode(auth, "user-1")), stuck, navigation())
	if loc := cb.rec.Header().Get("Location"); loc != "/data?page=3" {
		t.Fatalf("after the second sign-in the browser goes to %q, want /data?page=3", loc)
	}
	res := hx.serve(http.MethodGet, "/data?page=3", stuck, navigation())
	mustPass(t, res, "user-1")
	if res.ph["http.auth.logto.access_token"] == "" {
		t.Error("no access token after the second sign-in")
	}
}

// TestScopeRuleThatNoBrowserUserCanMeetIsRejected: with "bearer organization"
// first and neither token_resource nor organization, a mixed block has no
// access token to read a browser user's permissions from, so "require scope"
// would answer every signed-in browser user 403 forever (and ask each one
// for scopes at sign-in for nothing). Provision must refuse that config and
// say what to add.
func TestScopeRuleThatNoBrowserUserCanMeetIsRejected(t *testing.T) {
	idp := newFakeIdP(t)
	scope := []Rule{{Kind: "scope", Values: []string{"read:data"}}}
	h := &Handler{Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret,
		Bearer: []string{organizationIndicator}, Require: scope}
	err := h.Provision(testCaddyContext(t))
	if err == nil {
		t.Fatal("provisioned a block whose scope rule no browser user can meet")
	}
	for _, want := range []string{"require scope", "token_resource", "organization", "bearer_only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// The configs that can work still provision.
	for name, h := range map[string]*Handler{
		"bearer_only":      {Endpoint: idp.srv.URL, Bearer: []string{organizationIndicator}, BearerOnly: true, Require: scope},
		"organization":     {Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, Bearer: []string{organizationIndicator}, Organization: "org1", Require: scope},
		"token_resource":   {Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, Bearer: []string{organizationIndicator}, TokenResource: bearerAPI, Require: scope},
		"API bearer first": {Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, Bearer: []string{bearerAPI, organizationIndicator}, Require: scope},
	} {
		if err := h.Provision(testCaddyContext(t)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
