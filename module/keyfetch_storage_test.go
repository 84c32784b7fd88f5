package logto

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"
)

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
