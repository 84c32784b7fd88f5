package logto

import (
	"net/http"
	"testing"
)

// TestSavedKeysNotOverwrittenBySiblingClient: two clients of one app_id that
// seal with different keys (two blocks differing only in cookie_secret) used
// to save the tenant's keys under the same storage name, so the second
// overwrote the first's sealed copy; restarted while Logto is down, the first
// could not open it and signed all its users out.
func TestSavedKeysNotOverwrittenBySiblingClient(t *testing.T) {
	idp := newFakeIdP(t)
	secretA, secretB := randomString(32), randomString(32)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secretA} })
	b := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secretB} })
	browserA := a.signedIn() // a's keys saved
	b.signedIn()             // b's keys saved
	idp.down.Store(true)
	restarted := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secretA} })
	restarted.h.client = freshClient(t, restarted.h)
	mustPass(t, restarted.serve(http.MethodGet, "/", browserA, fetchAPI()), "user-1")
}

// TestBearerOnlyClientUsesNoStorage: a bearer_only block has no sessions, so
// no logout list to follow and no use for saved keys; every such block
// without app_id (across tenants) used to share one storage folder and poll
// its logout list for nothing.
func TestBearerOnlyClientUsesNoStorage(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) { h.AppID, h.AppSecret, h.BearerOnly = "", "", true })
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.m2mToken(""))), testM2MID)
	rv := hx.h.client.revoked
	rv.mu.Lock()
	started := rv.started
	rv.mu.Unlock()
	if started || rv.storageBackend() != nil {
		t.Errorf("a bearer_only client follows a logout list (started %v, storage %v)", started, rv.storageBackend() != nil)
	}
}
