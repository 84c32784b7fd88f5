package logto

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSignOut: sign-out clears every module cookie, revokes the refresh
// token with client authentication, and sends the browser to Logto's
// end-session endpoint with what Logto needs to send it back.
func TestSignOut(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	b.set(attemptPrefix+"AAAAAAAAAAAA", "pending")
	copied := b.clone()
	sess := hx.h.readSession(mustRequest(b), &hx.h.cookie.secure)
	if sess == nil {
		t.Fatal("cannot read the session back")
	}

	res := hx.serve(http.MethodGet, "/logto/sign-out", b)
	if res.err != nil || res.rec.Code != http.StatusFound {
		t.Fatalf("sign-out: err=%v code=%d", res.err, res.rec.Code)
	}
	mustClearSession(t, res)
	if c := res.setCookie(t, attemptPrefix+"AAAAAAAAAAAA"); c == nil || c.MaxAge >= 0 {
		t.Errorf("attempt cookie not cleared: %v", res.rec.Header().Values("Set-Cookie"))
	}
	if n := len(b.order); n != 0 {
		t.Errorf("cookies left in the browser: %v", b.order)
	}

	loc := res.location()
	if loc == nil || loc.Scheme+"://"+loc.Host+loc.Path != hx.idp.srv.URL+"/oidc/session/end" {
		t.Fatalf("sign-out Location %q, want the end-session endpoint", res.rec.Header().Get("Location"))
	}
	q := loc.Query()
	if q.Get("client_id") != hx.idp.appID || q.Get("post_logout_redirect_uri") != testSite+"/" || q.Has("id_token_hint") {
		t.Errorf("end-session parameters %v", q)
	}

	revs := hx.idp.revocations()
	if len(revs) != 1 || revs[0].Get("token") != sess.s.Refresh || revs[0].Get("token_type_hint") != "refresh_token" {
		t.Fatalf("revocations %v, want the refresh token", revs)
	}
	if r := hx.idp.tokenRefusals(); len(r) != 0 {
		t.Errorf("Logto refused: %v (client authentication?)", r)
	}

	// The cookie, copied before sign-out, no longer works.
	hx.mustBeSignedOut(t, copied)
	if res := hx.serve(http.MethodGet, "/logto/user", copied.clone()); res.status() != http.StatusUnauthorized {
		t.Errorf("/logto/user with the old cookie: %d", res.status())
	}
}

// TestSignOutSurvivesRestart: the ended session is on the logout list in
// Caddy's storage, so another instance (or this one after a restart, with
// nothing in memory) rejects the copied cookie too.
func TestSignOutSurvivesRestart(t *testing.T) {
	idp := newFakeIdP(t)
	secret := randomString(24)
	hx := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b := hx.signedIn()
	copied := b.clone()
	hx.serve(http.MethodGet, "/logto/sign-out", b)

	// Another instance: same app and keys, but a client of its own.
	other := newHarness(t, idp, func(h *Handler) {
		h.CookieSecrets = []string{secret}
		h.RevocationPoll = 1e8 // 100ms
	})
	other.h.client = freshClient(t, other.h)
	waitFor(t, "the logout list to load", func() bool { return !other.h.client.revoked.set.Load().empty() })
	other.mustBeSignedOut(t, copied)
}

// freshClient provisions a client for h outside the shared pool, as a
// second Caddy instance would have.
func freshClient(t *testing.T, h *Handler) *client {
	t.Helper()
	old := h.client
	c, err := newClient(clientConfig{
		endpoint: old.idp.endpoint, appID: old.idp.appID, appSecret: old.idp.appSecret,
		secrets: secretsOf(t, h),
	}, old.logger)
	if err != nil {
		t.Fatal(err)
	}
	c.now, c.idp.now = old.now, old.idp.now
	c.revoked.attach(testCaddyContext(t), old.idp.appID, 100e6)
	t.Cleanup(func() { c.Destruct() })
	return c
}

func secretsOf(t *testing.T, h *Handler) [][]byte {
	var out [][]byte
	for _, s := range h.CookieSecrets {
		out = append(out, []byte(s))
	}
	if len(out) == 0 {
		t.Fatal("freshClient needs explicit cookie secrets")
	}
	return out
}

// mustRequest builds a request carrying b's cookies.
func mustRequest(b *tbrowser) *http.Request {
	r, _, _ := newRequest(http.MethodGet, "/", nil, b.send)
	return r
}

