package e2e

// API-resource tokens for upstreams, require rules on their permissions,
// refresh under a burst at expiry, and the userinfo fallback: a real Caddy
// with the module (examples/api and test Caddyfiles), the dev IdP and an
// upstream that echoes what it received.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// audienceOf returns a token's aud as a list (a string or an array of them).
func audienceOf(claims map[string]any) []string {
	switch a := claims["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func scopesOf(claims map[string]any) []string {
	s, _ := claims["scope"].(string)
	return strings.Fields(s)
}

// startAPIExample runs examples/api/Caddyfile against idp with an echo
// upstream.
func startAPIExample(t *testing.T, idp *devIdP) (siteURL string, up *recordingUpstream) {
	t.Helper()
	up = newRecordingUpstream(t)
	port, siteURL, a := localSite(t, idp)
	runCaddy(t, "api", port, caddyGlobals(t.TempDir(), "")+exampleCaddyfile(t, "api"),
		caddyVars(idp, a, "SITE_ADDRESS", siteURL, "API_UPSTREAM", up.addr()))
	return siteURL, up
}

// TestAPIExample runs examples/api: the upstream receives a Logto access
// token for the API resource (aud https://api.example.com, the user's
// permissions in scope, sub the user), the token is reused rather than
// fetched per request, require scope read:docs lets a viewer in and keeps a
// user without permissions out, and anonymous requests get 401 (fetch) or go
// to the IdP (navigation) without ever reaching the API.
func TestAPIExample(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := startTestIdP(t, nil)
	siteURL, up := startAPIExample(t, idp)

	anon := newVisitor(t)
	r := anon.fetch(siteURL + "/docs")
	if r.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Logto") || r.location() != "" {
		t.Errorf("anonymous fetch: %s WWW-Authenticate=%q Location=%q, want 401 with a Logto challenge and no redirect",
			r.Status, r.Header.Get("WWW-Authenticate"), r.location())
	}
	r = anon.navigate(siteURL + "/docs")
	if r.StatusCode != http.StatusFound || !strings.HasPrefix(r.location(), idp.base+"/oidc/auth?") {
		t.Fatalf("anonymous navigation: %s Location=%q, want 302 to the IdP", r.Status, r.location())
	}
	// The rule's permission and the route's resource are asked for at
	// sign-in, or Logto would leave them out of the token.
	q, _ := url.ParseQuery(strings.SplitN(r.location(), "?", 2)[1])
	if !slices.Contains(q["resource"], apiResource) || !slices.Contains(strings.Fields(q.Get("scope")), "read:docs") {
		t.Errorf("authorization request resource=%q scope=%q, want resource %s and scope read:docs", q["resource"], q.Get("scope"), apiResource)
	}
	if n := up.count(); n != 0 {
		t.Errorf("the upstream saw %d anonymous requests, want 0", n)
	}

	aliceID := idp.userID(t, "alice")
	alice := newVisitor(t)
	signInAs(t, alice, siteURL, idp.base, "/docs", "alice")
	before := idp.tokenStats(t)
	// A client-supplied Authorization header must not reach the API.
	e := decodeEcho(t, alice.fetch(siteURL+"/docs/1", "Authorization", "Bearer forged-by-the-client"))
	tok := e.bearer()
	if tok == "forged-by-the-client" || strings.Count(tok, ".") != 2 {
		t.Fatalf("upstream got Authorization %q, want the module's JWT", e.Header.Get("Authorization"))
	}
	claims := jwtPayload(t, tok)
	if aud := audienceOf(claims); !slices.Equal(aud, []string{apiResource}) {
		t.Errorf("token aud = %v, want [%s]", aud, apiResource)
	}
	if sc := scopesOf(claims); !slices.Contains(sc, "read:docs") {
		t.Errorf("token scope = %v, want read:docs in it", sc)
	}
	if claims["sub"] != aliceID {
		t.Errorf("token sub = %v, want alice's id %s", claims["sub"], aliceID)
	}
	if claims["iss"] != idp.base+"/oidc" {
		t.Errorf("token iss = %v, want %s/oidc", claims["iss"], idp.base)
	}
	if own := moduleCookiesIn(e.Header.Get("Cookie")); len(own) > 0 {
		t.Errorf("the upstream received the module's cookies: %v", own)
	}
	first := idp.tokenStats(t)
	if d := first.RefreshTokenGrantsByResource[apiResource] - before.RefreshTokenGrantsByResource[apiResource]; d != 1 {
		t.Errorf("first request: %d refresh grants for %s, want 1", d, apiResource)
	}

	e2 := decodeEcho(t, alice.fetch(siteURL+"/docs/2"))
	if e2.bearer() != tok {
		t.Errorf("second request got another token; want the cached one reused")
	}
	if after := idp.tokenStats(t); after.RefreshTokenGrants != first.RefreshTokenGrants {
		t.Errorf("second request: IdP saw %d new refresh grants, want 0 (token reused)", after.RefreshTokenGrants-first.RefreshTokenGrants)
	}

	// bob is a viewer: read:docs, nothing more.
	bob := newVisitor(t)
	signInAs(t, bob, siteURL, idp.base, "/docs", "bob")
	eb := decodeEcho(t, bob.fetch(siteURL+"/docs"))
	bc := jwtPayload(t, eb.bearer())
	if sc := scopesOf(bc); !slices.Contains(sc, "read:docs") || slices.Contains(sc, "write:docs") {
		t.Errorf("bob's token scope = %v, want read:docs without write:docs", sc)
	}
	if bc["sub"] != idp.userID(t, "bob") {
		t.Errorf("bob's token sub = %v", bc["sub"])
	}

	// carol has no roles: her token has no permissions, so the rule fails.
	carol := newVisitor(t)
	signInAs(t, carol, siteURL, idp.base, "/docs", "carol")
	n := up.count()
	if r := carol.fetch(siteURL + "/docs"); r.StatusCode != http.StatusForbidden {
		t.Errorf("carol GET /docs: %s, want 403", r.Status)
	}
	if r := carol.navigate(siteURL + "/docs"); r.StatusCode != http.StatusForbidden {
		t.Errorf("carol navigating to /docs: %s Location=%q, want 403 (no redirect loop)", r.Status, r.location())
	}
	if up.count() != n {
		t.Errorf("a denied request reached the upstream")
	}
}

