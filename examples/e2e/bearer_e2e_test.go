package e2e

// End-to-end tests of bearer tokens: examples/api-clients run by a real
// Caddy against the dev IdP, called by a machine-to-machine app (client
// credentials), by a single-page-style client holding a user's access token
// (authorization code + PKCE with resource) and by a browser.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// apiResource is the dev IdP's API resource (read:docs write:docs
// delete:docs).
const apiResource = "https://api.example.com"

// machineApp is a machine-to-machine app of the dev IdP.
type machineApp struct {
	ID     string `json:"client_id"`
	Secret string `json:"client_secret"`
	Name   string `json:"name"`
}

func (d *devIdP) machineApps(t testing.TB) (reporter, noRole machineApp) {
	t.Helper()
	var apps []machineApp
	d.admin(t, http.MethodGet, "/__dev/m2m-apps", nil, &apps)
	for _, a := range apps {
		switch {
		case strings.HasPrefix(a.Name, "Reporter"):
			reporter = a
		case strings.HasPrefix(a.Name, "No role"):
			noRole = a
		}
	}
	if reporter.ID == "" || noRole.ID == "" {
		t.Fatalf("devidp has no machine-to-machine apps: %+v", apps)
	}
	return reporter, noRole
}

// tokenRequest posts to the IdP's token endpoint with Basic auth and
// returns the status and the decoded answer.
func (d *devIdP) tokenRequest(t testing.TB, id, secret string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.base+"/oidc/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token endpoint: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("token endpoint answered %s: %s", resp.Status, b)
	}
	return resp.StatusCode, out
}

// m2mToken gets a machine-to-machine token by client credentials.
func (d *devIdP) m2mToken(t testing.TB, app machineApp, form url.Values) string {
	t.Helper()
	form.Set("grant_type", "client_credentials")
	status, out := d.tokenRequest(t, app.ID, app.Secret, form)
	tok, _ := out["access_token"].(string)
	if status != http.StatusOK || tok == "" {
		t.Fatalf("client credentials %v: %d %v", form, status, out)
	}
	return tok
}

// userTokens signs username in as a single-page app does (authorization
// code with PKCE and resource, the code exchanged with the same resource)
// and returns the answer: a JWT access token for the resource, an ID
// token and a refresh token.
func userTokens(t *testing.T, idp *devIdP, app logtoApp, redirect, username, scope string) map[string]any {
	t.Helper()
	verifier := randomHex(32)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{
		"client_id": {app.id}, "redirect_uri": {redirect}, "response_type": {"code"},
		"scope": {"openid offline_access profile " + scope}, "resource": {apiResource},
		"prompt": {"consent"}, "state": {randomHex(8)},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	v := newVisitor(t)
	cb, err := url.Parse(v.loginAtIdP(idp.base+"/oidc/auth?"+q.Encode(), redirect, username, username))
	if err != nil || cb.Query().Get("code") == "" {
		t.Fatalf("no code in the callback %v", cb)
	}
	status, out := idp.tokenRequest(t, app.id, app.secret, url.Values{
		"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {redirect},
		"code_verifier": {verifier}, "resource": {apiResource},
	})
	if status != http.StatusOK {
		t.Fatalf("code exchange: %d %v", status, out)
	}
	return out
}

func bearerReq(t *testing.T, method, u string, hdr ...string) *response {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return newVisitor(t).do(req)
}

// mustChallenge checks an RFC 6750 failure end to end: status, a Bearer
// challenge with the error code (none for ""), no redirect, no cookie.
func mustChallenge(t *testing.T, what string, r *response, status int, code string) {
	t.Helper()
	www := r.Header.Get("WWW-Authenticate")
	switch {
	case r.StatusCode != status:
		t.Errorf("%s: %s, want %d (WWW-Authenticate %q)", what, r.Status, status, www)
	case !strings.HasPrefix(www, `Bearer realm="logto"`):
		t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, www)
	case code == "" && strings.Contains(www, "error="):
		t.Errorf("%s: WWW-Authenticate %q, want no error", what, www)
	case code != "" && !strings.Contains(www, `error="`+code+`"`):
		t.Errorf("%s: WWW-Authenticate %q, want error=%q", what, www, code)
	}
	if r.location() != "" || len(r.Header.Values("Set-Cookie")) > 0 {
		t.Errorf("%s: redirect %q or cookies %q", what, r.location(), r.Header.Values("Set-Cookie"))
	}
}

