package logto

import (
	"net/http"
	"testing"
	"time"
)

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