// TestTokenForEachResource proves a route only ever forwards a token for its
// own resource: with routes for two API resources, each upstream gets a
// token whose aud is its resource, a token for one resource sent by the
// client to the other route is replaced, and permission rules are checked
// against the route's own token (write:docs, read:invoices).
func TestTokenForEachResource(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	up := newRecordingUpstream(t)
	port, siteURL, a := localSite(t, idp)
	const billing = "https://billing.example.com"
	caddyfile := caddyGlobals(t.TempDir(), "") + `
(common) {
	endpoint {env.LOGTO_ENDPOINT}
	app_id {env.LOGTO_APP_ID}
	app_secret {env.LOGTO_APP_SECRET}
	resources https://api.example.com https://billing.example.com
	scopes read:docs write:docs read:invoices
}
{$SITE_ADDRESS} {
	handle /docs/* {
		logto {
			import common
			token_resource https://api.example.com
			require scope read:docs
		}
		reverse_proxy {$API_UPSTREAM} {
			header_up Authorization "Bearer {http.auth.logto.access_token}"
		}
	}
	handle /write/* {
		logto {
			import common
			token_resource https://api.example.com
			require scope write:docs
		}
		reverse_proxy {$API_UPSTREAM} {
			header_up Authorization "Bearer {http.auth.logto.access_token}"
		}
	}
	handle /billing/* {
		logto {
			import common
			token_resource https://billing.example.com
			require scope read:invoices
		}
		reverse_proxy {$API_UPSTREAM} {
			header_up Authorization "Bearer {http.auth.logto.access_token}"
		}
	}
	handle {
		logto {
			import common
		}
		respond "home"
	}
}
`
	runCaddy(t, "resources", port, caddyfile, caddyVars(idp, a, "SITE_ADDRESS", siteURL, "API_UPSTREAM", up.addr()))

	alice := newVisitor(t)
	signInAs(t, alice, siteURL, idp.base, "/", "alice")
	docs := decodeEcho(t, alice.fetch(siteURL+"/docs/1"))
	docsTok := docs.bearer()
	if aud := audienceOf(jwtPayload(t, docsTok)); !slices.Equal(aud, []string{apiResource}) {
		t.Errorf("/docs token aud = %v, want [%s]", aud, apiResource)
	}
	// The API token, presented by the client to the billing route, is
	// replaced by the billing token.
	bill := decodeEcho(t, alice.fetch(siteURL+"/billing/1", "Authorization", "Bearer "+docsTok))
	bc := jwtPayload(t, bill.bearer())
	if aud := audienceOf(bc); !slices.Equal(aud, []string{billing}) {
		t.Errorf("/billing token aud = %v, want [%s] (a token for another resource must never be forwarded)", aud, billing)
	}
	if sc := scopesOf(bc); !slices.Equal(sc, []string{"read:invoices"}) {
		t.Errorf("/billing token scope = %v, want [read:invoices]", sc)
	}
	if w := decodeEcho(t, alice.fetch(siteURL+"/write/1")); !slices.Contains(scopesOf(jwtPayload(t, w.bearer())), "write:docs") {
		t.Errorf("alice's /write token lacks write:docs")
	}

	bob := newVisitor(t)
	signInAs(t, bob, siteURL, idp.base, "/", "bob")
	if r := bob.fetch(siteURL + "/docs/1"); r.StatusCode != http.StatusOK {
		t.Errorf("bob /docs: %s, want 200 (viewer has read:docs)", r.Status)
	}
	if r := bob.fetch(siteURL + "/write/1"); r.StatusCode != http.StatusForbidden {
		t.Errorf("bob /write: %s, want 403 (viewer lacks write:docs)", r.Status)
	}
	if r := bob.fetch(siteURL + "/billing/1"); r.StatusCode != http.StatusForbidden {
		t.Errorf("bob /billing: %s, want 403 (viewer lacks read:invoices)", r.Status)
	}

	carol := newVisitor(t)
	signInAs(t, carol, siteURL, idp.base, "/", "carol")
	for _, p := range []string{"/write/1", "/docs/1"} {
		if r := carol.fetch(siteURL + p); r.StatusCode != http.StatusForbidden {
			t.Errorf("carol %s: %s, want 403 (no roles, no permissions)", p, r.Status)
		}
	}
}

