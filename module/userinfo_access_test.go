package logto

import (
	"net/http"
	"testing"
	"time"
)

// rolesOnlyInUserinfo is a tenant without extended ID token claims: user-1's
// roles (admin) come only from userinfo.
func rolesOnlyInUserinfo(t *testing.T) *fakeIdP {
	idp := newFakeIdP(t)
	idp.mu.Lock()
	idp.infoOnly["user-1"] = []string{"roles", "organizations", "organization_roles"}
	idp.mu.Unlock()
	return idp
}

var adminRule = []Rule{{Kind: "role", Values: []string{"admin"}}}

// TestUserinfoWithoutRefreshTokenOnEveryInstance: a session without a
// refresh token (prompt none) cannot get an access token for userinfo
// anywhere but from its code exchange. Kept only in the memory of the
// instance that signed the user in, it made every other instance (or the
// same one after a restart) send the user to sign in again, which in a
// round-robin cluster loops. The cookie carries it for such sessions, so
// every instance reads userinfo.
func TestUserinfoWithoutRefreshTokenOnEveryInstance(t *testing.T) {
	idp := rolesOnlyInUserinfo(t)
	secret := randomString(32)
	configure := func(h *Handler) {
		h.CookieSecrets, h.Prompt, h.Require = []string{secret}, "none", adminRule
	}
	a := newHarness(t, idp, configure)
	br := a.signedIn()
	mustPass(t, a.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")

	other := newHarness(t, idp, configure)
	other.h.client = freshClient(t, other.h)
	mustPass(t, other.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")
	mustPass(t, other.serve(http.MethodGet, "/", br.clone(), navigation()), "user-1")

	// On the instance that signed in, once its access token has expired
	// and the cached claims are gone.
	a.clock.Advance(2 * time.Hour)
	for _, ls := range a.h.client.live.m {
		ls.info = nil
	}
	a.serve(http.MethodGet, "/", br.clone(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
}

// TestUserinfoAfterAdoptedRotation: another instance rotated the session's
// refresh token (for a route's API token); this instance adopts that state
// from storage, which brings no access token. A rule reading userinfo used to
// answer 502 once before the next request recovered; it must redeem once more
// and pass.
func TestUserinfoAfterAdoptedRotation(t *testing.T) {
	idp := rolesOnlyInUserinfo(t)
	idp.rotate = true
	secret := randomString(32)
	a := newHarness(t, idp, func(h *Handler) {
		h.CookieSecrets, h.Require, h.TokenResource = []string{secret}, adminRule, bearerAPI
	})
	b := newHarness(t, idp, func(h *Handler) { h.CookieSecrets, h.Require = []string{secret}, adminRule })
	b.h.client = freshClient(t, b.h)

	br := a.signedIn()
	old := br.clone()
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1") // rotated for the API token
	mustPass(t, b.serve(http.MethodGet, "/", old, fetchAPI()), "user-1")
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Fatalf("Logto refused (a rotated token presented again): %v", r)
	}
}
