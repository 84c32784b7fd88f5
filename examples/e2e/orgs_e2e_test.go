package e2e

// Logto organizations: examples/b2b (the subdomain is the organization,
// /admin needs the organization role admin), organization ids injected from
// the request, and the session cookie of a user in 50 organizations.

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestB2BExample runs examples/b2b on http://*.app.localhost:<port>, where
// the third label from the right is the organization id. A member reaches
// the app and the upstream gets their organization token (aud
// urn:logto:organization:<id>); only an organization admin reaches /admin;
// a non-member gets 403, and Caddy never asks Logto for a token of an
// organization the user is not in, whether the id comes from the host or
// from a request header (the injected-organization attack).
func TestB2BExample(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp, tokens := recordedIdP(t, nil)
	acme, globex, foreign := idp.orgID(t, "acme"), idp.orgID(t, "globex"), idp.orgID(t, "org-01")
	up := newRecordingUpstream(t)
	port := freePort(t)
	host := func(org string) string { return fmt.Sprintf("http://%s.app.localhost:%d", org, port) }
	// A second site on the same port takes the organization from a header
	// (as an API gateway might), to try injecting one.
	headerSite := fmt.Sprintf("http://localhost:%d", port)
	// A third site maps friendly subdomains to organization ids, as the
	// example's README suggests (acme.slug.localhost).
	slugHost := func(slug string) string { return fmt.Sprintf("http://%s.slug.localhost:%d", slug, port) }
	var redirects []string
	for _, s := range []string{host(acme), host(globex), host(foreign), headerSite, slugHost("acme"), slugHost("initech")} {
		redirects = append(redirects, s+"/logto/sign-in-callback")
	}
	a := registerApp(t, idp, logtoApp{}, redirects, nil, "")
	caddyfile := caddyGlobals(t.TempDir(), "") + exampleCaddyfile(t, "b2b") + `
{$HEADER_SITE} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		organization {http.request.header.X-Org}
	}
	reverse_proxy {$APP_UPSTREAM} {
		header_up Authorization "Bearer {http.auth.logto.access_token}"
	}
}
{$SLUG_SITE} {
	map {labels.2} {org_id} {
		acme   {$ACME_ID}
		default ""
	}
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		organization {org_id}
	}
	reverse_proxy {$APP_UPSTREAM} {
		header_up Authorization "Bearer {http.auth.logto.access_token}"
	}
}
`
	runCaddy(t, "b2b", port, caddyfile, caddyVars(idp, a,
		"SITE_ADDRESS", fmt.Sprintf("http://*.app.localhost:%d", port),
		"HEADER_SITE", headerSite,
		"SLUG_SITE", fmt.Sprintf("http://*.slug.localhost:%d", port),
		"ACME_ID", acme,
		"APP_UPSTREAM", up.addr()))

	orgAud := func(org string) []string { return []string{"urn:logto:organization:" + org} }
	expectOrgToken := func(who string, v *visitor, url, org string) {
		t.Helper()
		r := v.fetch(url)
		if r.StatusCode != http.StatusOK {
			t.Errorf("%s GET %s: %s, want 200\n%s", who, url, r.Status, tail(r.body, 300))
			return
		}
		e := decodeEcho(t, r)
		if aud := audienceOf(jwtPayload(t, e.bearer())); !slices.Equal(aud, orgAud(org)) {
			t.Errorf("%s GET %s: upstream token aud %v, want %v", who, url, aud, orgAud(org))
		}
		if got := e.Header.Get("X-Organization-Id"); got != org {
			t.Errorf("%s GET %s: X-Organization-Id %q, want %q", who, url, got, org)
		}
	}
	expectStatus := func(who string, v *visitor, url string, want int) {
		t.Helper()
		if r := v.fetch(url); r.StatusCode != want {
			t.Errorf("%s GET %s: %s, want %d\n%s", who, url, r.Status, want, tail(r.body, 300))
		}
	}

	t.Run("alice admin of acme", func(t *testing.T) {
		v := loopbackVisitor(t)
		r := v.navigate(host(acme) + "/")
		if !r.isRedirect() || !strings.Contains(r.location(), "urn%3Alogto%3Ascope%3Aorganization_roles") ||
			!strings.Contains(r.location(), "resource=urn%3Alogto%3Aresource%3Aorganizations") {
			t.Errorf("sign-in from / does not ask for organization roles and the organizations resource: %s", r.location())
		}
		signInAs(t, v, host(acme), idp.base, "/", "alice")
		expectOrgToken("alice", v, host(acme)+"/", acme)
		expectOrgToken("alice", v, host(acme)+"/admin", acme)
		expectOrgToken("alice", v, host(acme)+"/admin/users", acme)
		if r := v.navigate(host(acme) + "/admin"); r.StatusCode != http.StatusOK {
			t.Errorf("alice navigating to acme /admin: %s Location=%q, want 200", r.Status, r.location())
		}
	})
	t.Run("alice member of globex", func(t *testing.T) {
		v := loopbackVisitor(t)
		signInAs(t, v, host(globex), idp.base, "/", "alice")
		expectOrgToken("alice", v, host(globex)+"/", globex)
		expectStatus("alice (globex member)", v, host(globex)+"/admin", http.StatusForbidden)
	})
	t.Run("bob member of acme", func(t *testing.T) {
		v := loopbackVisitor(t)
		signInAs(t, v, host(acme), idp.base, "/", "bob")
		expectOrgToken("bob", v, host(acme)+"/", acme)
		expectStatus("bob (acme member)", v, host(acme)+"/admin", http.StatusForbidden)
		if r := v.navigate(host(acme) + "/admin"); r.StatusCode != http.StatusForbidden {
			t.Errorf("bob navigating to acme /admin: %s Location=%q, want 403 (no redirect loop)", r.Status, r.location())
		}
	})
	t.Run("carol no member", func(t *testing.T) {
		v := loopbackVisitor(t)
		before := tokens.matching("organization_id", acme)
		signInAs(t, v, host(acme), idp.base, "/", "carol")
		expectStatus("carol (no organizations)", v, host(acme)+"/", http.StatusForbidden)
		expectStatus("carol (no organizations)", v, host(acme)+"/admin", http.StatusForbidden)
		if n := tokens.matching("organization_id", acme) - before; n != 0 {
			t.Errorf("Caddy asked the IdP %d times for an acme token while carol (not a member) was denied", n)
		}
	})
	t.Run("alice in an organization she is not in", func(t *testing.T) {
		v := loopbackVisitor(t)
		signInAs(t, v, host(foreign), idp.base, "/", "alice")
		expectStatus("alice (not in org-01)", v, host(foreign)+"/", http.StatusForbidden)
		expectStatus("alice (not in org-01)", v, host(foreign)+"/admin", http.StatusForbidden)
	})
	t.Run("organization injected by header", func(t *testing.T) {
		v := loopbackVisitor(t)
		signInAs(t, v, headerSite, idp.base, "/", "alice")
		for _, c := range []struct {
			org  string
			want int
		}{
			{acme, http.StatusOK},
			{globex, http.StatusOK},
			{foreign, http.StatusForbidden},
			{"", http.StatusForbidden},
			{acme + "/../" + foreign, http.StatusForbidden},
			{acme + "," + foreign, http.StatusForbidden},
		} {
			r := v.fetch(headerSite+"/", "X-Org", c.org)
			if r.StatusCode != c.want {
				t.Errorf("alice with X-Org %q: %s, want %d", c.org, r.Status, c.want)
				continue
			}
			if c.want == http.StatusOK {
				if aud := audienceOf(jwtPayload(t, decodeEcho(t, r).bearer())); !slices.Equal(aud, orgAud(c.org)) {
					t.Errorf("alice with X-Org %q: token aud %v", c.org, aud)
				}
			}
		}
	})

	t.Run("friendly subdomains through map", func(t *testing.T) {
		v := loopbackVisitor(t)
		signInAs(t, v, slugHost("acme"), idp.base, "/", "alice")
		r := v.fetch(slugHost("acme") + "/")
		if aud := audienceOf(jwtPayload(t, decodeEcho(t, r).bearer())); !slices.Equal(aud, orgAud(acme)) {
			t.Errorf("alice at acme.slug.localhost: token aud %v, want %v", aud, orgAud(acme))
		}
		// An unmapped name is no organization.
		w := loopbackVisitor(t)
		signInAs(t, w, slugHost("initech"), idp.base, "/", "alice")
		expectStatus("alice at an unmapped subdomain", w, slugHost("initech")+"/", http.StatusForbidden)
	})

	// Whatever was tried, no token for an organization alice is not in was
	// ever requested from the IdP: membership is checked first.
	if tokens.mentions(foreign) {
		t.Errorf("Caddy sent the IdP a token request naming org-01 (%s), an organization the user is not in", foreign)
	}
	st := idp.tokenStats(t)
	if st.OrganizationTokenGrants == 0 || st.InvalidGrants != 0 {
		t.Errorf("IdP stats: %d organization token grants, %d invalid_grant; want some and none", st.OrganizationTokenGrants, st.InvalidGrants)
	}
	for _, c := range tokens.all() {
		if c.status != http.StatusOK {
			t.Errorf("a token request failed with %d: grant_type=%s organization_id=%s resource=%s",
				c.status, c.form.Get("grant_type"), c.form.Get("organization_id"), c.form.Get("resource"))
		}
	}
}