// burstResult is one request of the burst.
type burstResult struct {
	status     int
	token      string
	setCookies []string
	err        error
}

// TestRefreshBurstAtExpiry is the attack on Logto's refresh-token rotation
// (logto-io/js #503, #1073): 50 requests of one session arrive together just
// after its ID token and its API token expired, with the IdP rotating the
// refresh token on every use and revoking the whole grant when a used one
// is presented again. Every request must succeed, the refresh token must be
// redeemed exactly once per token needed, and the session must live on with
// the new cookie and with the pre-rotation one.
func TestRefreshBurstAtExpiry(t *testing.T) {
	t.Parallel()
	requireStack(t)
	const ttl = 4
	idp := startTestIdP(t, map[string]string{
		"DEVIDP_ID_TOKEN_TTL":     fmt.Sprint(ttl),
		"DEVIDP_ACCESS_TOKEN_TTL": fmt.Sprint(ttl),
		"DEVIDP_ROTATE":           "always",
	})
	siteURL, _ := startAPIExample(t, idp)

	v := newVisitor(t)
	signInAs(t, v, siteURL, idp.base, "/docs", "alice")
	signedIn := time.Now()
	// The route's API token is fetched once while fresh, so that at the
	// burst both the ID token and the cached API token have expired.
	decodeEcho(t, v.fetch(siteURL+"/docs"))
	preRotation := sessionCookieHeader(t, v)
	s0 := idp.tokenStats(t)

	time.Sleep(time.Until(signedIn.Add(ttl*time.Second + 1500*time.Millisecond)))

	const n = 50
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}}
	results := make([]burstResult, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, siteURL+"/docs", nil)
			req.Header.Set("Cookie", preRotation)
			req.Header.Set("Accept", "application/json")
			<-start
			resp, err := hc.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			results[i].status = resp.StatusCode
			results[i].setCookies = resp.Header.Values("Set-Cookie")
			if resp.StatusCode == http.StatusOK {
				var e echoed
				if err := json.Unmarshal(body, &e); err == nil {
					results[i].token = e.bearer()
				}
			}
		}()
	}
	burstAt := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(burstAt)
	s1 := idp.tokenStats(t)

	failures, tokens, newCookie := 0, map[string]bool{}, ""
	for i, r := range results {
		if r.err != nil || r.status != http.StatusOK {
			failures++
			t.Errorf("request %d: status %d err %v", i, r.status, r.err)
			continue
		}
		tokens[r.token] = true
		for _, line := range r.setCookies {
			if name, value, _ := strings.Cut(strings.SplitN(line, ";", 2)[0], "="); name == sessionCookie && value != "" {
				newCookie = name + "=" + value // the last one wins, as in a browser
			}
		}
	}
	refreshes := s1.RefreshTokenGrants - s0.RefreshTokenGrants
	apiRefreshes := s1.RefreshTokenGrantsByResource[apiResource] - s0.RefreshTokenGrantsByResource[apiResource]
	invalid := s1.InvalidGrants - s0.InvalidGrants
	t.Logf("burst: %d requests in %v, %d failures; IdP refresh_token grants %d (session/ID token %d, %s %d), invalid_grant %d; distinct API tokens forwarded %d",
		n, took.Round(time.Millisecond), failures, refreshes, refreshes-apiRefreshes, apiResource, apiRefreshes, invalid, len(tokens))
	// Two tokens had expired: the ID token (the session's refresh, no
	// resource) and the route's API token (resource=https://api.example.com).
	// Each must be redeemed exactly once, whatever the number of requests.
	if refreshes != 2 || apiRefreshes != 1 {
		t.Errorf("IdP saw %d refresh grants (%d for %s), want exactly 2: one for the session, one for the API token", refreshes, apiRefreshes, apiResource)
	}
	if invalid != 0 {
		t.Errorf("IdP answered %d invalid_grant: a refresh token was redeemed twice", invalid)
	}
	if len(tokens) != 1 {
		t.Errorf("the upstream got %d distinct API tokens, want 1 shared token", len(tokens))
	}
	if newCookie == "" {
		t.Fatalf("no response of the burst carried the refreshed session cookie")
	}

	// The session lives on with the cookie the burst set, and with the
	// pre-rotation cookie (another tab, a request that crossed the burst).
	for _, c := range []struct{ name, cookie string }{{"new cookie", newCookie}, {"pre-rotation cookie", preRotation}} {
		if r := requestWithCookie(t, http.MethodGet, siteURL+"/docs", c.cookie); r.StatusCode != http.StatusOK {
			t.Errorf("after the burst, %s: %s, want 200", c.name, r.Status)
		}
	}
	// Once more after everything expired again: the pre-rotation cookie still
	// holds a refresh token Logto has rotated twice since; it must be
	// mapped to the newest one, not redeemed (which would revoke the grant).
	time.Sleep(ttl*time.Second + 1500*time.Millisecond)
	s2 := idp.tokenStats(t)
	if r := requestWithCookie(t, http.MethodGet, siteURL+"/docs", preRotation); r.StatusCode != http.StatusOK {
		t.Errorf("next expiry, pre-rotation cookie: %s, want 200", r.Status)
	}
	if r := requestWithCookie(t, http.MethodGet, siteURL+"/docs", newCookie); r.StatusCode != http.StatusOK {
		t.Errorf("next expiry, the burst's cookie: %s, want 200", r.Status)
	}
	s3 := idp.tokenStats(t)
	if s3.InvalidGrants != s0.InvalidGrants {
		t.Errorf("IdP answered %d invalid_grant after the burst", s3.InvalidGrants-s0.InvalidGrants)
	}
	if d := s3.RefreshTokenGrants - s2.RefreshTokenGrants; d != 2 {
		t.Errorf("second expiry: %d refresh grants, want 2 (session and API token, once each)", d)
	}
}

