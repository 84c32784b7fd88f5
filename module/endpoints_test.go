package logto

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
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
	waitFor(t, "the logout list to load", func() bool { return !other.h.client.revoked.set.empty() })
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

// logoutListKeys lists the logout list's entries in Caddy's storage.
func logoutListKeys(t *testing.T, hx *harness) []string {
	t.Helper()
	rv := hx.h.client.revoked
	st := rv.storageBackend()
	if st == nil {
		t.Fatal("no storage attached")
	}
	keys, err := st.List(context.Background(), rv.storagePrefix()+"/revoked", false)
	if err != nil && !isNotExist(err) {
		t.Fatal(err)
	}
	return keys
}

func logoutListLen(hx *harness) int {
	return hx.h.client.revoked.set.len()
}

// TestSignOutReplayCostsNothing stops one cookie from being turned into
// unbounded work: the same signed-out cookie sent to /logto/sign-out 100
// times used to leave 100 entries in Caddy's storage (each kept for the
// session's lifetime, each loaded into every instance's memory) and make
// 100 revocation calls to Logto. Signing out a session that is already
// signed out, expired or revoked only clears cookies.
func TestSignOutReplayCostsNothing(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	copied := b.clone()
	baseKeys, baseLen := len(logoutListKeys(t, hx)), logoutListLen(hx)
	hx.serve(http.MethodGet, "/logto/sign-out", b)
	if n := hx.idp.revocationHits.Load(); n != 1 {
		t.Fatalf("first sign-out made %d revocation calls, want 1", n)
	}
	keys, size := len(logoutListKeys(t, hx)), logoutListLen(hx)
	if keys != baseKeys+1 || size != baseLen+1 {
		t.Fatalf("first sign-out: %d storage entries, %d in memory; want one more of each", keys, size)
	}
	for range 100 {
		res := hx.serve(http.MethodGet, "/logto/sign-out", copied.clone())
		if res.err != nil || res.rec.Code != http.StatusFound {
			t.Fatalf("replayed sign-out: err=%v code=%d", res.err, res.rec.Code)
		}
		mustClearSession(t, res)
	}
	if n := hx.idp.revocationHits.Load(); n != 1 {
		t.Errorf("100 replayed sign-outs made %d revocation calls in all, want 1", n)
	}
	if k, s := len(logoutListKeys(t, hx)), logoutListLen(hx); k != keys || s != size {
		t.Errorf("100 replayed sign-outs grew the logout list to %d storage entries and %d in memory (from %d and %d)", k, s, keys, size)
	}
}

// countingStorage is Caddy's storage counting the reads a request makes:
// every Exists, and every Load outside the logout list (the list's poller,
// which runs on its own schedule, loads only there, and lists and stats).
type countingStorage struct {
	certmagic.Storage
	reads atomic.Int64
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if !strings.Contains(key, "/revoked/") {
		s.reads.Add(1)
	}
	return s.Storage.Load(ctx, key)
}

func (s *countingStorage) Exists(ctx context.Context, key string) bool {
	s.reads.Add(1)
	return s.Storage.Exists(ctx, key)
}

// TestSignOutReplayReadsNoStorage stops one signed-out cookie from being
// turned into storage traffic: sent to /logto/sign-out 100 times, it made
// 100 storage reads (the rotation hand-off was looked up, under the
// session's lock, before the session was found to have ended), which on a
// shared Redis or Consul is load anyone holding an old cookie can add. The
// logout list and the session's end are checked first; a session that has
// ended costs no read and no lock.
func TestSignOutReplayReadsNoStorage(t *testing.T) {
	hx := newHarness(t, nil, nil)
	rv := hx.h.client.revoked
	st := &countingStorage{Storage: rv.storageBackend()}
	old := rv.store.Load()
	rv.store.Store(&revStore{storage: st, base: old.base, prefix: old.prefix})
	b := hx.signedIn()
	copied := b.clone()
	id := hx.h.readSession(mustRequest(b), &hx.h.cookie.secure).s.ID
	hx.serve(http.MethodGet, "/logto/sign-out", b)
	before := st.reads.Load()
	for range 100 {
		res := hx.serve(http.MethodGet, "/logto/sign-out", copied.clone())
		if res.err != nil || res.rec.Code != http.StatusFound {
			t.Fatalf("replayed sign-out: err=%v code=%d", res.err, res.rec.Code)
		}
		mustClearSession(t, res)
	}
	if n := st.reads.Load() - before; n != 0 {
		t.Errorf("100 replayed sign-outs made %d storage reads, want 0", n)
	}
	live := hx.h.client.live
	live.mu.RLock()
	_, kept := live.m[id]
	live.mu.RUnlock()
	if kept {
		t.Error("replayed sign-outs left the ended session's live state (and lock) behind")
	}
}

