package logto

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

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
