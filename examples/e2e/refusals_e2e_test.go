package e2e

// Logto's refusals, in the log in Logto's own words (error and
// error_description), since a 401 or 403 alone does not say whether the
// configuration, the tenant or the user is at fault.

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// logLine waits for Caddy to log a line for which match holds: the log
// arrives through a pipe, a moment after the answer.
func logLine(c *caddyInstance, match func(map[string]any) bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, l := range logLines(c.p.out.String()) {
			if match(l) {
				return true
			}
		}
	}
	return false
}

// TestLogtoRefusalIsLogged: Logto refuses a sign-in that names an API
// resource it does not know (deleted in Console, or a typo in
// token_resource) with invalid_target, before any sign-in page. Since every
// sign-in of the application asks for every block's resources, the whole
// application is affected, so the log line must say why, in Logto's words.
func TestLogtoRefusalIsLogged(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	port, site, a := localSite(t, idp)
	c := runCaddy(t, "unknown resource", port, caddyGlobals(t.TempDir(), "")+`{$SITE_ADDRESS} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
	}
	logto /reports/* {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		token_resource https://deleted.example.test
	}
	respond "ok"
}
`, caddyVars(idp, a, "SITE_ADDRESS", site))
	v := newVisitor(t)
	first := v.navigate(site + "/")
	back := v.loginAtIdP(resolve(first.Request.URL, first.location()), site+"/logto/sign-in-callback", "alice", "alice")
	expectStatus(t, "the refused sign-in", v.navigate(back), http.StatusUnauthorized)
	if !logLine(c, func(l map[string]any) bool {
		return l["error"] == "invalid_target" && l["error_description"] != nil && l["error_description"] != ""
	}) {
		t.Errorf("no log line carries Logto's invalid_target and its description:\n%s", tail(c.p.out.String(), 3000))
	}
}

// TestDeletedResourceRefusalIsLogged: the second story on a
// session that did ask for the resource at sign-in: the API resource is
// deleted in Console and Logto refuses the refresh grant for it with
// invalid_target. A new sign-in might get it (were it re-created), so the
// navigation is sent through sign-in once; Logto refuses that too, and
// from then on the user gets 403, not a trip to Logto per page. The log
// lines carry Logto's error and error_description.
func TestDeletedResourceRefusalIsLogged(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := startTestIdP(t, nil) // deleting a resource must not touch other tests
	port, site, a := localSite(t, idp)
	up := newRecordingUpstream(t)
	c := runCaddy(t, "deleted resource", port, caddyGlobals(t.TempDir(), "")+`{$SITE_ADDRESS} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		token_resource https://api.example.com
	}
	reverse_proxy {$APP_UPSTREAM} {
		header_up Authorization "Bearer {http.auth.logto.access_token}"
	}
}
`, caddyVars(idp, a, "SITE_ADDRESS", site, "APP_UPSTREAM", up.addr()))
	v := newVisitor(t)
	signInAs(t, v, site, idp.base, "/", "alice")
	idp.admin(t, http.MethodPost, "/__dev/resources/delete?indicator=https://api.example.com", nil, nil)
	first := v.navigate(site + "/")
	if !first.isRedirect() || !strings.HasPrefix(first.location(), idp.base+"/oidc/auth") {
		t.Fatalf("alice after the API resource was deleted: %s Location=%q, want one more sign-in", first.Status, first.location())
	}
	back := v.loginAtIdP(resolve(first.Request.URL, first.location()), site+"/logto/sign-in-callback", "alice", "alice")
	expectStatus(t, "the sign-in Logto refused", v.navigate(back), http.StatusUnauthorized)
	res := v.navigate(site + "/")
	expectStatus(t, "alice on her next navigation", res, http.StatusForbidden)
	if res.isRedirect() {
		t.Error("sent to sign in a second time")
	}
	if !logLine(c, func(l map[string]any) bool {
		return l["error"] == "invalid_target" && l["error_description"] == "resource indicator is missing, or unknown" &&
			l["resource"] == "https://api.example.com"
	}) {
		t.Errorf("no log line carries Logto's invalid_target for the resource:\n%s", tail(c.p.out.String(), 3000))
	}
}