// TestUserinfoFallbackForRoles is a tenant that keeps extended claims out of
// ID tokens: require role reads the roles from userinfo (/oidc/me), once per
// session rather than per request; alice (admin) passes, bob (viewer) gets
// 403.
func TestUserinfoFallbackForRoles(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := startTestIdP(t, map[string]string{"DEVIDP_ID_TOKEN_EXTENDED_CLAIMS": "0"})
	port, siteURL, a := localSite(t, idp)
	runCaddy(t, "userinfo", port, caddyGlobals(t.TempDir(), "")+`{$SITE_ADDRESS} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		require role admin
	}
	respond "user={http.auth.user.id} id_token_roles=[{http.auth.user.roles}]"
}
`, caddyVars(idp, a, "SITE_ADDRESS", siteURL))

	alice := newVisitor(t)
	signInAs(t, alice, siteURL, idp.base, "/", "alice")
	s0 := idp.tokenStats(t)
	for i := range 3 {
		r := alice.fetch(siteURL + "/")
		if r.StatusCode != http.StatusOK {
			t.Fatalf("alice request %d: %s, want 200 (admin, read from userinfo)\n%s", i, r.Status, tail(r.body, 300))
		}
		// The ID token has no roles: the rule could only pass through
		// userinfo.
		if !strings.Contains(r.body, "id_token_roles=[]") {
			t.Errorf("the ID token carries roles (%q); DEVIDP_ID_TOKEN_EXTENDED_CLAIMS=0 should keep them out", r.body)
		}
	}
	s1 := idp.tokenStats(t)
	if d := s1.UserinfoRequests - s0.UserinfoRequests; d != 1 {
		t.Errorf("3 requests made %d userinfo requests, want 1 (cached for the session)", d)
	}

	bob := newVisitor(t)
	signInAs(t, bob, siteURL, idp.base, "/", "bob")
	if r := bob.fetch(siteURL + "/"); r.StatusCode != http.StatusForbidden {
		t.Errorf("bob: %s, want 403 (viewer)", r.Status)
	}
	if r := bob.fetch(siteURL + "/"); r.StatusCode != http.StatusForbidden {
		t.Errorf("bob again: %s, want 403", r.Status)
	}
	if d := idp.tokenStats(t).UserinfoRequests - s1.UserinfoRequests; d != 1 {
		t.Errorf("bob's 2 requests made %d userinfo requests, want 1", d)
	}
}