// TestSignOutWithoutSession: signing out without a session still clears
// cookies and ends Logto's session, without revoking anything.
func TestSignOutWithoutSession(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.PostSignOutRedirect = "https://www.example.com/bye" })
	res := hx.serve(http.MethodGet, "/logto/sign-out", newBrowser())
	mustClearSession(t, res)
	loc := res.location()
	if loc == nil || loc.Query().Get("post_logout_redirect_uri") != "https://www.example.com/bye" || loc.Query().Has("id_token_hint") {
		t.Errorf("sign-out Location %q", res.rec.Header().Get("Location"))
	}
	if n := hx.idp.revocationHits.Load(); n != 0 {
		t.Errorf("%d revocations without a session", n)
	}
}

// TestSignOutWhileLogtoDown: Logto unreachable at sign-out still ends the
// local session and lands the user on the configured page.
func TestSignOutWhileLogtoDown(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	copied := b.clone()
	hx.idp.down.Store(true)
	res := hx.serve(http.MethodGet, "/logto/sign-out", b)
	if res.err != nil || res.rec.Code != http.StatusFound {
		t.Fatalf("sign-out: err=%v code=%d", res.err, res.rec.Code)
	}
	mustClearSession(t, res)
	hx.idp.down.Store(false)
	hx.mustBeSignedOut(t, copied)
}

// TestSignOutByPost: a sign-out form (POST) works like the link.
func TestSignOutByPost(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	res := hx.serve(http.MethodPost, "/logto/sign-out", b)
	if res.err != nil || res.rec.Code != http.StatusFound {
		t.Fatalf("sign-out: err=%v code=%d", res.err, res.rec.Code)
	}
	mustClearSession(t, res)
}

// TestUserEndpoint: /logto/user answers the signed-in user's claims as
// JSON, without the token's own claims, and 401 (never a redirect) to
// anyone else.
func TestUserEndpoint(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, opts := range [][]reqOpt{{fetchAPI()}, {navigation()}} {
		res := hx.serve(http.MethodGet, "/logto/user", newBrowser(), opts...)
		res.mustHandlerError(t, http.StatusUnauthorized)
		if res.rec.Header().Get("Location") != "" {
			t.Error("/logto/user redirected")
		}
	}

	b := hx.signedIn()
	res := hx.serve(http.MethodGet, "/logto/user", b, fetchAPI())
	if res.err != nil || res.rec.Code != http.StatusOK {
		t.Fatalf("/logto/user: err=%v code=%d", res.err, res.rec.Code)
	}
	if ct := res.rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := res.rec.Header().Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control %q", cc)
	}
	var claims map[string]any
	if err := json.Unmarshal(res.rec.Body.Bytes(), &claims); err != nil {
		t.Fatalf("body %q: %v", res.rec.Body.String(), err)
	}
	if claims["sub"] != "user-1" || claims["email"] != "ada@example.com" || claims["name"] != "Ada Lovelace" {
		t.Errorf("claims %v", claims)
	}
	if v, ok := claims["picture"]; !ok || v != nil {
		t.Errorf("picture = %v, %v; want null", v, ok)
	}
	if roles, _ := claims["roles"].([]any); !slices.Equal(roles, []any{"admin", "editor"}) {
		t.Errorf("roles = %v", claims["roles"])
	}
	for _, k := range []string{"iss", "aud", "exp", "iat", "nonce", "at_hash"} {
		if _, ok := claims[k]; ok {
			t.Errorf("protocol claim %s in /logto/user", k)
		}
	}
	body := res.rec.Body.String()
	for _, s := range hx.idp.issued() {
		if strings.Contains(body, s) {
			t.Error("/logto/user shows a token or code")
		}
	}
}

// TestSignOutRevokesNewestRefreshToken: signing out from a tab holding the
// pre-rotation cookie revokes the refresh token Logto considers current,
// not the dead one (which would leave the grant alive at Logto).
func TestSignOutRevokesNewestRefreshToken(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	hx := newHarness(t, idp, nil)
	b := hx.signedIn()
	old := b.clone()
	hx.clock.Advance(time.Hour)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	newest := hx.h.readSession(mustRequest(b), &hx.h.cookie.secure).s.Refresh
	hx.serve(http.MethodGet, "/logto/sign-out", old)
	revs := idp.revocations()
	if len(revs) != 1 || revs[0].Get("token") != newest {
		t.Fatalf("revoked %v, want the newest refresh token", revs)
	}
	hx.mustBeSignedOut(t, b)
}
