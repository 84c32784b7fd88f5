package logto

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"
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

// lockProbeStorage is Caddy's storage that notes, on each write of the
// saved keys, whether a key fetch was still holding its lock.
type lockProbeStorage struct {
	certmagic.Storage
	keys                   *keySet
	stores, underFetchLock atomic.Int32
}

func (s *lockProbeStorage) Store(ctx context.Context, key string, value []byte) error {
	if strings.Contains(key, "jwks") {
		s.stores.Add(1)
		if s.keys.fetching.TryLock() {
			s.keys.fetching.Unlock()
		} else {
			s.underFetchLock.Add(1)
		}
	}
	return s.Storage.Store(ctx, key, value)
}

// TestKeysSavedOutsideTheFetchLock stops a storage outage from stalling key
// rotation: the fetched keys used to be written to storage (up to 5 s when
// Redis is down) while the fetch still held its lock, so every other request
// that met the new key queued behind that write.
func TestKeysSavedOutsideTheFetchLock(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.signedIn() // keys fetched
	c := hx.h.client
	probe := &lockProbeStorage{Storage: c.revoked.storageBackend(), keys: c.idp.keys}
	old := c.revoked.store.Load()
	c.revoked.store.Store(&revStore{storage: probe, base: old.base, prefix: old.prefix})

	hx.idp.rotateKey(false)
	hx.signedIn() // an ID token under the new key: fetched again, and saved
	if probe.stores.Load() == 0 {
		t.Fatal("the rotated keys were not saved")
	}
	if n := probe.underFetchLock.Load(); n != 0 {
		t.Errorf("%d key saves ran while holding the fetch lock", n)
	}
}
