package logto

import (
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

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