// TestAPIClientsExample runs examples/api-clients: one API served to a
// machine-to-machine app, a single-page-style client and a browser, with
// the same rule, and every kind of bad token refused as RFC 6750 says.
func TestAPIClientsExample(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := startTestIdP(t, nil)
	up := newRecordingUpstream(t)
	port := freePort(t)
	siteURL := fmt.Sprintf("http://localhost:%d", port)
	redirect := siteURL + "/logto/sign-in-callback"
	app := registerApp(t, idp, logtoApp{}, []string{redirect}, []string{siteURL + "/"}, "")
	runCaddy(t, "api-clients", port, caddyGlobals(t.TempDir(), "")+exampleCaddyfile(t, "api-clients"),
		caddyVars(idp, app, "SITE_ADDRESS", siteURL, "API_UPSTREAM", up.addr()))
	reporter, noRole := idp.machineApps(t)

	// A machine-to-machine app whose role grants read:docs.
	m2m := idp.m2mToken(t, reporter, url.Values{"resource": {apiResource}, "scope": {"read:docs write:docs"}})
	claims := jwtPayload(t, m2m)
	if claims["sub"] != reporter.ID || claims["client_id"] != reporter.ID || claims["scope"] != "read:docs" || claims["aud"] != apiResource {
		t.Errorf("M2M token claims %v: want sub = client_id = %s, scope read:docs, aud %s", claims, reporter.ID, apiResource)
	}
	r := bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+m2m, "X-User-Id", "forged")
	e := decodeEcho(t, r)
	if e.Header.Get("Authorization") != "Bearer "+m2m {
		t.Error("the upstream did not get the client's Authorization header unchanged")
	}
	if e.Header.Get("X-User-Id") != reporter.ID || e.Header.Get("X-Client-Id") != reporter.ID {
		t.Errorf("upstream X-User-Id %q X-Client-Id %q, want the M2M app id", e.Header.Get("X-User-Id"), e.Header.Get("X-Client-Id"))
	}
	if len(r.Header.Values("Set-Cookie")) > 0 {
		t.Errorf("an API client got cookies: %q", r.Header.Values("Set-Cookie"))
	}
	// bearer in lower case is the same scheme (RFC 7235).
	decodeEcho(t, bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "bearer "+m2m))
	mustChallenge(t, "M2M token without write:docs on /admin", bearerReq(t, "POST", siteURL+"/admin/x", "Authorization", "Bearer "+m2m), 403, "insufficient_scope")

	// An app without a role: Logto issues a token with no scope claim.
	none := idp.m2mToken(t, noRole, url.Values{"resource": {apiResource}, "scope": {"read:docs"}})
	if _, has := jwtPayload(t, none)["scope"]; has {
		t.Errorf("a token granting nothing has a scope claim: %v", jwtPayload(t, none))
	}
	r = bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+none)
	mustChallenge(t, "M2M token without permissions", r, 403, "insufficient_scope")
	if !strings.Contains(r.Header.Get("WWW-Authenticate"), `scope="read:docs"`) {
		t.Errorf("403 does not name the missing scope: %q", r.Header.Get("WWW-Authenticate"))
	}

	// A user's token, as a single-page or mobile app holds it.
	alice := userTokens(t, idp, app, redirect, "alice", "read:docs write:docs")
	userTok := alice["access_token"].(string)
	if c := jwtPayload(t, userTok); c["sub"] != idp.userID(t, "alice") || c["client_id"] != app.id || c["aud"] != apiResource {
		t.Errorf("user token claims %v", c)
	}
	e = decodeEcho(t, bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+userTok))
	if e.Header.Get("X-User-Id") != idp.userID(t, "alice") || e.Header.Get("X-Client-Id") != app.id {
		t.Errorf("upstream X-User-Id %q X-Client-Id %q for alice's token", e.Header.Get("X-User-Id"), e.Header.Get("X-Client-Id"))
	}
	decodeEcho(t, bearerReq(t, "DELETE", siteURL+"/admin/docs/1", "Authorization", "Bearer "+userTok))
	carol := userTokens(t, idp, app, redirect, "carol", "read:docs")
	if c := jwtPayload(t, carol["access_token"].(string)); c["scope"] != "" {
		t.Errorf("carol's token scope = %v, want \"\" (present, empty)", c["scope"])
	}
	mustChallenge(t, "user token without permissions", bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+carol["access_token"].(string)), 403, "insufficient_scope")

	// Tokens that are not a current access token for this API.
	billing := idp.m2mToken(t, reporter, url.Values{"resource": {"https://billing.example.com"}})
	orgTok := idp.m2mToken(t, reporter, url.Values{"organization_id": {idp.orgID(t, "acme")}})
	for _, tc := range []struct {
		name   string
		hdr    []string
		path   string
		status int
		code   string
	}{
		{"another resource", []string{"Authorization", "Bearer " + billing}, "/api/docs", 401, "invalid_token"},
		{"an organization token", []string{"Authorization", "Bearer " + orgTok}, "/api/docs", 401, "invalid_token"},
		{"an ID token", []string{"Authorization", "Bearer " + alice["id_token"].(string)}, "/api/docs", 401, "invalid_token"},
		{"a refresh token", []string{"Authorization", "Bearer " + alice["refresh_token"].(string)}, "/api/docs", 401, "invalid_token"},
		{"truncated", []string{"Authorization", "Bearer " + m2m[:len(m2m)-8]}, "/api/docs", 401, "invalid_token"},
		{"alg none", []string{"Authorization", "Bearer " + algNone(m2m)}, "/api/docs", 401, "invalid_token"},
		{"in the query string", nil, "/api/docs?access_token=" + m2m, 400, "invalid_request"},
		{"two Authorization headers", []string{"Authorization", "Bearer " + m2m, "Authorization", "Bearer " + m2m}, "/api/docs", 400, "invalid_request"},
		{"Bearer and no token", []string{"Authorization", "Bearer"}, "/api/docs", 400, "invalid_request"},
		{"Bearer and two parts", []string{"Authorization", "Bearer " + m2m + " more"}, "/api/docs", 400, "invalid_request"},
		{"no credentials on a bearer_only route", nil, "/admin/x", 401, ""},
	} {
		mustChallenge(t, tc.name, bearerReq(t, "GET", siteURL+tc.path, tc.hdr...), tc.status, tc.code)
	}

	// Another tenant's token: its apps may even have the same ids.
	other := startTestIdP(t, nil)
	otherReporter, _ := other.machineApps(t)
	foreign := other.m2mToken(t, otherReporter, url.Values{"resource": {apiResource}, "scope": {"read:docs"}})
	mustChallenge(t, "another issuer", bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+foreign), 401, "invalid_token")

	// Logto rotates its keys: a token signed with the new key is accepted.
	idp.admin(t, http.MethodPost, "/__dev/rotate-keys", nil, nil)
	rotated := idp.m2mToken(t, reporter, url.Values{"resource": {apiResource}, "scope": {"read:docs"}})
	if jwtHeader(t, rotated)["kid"] == jwtHeader(t, m2m)["kid"] {
		t.Fatal("the dev IdP did not rotate its signing key")
	}
	decodeEcho(t, bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+rotated))

	// A browser on the same route: sign-in, then its session is enough.
	before := up.count()
	b := newVisitor(t)
	anon := b.fetch(siteURL + "/api/docs")
	www := strings.Join(anon.Header.Values("WWW-Authenticate"), "\n")
	if anon.StatusCode != 401 || !strings.Contains(www, "Logto realm") || !strings.Contains(www, `Bearer realm="logto"`) {
		t.Errorf("anonymous fetch: %s %q, want 401 with both challenges", anon.Status, www)
	}
	signInAs(t, b, siteURL, idp.base, "/api/docs", "bob")
	e = decodeEcho(t, b.fetch(siteURL+"/api/docs"))
	if e.Header.Get("X-User-Id") != idp.userID(t, "bob") {
		t.Errorf("browser request: upstream X-User-Id %q, want bob", e.Header.Get("X-User-Id"))
	}
	// Sessions mean nothing on the bearer_only route.
	mustChallenge(t, "browser session on /admin", b.fetch(siteURL+"/admin/x"), 401, "")
	if up.count() <= before {
		t.Error("the browser's requests did not reach the upstream")
	}
}