// TestCookieSizeManyOrganizations measures the session cookie of a user in
// two organizations and of one in 50 (with organizations and organization
// roles in the ID token): no Set-Cookie line may exceed what browsers keep
// (4096 bytes), and the big session must work (split across cookies, not
// dropped by the browser and looped back to sign-in, logto-io/logto #6597).
func TestCookieSizeManyOrganizations(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	port, siteURL, a := localSite(t, idp)
	runCaddy(t, "cookies", port, caddyGlobals(t.TempDir(), "")+`
(common) {
	endpoint {env.LOGTO_ENDPOINT}
	app_id {env.LOGTO_APP_ID}
	app_secret {env.LOGTO_APP_SECRET}
	scopes email urn:logto:scope:organizations urn:logto:scope:organization_roles
}
{$SITE_ADDRESS} {
	handle /org/* {
		logto {
			import common
			organization {http.request.header.X-Org}
		}
		respond "org={http.auth.logto.organization_id} token={http.auth.logto.access_token}"
	}
	handle {
		logto {
			import common
		}
		respond "orgs={http.auth.user.organizations}"
	}
}
`, caddyVars(idp, a, "SITE_ADDRESS", siteURL))

	for _, c := range []struct {
		user string
		orgs int
	}{{"alice", 2}, {"many", 50}} {
		v := newVisitor(t)
		cb := signInAs(t, v, siteURL, idp.base, "/", c.user)
		lines := sessionSetCookies(cb)
		total := 0
		for _, l := range lines {
			name, rest, _ := strings.Cut(l, "=")
			value, _, _ := strings.Cut(rest, ";")
			total += len(name) + 1 + len(value)
		}
		t.Logf("%s (%d organizations): session cookie %d bytes in %d cookie(s); longest Set-Cookie line %d bytes",
			c.user, c.orgs, total, len(lines), longestSetCookie(cb))
		for _, l := range cb.Header.Values("Set-Cookie") {
			if len(l) > 4096 {
				name, _, _ := strings.Cut(l, "=")
				t.Errorf("%s: Set-Cookie %s is %d bytes, over the 4096 browsers keep", c.user, name, len(l))
			}
		}
		r := v.navigate(siteURL + "/")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("%s after sign-in: %s Location=%q, want 200 (the session must survive its size)", c.user, r.Status, r.location())
		}
		orgs, _ := strings.CutPrefix(r.body, "orgs=")
		if n := len(strings.Split(orgs, ",")); n != c.orgs {
			t.Errorf("%s: {http.auth.user.organizations} lists %d organizations, want %d", c.user, n, c.orgs)
		}
		if c.user == "many" {
			if len(lines) < 2 {
				t.Logf("note: many's session fits in one cookie")
			}
			// An organization token for the 37th organization, through the
			// chunked session.
			org := idp.orgID(t, "org-37")
			r := v.fetch(siteURL+"/org/x", "X-Org", org)
			if r.StatusCode != http.StatusOK || !strings.HasPrefix(r.body, "org="+org+" token=ey") {
				t.Errorf("many, organization token for org-37: %s %q", r.Status, tail(r.body, 120))
			}
		}
	}
}