// TestSignOutOfEndedSessionCostsNothing: a session that already ended
// (expired, or ended by Logto's back-channel logout) is not revoked or
// listed again when its cookie is sent to sign-out; the cookie is cleared.
func TestSignOutOfEndedSessionCostsNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T) (*harness, *tbrowser) // a harness and a browser whose session ended
	}{
		{"expired", func(t *testing.T) (*harness, *tbrowser) {
			hx := newHarness(t, nil, func(h *Handler) { h.SessionLifetime = caddy.Duration(time.Hour) })
			b := hx.signedIn()
			hx.clock.Advance(2 * time.Hour)
			return hx, b
		}},
		{"revoked by back-channel logout", func(t *testing.T) (*harness, *tbrowser) {
			hx := newHarness(t, nil, nil)
			b := hx.signedIn()
			mustAccept(t, hx.postLogout(hx.idp.logoutToken("user-1", nil)))
			return hx, b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hx, b := tc.end(t)
			keys, size := len(logoutListKeys(t, hx)), logoutListLen(hx)
			res := hx.serve(http.MethodGet, "/logto/sign-out", b)
			mustClearSession(t, res)
			if n := hx.idp.revocationHits.Load(); n != 0 {
				t.Errorf("sign-out of a session that ended made %d revocation calls", n)
			}
			if k, s := len(logoutListKeys(t, hx)), logoutListLen(hx); k != keys || s != size {
				t.Errorf("sign-out of a session that ended grew the logout list (%d→%d stored, %d→%d in memory)", keys, k, size, s)
			}
		})
	}
}

// TestLogoutListGrowthDoesNotStallRefresh: adding to the logout list
// rebuilds its snapshot, which takes long for a big list; it did so under
// the lock that every refresh also took (to find Caddy's storage), so a
// burst of sign-outs stalled every session's refresh. While the list is
// being rebuilt, a refresh must go ahead.
func TestLogoutListGrowthDoesNotStallRefresh(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	hx.clock.Advance(61 * time.Minute) // the ID token expired: refresh
	rv := hx.h.client.revoked
	rv.mu.Lock() // the list is being rebuilt
	done := make(chan *result, 1)
	go func() { done <- hx.serve(http.MethodGet, "/", b, fetchAPI()) }()
	select {
	case res := <-done:
		rv.mu.Unlock()
		mustPass(t, res, "user-1")
		if !res.newSession(t) {
			t.Error("the session was not refreshed")
		}
	case <-time.After(20 * time.Second):
		rv.mu.Unlock()
		<-done
		t.Fatal("a refresh waited for the logout list to be rebuilt")
	}
}

