package logto

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

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
	s := hx.h.client.revoked.set.Load()
	return len(s.sessions) + len(s.subs) + len(s.sids)
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