// algNone rewrites a JWT's header to alg none and drops its signature.
func algNone(jwt string) string {
	parts := strings.Split(jwt, ".")
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`))
	return h + "." + parts[1] + "."
}

func jwtHeader(t testing.TB, jwt string) map[string]any {
	t.Helper()
	h, _, _ := strings.Cut(jwt, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	var out map[string]any
	if err != nil || json.Unmarshal(b, &out) != nil {
		t.Fatalf("not a JWT header: %.20q", jwt)
	}
	return out
}

// TestOrganizationScopedTokensOnAGlobalAPI runs examples/api-clients, whose
// blocks name no organization, against tokens Logto scopes to one: asked
// for with resource and organization_id, a token for the API carries an
// organization_id claim and the permissions the caller's roles in that
// organization grant. The Reporter app may only read:docs on the API, but
// its role in acme grants write:docs there; its acme-scoped token used to
// pass /admin's "require scope write:docs" as if that were a global
// permission. It is refused (401 invalid_token), as is a user's
// acme-scoped token from a refresh, while their global tokens still work.
func TestOrganizationScopedTokensOnAGlobalAPI(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := startTestIdP(t, nil)
	up := newRecordingUpstream(t)
	port := freePort(t)
	siteURL := fmt.Sprintf("http://localhost:%d", port)
	redirect := siteURL + "/logto/sign-in-callback"
	app := registerApp(t, idp, logtoApp{}, []string{redirect}, []string{siteURL + "/"}, "")
	runCaddy(t, "api-clients", port, caddyGlobals(t.TempDir(), "")+exampleCaddyfile(t, "api-clients"),
		caddyVars(idp, app, "SITE_ADDRESS", siteURL, "API_UPSTREAM", up.addr()))
	reporter, _ := idp.machineApps(t)
	acme := idp.orgID(t, "acme")
	const unscoped = `error_description="the access token is scoped to an organization`

	global := idp.m2mToken(t, reporter, url.Values{"resource": {apiResource}, "scope": {"read:docs write:docs"}})
	mustChallenge(t, "the app's global token on /admin", bearerReq(t, "POST", siteURL+"/admin/x", "Authorization", "Bearer "+global), 403, "insufficient_scope")
	scoped := idp.m2mToken(t, reporter, url.Values{"resource": {apiResource}, "organization_id": {acme}, "scope": {"read:docs write:docs"}})
	if c := jwtPayload(t, scoped); c["aud"] != apiResource || c["organization_id"] != acme || !strings.Contains(fmt.Sprint(c["scope"]), "write:docs") {
		t.Fatalf("the dev IdP's organization-scoped token has claims %v: want aud %s, organization_id %s, write:docs", c, apiResource, acme)
	}
	for _, path := range []string{"/admin/x", "/api/docs"} {
		r := bearerReq(t, "POST", siteURL+path, "Authorization", "Bearer "+scoped)
		mustChallenge(t, "the app's acme-scoped token on "+path, r, 401, "invalid_token")
		if www := r.Header.Get("WWW-Authenticate"); !strings.Contains(www, unscoped) {
			t.Errorf("%s: WWW-Authenticate %q does not say why", path, www)
		}
	}

	// A user's token from a refresh with resource and organization_id, as
	// an SDK's getAccessToken(resource, organizationId) gets it.
	alice := userTokens(t, idp, app, redirect, "alice", "read:docs write:docs urn:logto:scope:organizations")
	status, out := idp.tokenRequest(t, app.id, app.secret, url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {alice["refresh_token"].(string)},
		"resource": {apiResource}, "organization_id": {acme},
	})
	userScoped, _ := out["access_token"].(string)
	if status != http.StatusOK || jwtPayload(t, userScoped)["organization_id"] != acme {
		t.Fatalf("refresh for an acme-scoped token: %d %v", status, out)
	}
	r := bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+userScoped)
	mustChallenge(t, "alice's acme-scoped token on /api/docs", r, 401, "invalid_token")
	if www := r.Header.Get("WWW-Authenticate"); !strings.Contains(www, unscoped) {
		t.Errorf("WWW-Authenticate %q does not say why", www)
	}
	decodeEcho(t, bearerReq(t, "GET", siteURL+"/api/docs", "Authorization", "Bearer "+alice["access_token"].(string)))
}
