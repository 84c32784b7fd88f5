package e2e

// Sessions that never asked Logto for what a route needs: signed in before
// the configuration grew a rule or a token_resource. Logto (and the dev
// IdP) grant nothing later that the sign-in did not ask for, so without a
// second sign-in such a user would stay at 403 until they signed out.

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// stepUpConfigs are one application's Caddyfile in three versions, as its
// owner edits it: a site-wide block; then /admin needs a role and /data a
// token for the API with write:docs; then /extra needs the phone scope.
func stepUpConfigs(version int) string {
	c := `(app) {
	endpoint {env.LOGTO_ENDPOINT}
	app_id {env.LOGTO_APP_ID}
	app_secret {env.LOGTO_APP_SECRET}
	scopes email
}

{$SITE_ADDRESS} {
	logto {
		import app
	}
`
	if version >= 2 {
		c += `	logto /admin/* {
		import app
		require role admin
	}
	logto /data/* {
		import app
		token_resource https://api.example.com
		require scope write:docs
	}
`
	}
	if version >= 3 {
		c += `	logto /extra/* {
		import app
		scopes phone
	}
`
	}
	return c + `	reverse_proxy {$APP_UPSTREAM} {
		header_up Authorization "Bearer {http.auth.logto.access_token}"
	}
}
`
}

// TestStepUpAfterConfigChange: a user signed in under the first
// configuration. Under the second, an API request to /data gets 401
// naming the scope and resource its session never asked for (not a 403
// from Logto's invalid_target); a navigation is sent through sign-in once
// more with everything the application needs, comes straight back to the
// same page (the user is still signed in at Logto) and gets in, and so
// does /admin, whose role was asked for in the same sign-in. Under the
// third, which changed again while that sign-in was at Logto, the fresh
// session still lacks phone: 403 and a log line naming it, not a loop.
func TestStepUpAfterConfigChange(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	port, site, a := localSite(t, idp)
	up := newRecordingUpstream(t)
	storage := t.TempDir()
	run := func(version int) *caddyInstance {
		return runCaddy(t, fmt.Sprintf("config %d", version), port, caddyGlobals(storage, "")+stepUpConfigs(version),
			caddyVars(idp, a, "SITE_ADDRESS", site, "APP_UPSTREAM", up.addr()))
	}

	c := run(1)
	v := newVisitor(t)
	signInAs(t, v, site, idp.base, "/", "alice")
	expectStatus(t, "alice under the first config", v.fetch(site+"/data/x"), http.StatusOK)
	c.p.stop()

	c = run(2)
	res := v.fetch(site + "/data/x")
	expectStatus(t, "an API request whose session never asked for the resource", res, http.StatusUnauthorized)
	wa := res.Header.Get("WWW-Authenticate")
	if !strings.Contains(wa, `error="insufficient_scope"`) || !strings.Contains(wa, `scope="write:docs"`) ||
		!strings.Contains(wa, `resource="https://api.example.com"`) {
		t.Errorf("WWW-Authenticate %q does not name write:docs and https://api.example.com", wa)
	}

	q := authQuery(t, v, site+"/data/x?page=2", idp.base)
	scopes := strings.Fields(q.Get("scope"))
	for _, want := range []string{"email", "roles", "write:docs"} {
		if !slices.Contains(scopes, want) {
			t.Errorf("the second sign-in asks for scope %v, without %s", scopes, want)
		}
	}
	if !slices.Contains(q["resource"], "https://api.example.com") {
		t.Errorf("the second sign-in asks for resources %v, without https://api.example.com", q["resource"])
	}
	// Follow it as the browser would: the IdP knows alice and sends her
	// straight back.
	back := v.navigate(site + "/data/x?page=2")
	callback := v.loginAtIdP(resolve(back.Request.URL, back.location()), site+"/logto/sign-in-callback", "alice", "alice")
	cb := v.navigate(callback)
	if cb.location() != "/data/x?page=2" {
		t.Fatalf("after the second sign-in the browser goes to %q (%s), want back to /data/x?page=2", cb.location(), cb.Status)
	}
	expectAPIToken(t, "alice after the second sign-in", v.fetch(site+"/data/x?page=2"), "write:docs")
	expectStatus(t, "alice on /admin", v.navigate(site+"/admin/"), http.StatusOK)

	c.p.stop()

	// bob signed in under the first configuration too; his second sign-in
	// starts under the second, and the third is running by the time he is
	// back from Logto.
	c = run(1)
	bob := newVisitor(t)
	signInAs(t, bob, site, idp.base, "/", "bob")
	c.p.stop()
	c = run(2)
	first := bob.navigate(site + "/admin/")
	if !first.isRedirect() || !strings.HasPrefix(first.location(), idp.base+"/oidc/auth") {
		t.Fatalf("bob on /admin under the second config: %s Location=%q, want a second sign-in", first.Status, first.location())
	}
	c.p.stop()
	c = run(3)
	cbURL := bob.loginAtIdP(resolve(first.Request.URL, first.location()), site+"/logto/sign-in-callback", "bob", "bob")
	expectStatus(t, "bob's second sign-in", bob.navigate(cbURL), http.StatusFound)
	res = bob.navigate(site + "/extra/")
	expectStatus(t, "bob on /extra right after his second sign-in", res, http.StatusForbidden)
	if res.isRedirect() {
		t.Errorf("bob was sent to sign in a third time")
	}
	named := false
	for deadline := time.Now().Add(5 * time.Second); !named && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, l := range logLines(c.p.out.String()) {
			if strings.Contains(fmt.Sprint(l["msg"]), "still lacks what the route needs") && fmt.Sprint(l["missing_scopes"]) == "[phone]" {
				named = true
			}
		}
	}
	if !named {
		t.Errorf("no log line names the missing phone scope:\n%s", tail(c.p.out.String(), 3000))
	}
	// bob is a viewer: the role /admin needs was asked for, and refused.
	expectStatus(t, "bob (viewer) on /admin", bob.navigate(site+"/admin/"), http.StatusForbidden)
}