// TestTwoBlocksMatchOneRequest is the shape of the README's B2B recipe
// reduced to a global role: a block for the whole site and a stricter one
// for /admin, both matching /admin. A user who meets both blocks' rules must
// get through; one who fails the stricter one gets 403.
func TestTwoBlocksMatchOneRequest(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	port, siteURL, a := localSite(t, idp)
	runCaddy(t, "two-blocks", port, caddyGlobals(t.TempDir(), "")+`
(common) {
	endpoint {env.LOGTO_ENDPOINT}
	app_id {env.LOGTO_APP_ID}
	app_secret {env.LOGTO_APP_SECRET}
	scopes roles
}
{$SITE_ADDRESS} {
	logto {
		import common
	}
	logto /admin* {
		import common
		require role admin
	}
	respond "user={http.auth.user.id}"
}
`, caddyVars(idp, a, "SITE_ADDRESS", siteURL))

	alice := newVisitor(t)
	signInAs(t, alice, siteURL, idp.base, "/", "alice")
	if r := alice.fetch(siteURL + "/"); r.StatusCode != http.StatusOK {
		t.Errorf("alice /: %s, want 200", r.Status)
	}
	if r := alice.fetch(siteURL + "/admin"); r.StatusCode != http.StatusOK || r.body != "user="+idp.userID(t, "alice") {
		t.Errorf("alice (admin) /admin: %s %q, want 200 with her id", r.Status, r.body)
	}
	if r := alice.navigate(siteURL + "/admin"); r.StatusCode != http.StatusOK {
		t.Errorf("alice (admin) navigating to /admin: %s Location=%q, want 200, not a sign-in loop", r.Status, tail(r.location(), 80))
	}
	bob := newVisitor(t)
	signInAs(t, bob, siteURL, idp.base, "/", "bob")
	if r := bob.fetch(siteURL + "/admin"); r.StatusCode != http.StatusForbidden {
		t.Errorf("bob (viewer) /admin: %s, want 403", r.Status)
	}
}