// TestSignOutKeepsIDTokenOutOfLogs stops the ID token (a bearer credential
// for anything that accepts it as id_token_hint, and full of personal data)
// from landing in Caddy's access log, which records response headers: the
// sign-out redirect names the application with client_id, which is enough
// for Logto to return to post_logout_redirect_uri, and carries no
// id_token_hint.
func TestSignOutKeepsIDTokenOutOfLogs(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	sess := hx.h.readSession(mustRequest(b), &hx.h.cookie.secure)
	res := hx.serve(http.MethodGet, "/logto/sign-out", b)
	loc := res.rec.Header().Get("Location")
	if strings.Contains(loc, sess.s.IDToken) || strings.Contains(loc, "id_token_hint") {
		t.Fatalf("sign-out Location carries the ID token: %.120s...", loc)
	}
	q := res.location().Query()
	if q.Get("client_id") != hx.idp.appID || q.Get("post_logout_redirect_uri") != testSite+"/" {
		t.Errorf("end-session parameters %v, want client_id and post_logout_redirect_uri", q)
	}
	for k, vs := range res.rec.Header() {
		for _, v := range vs {
			if strings.Contains(v, sess.s.IDToken) {
				t.Errorf("response header %s carries the ID token", k)
			}
		}
	}
}

// TestSignOutRevokesTokenRotatedElsewhere: in a cluster, another instance
// rotated the session's refresh token and handed the new state over through
// storage; the browser then signs out on an instance that only knows the
// pre-rotation cookie. Revoking that dead token would leave the live grant
// standing at Logto (with the real Logto, revoking a consumed token need not
// touch its successor): a stolen copy of the rotated cookie would keep
// refreshing after the user signed out. Sign-out must revoke the newest
// token, the one handed over.
func TestSignOutRevokesTokenRotatedElsewhere(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, _ := twoInstances(t, idp)
	br := a.signedIn()
	sess := a.h.readSession(mustRequest(br), &a.h.cookie.secure)
	if sess == nil {
		t.Fatal("cannot read the session back")
	}

	a.clock.Advance(time.Hour)
	mustPass(t, b.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 1, " (made by the second instance)")
	cur := b.h.client.live.get(sess.s.ID, b.h.client.now().Unix()).cur.Load()
	if cur == nil || cur.s.Refresh == sess.s.Refresh {
		t.Fatal("the second instance did not rotate the refresh token")
	}

	// The first instance never saw the rotation; the browser still holds
	// the pre-rotation cookie there.
	res := a.serve(http.MethodGet, "/logto/sign-out", br)
	if res.err != nil || res.rec.Code != http.StatusFound {
		t.Fatalf("sign-out: err=%v code=%d", res.err, res.rec.Code)
	}
	revs := idp.revocations()
	if len(revs) != 1 {
		t.Fatalf("%d revocations, want 1", len(revs))
	}
	switch revs[0].Get("token") {
	case cur.s.Refresh:
	case sess.s.Refresh:
		t.Fatal("sign-out revoked the refresh token already rotated away, not the live one")
	default:
		t.Fatal("sign-out revoked a token that is neither the old nor the rotated refresh token")
	}
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Errorf("Logto refused: %v", r)
	}
}

// TestSignOutEndsSessionPastTheBlocksOwnLimits stops a signed-out cookie
// from living on in a more lenient block: the block serving
// /logto/sign-out has idle_timeout 10m, another block of the same
// application has none. A user idle for 20 minutes who signs out used to
// have the session taken for "already ended" (by the sign-out block's own
// idle_timeout), so nothing was revoked or put on the logout list, and a
// copy of the cookie still passed the other block. Only a session that has
// ended for the whole application is skipped.
func TestSignOutEndsSessionPastTheBlocksOwnLimits(t *testing.T) {
	idp := newFakeIdP(t)
	strict := newHarness(t, idp, func(h *Handler) { h.IdleTimeout = caddy.Duration(10 * time.Minute) })
	lenient := newHarness(t, idp, nil)
	b := newBrowser()
	signInAt(t, lenient, b)
	copied := b.clone()

	idp.clock.Advance(20 * time.Minute)
	res := strict.serve(http.MethodGet, "/logto/sign-out", b)
	mustClearSession(t, res)
	if n := idp.revocationHits.Load(); n != 1 {
		t.Errorf("sign-out made %d revocation calls, want 1 (the refresh token)", n)
	}
	lenient.mustBeSignedOut(t, copied)
}