// stepUpPage answers with where the browser is and the user's roles, which
// the ID token carries only when the sign-in asked for the roles scope.
const stepUpPage = `	header Content-Type "text/html; charset=utf-8"
	respond "<!doctype html><title>step up</title><h1 id=state>Private page</h1><p id=path>{http.request.uri}</p><p id=name>{http.auth.user.roles}</p>"
}
`

// TestBrowserStepUpComesBack: in Chromium, a user signed in before /admin
// gained a role rule opens /admin/panel?x=1, passes through Logto without
// seeing its page (still signed in there) and lands on /admin/panel?x=1,
// now with the roles claim the first sign-in never asked for.
func TestBrowserStepUpComesBack(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := newSite(t, env.idp)
	block := func(matcher, extra string) string {
		return "\tlogto " + matcher + "{\n\t\tendpoint {env.LOGTO_ENDPOINT}\n\t\tapp_id {env.LOGTO_APP_ID}\n\t\tapp_secret {env.LOGTO_APP_SECRET}\n" + extra + "\t}\n"
	}
	s.start("{$SITE_ADDRESS} {\n"+block("", "")+stepUpPage, "", nil)
	b := newBrowser(t)
	ctx := b.ctx
	b.navigate(ctx, s.URL+"/")
	b.signIn(ctx, "alice", "alice")
	p := b.waitPage(ctx, "the home page", func(p page) bool { return p.State == "Private page" })
	if p.Name != "" {
		t.Fatalf("roles %q without the roles scope: the IdP is not strict", p.Name)
	}

	s.start("{$SITE_ADDRESS} {\n"+block("", "")+block("/admin/* ", "\t\trequire role admin\n")+stepUpPage, "", nil)
	b.navigate(ctx, s.URL+"/admin/panel?x=1")
	p = b.waitPage(ctx, "/admin after the second sign-in", func(p page) bool { return p.State == "Private page" || p.LoginForm })
	if p.LoginForm {
		t.Fatalf("the second sign-in showed the IdP's login page to a user signed in there: %s", p.URL)
	}
	if p.URL != s.URL+"/admin/panel?x=1" || p.Name != "admin" {
		t.Errorf("landed on %q with roles %q, want %s/admin/panel?x=1 with admin", p.URL, p.Name, s.URL)
	}
	if docs := b.errorDocuments(); len(docs) > 0 {
		t.Errorf("error pages on the way: %v", docs)
	}
}
