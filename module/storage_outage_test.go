package logto

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// flakyStorage is Caddy's storage with an outage switch: down fails every
// read and write (a Redis restart), storeDown only writes.
type flakyStorage struct {
	certmagic.Storage
	down, storeDown atomic.Bool
}

var errTestOutage = errors.New("storage unreachable (test outage)")

func (f *flakyStorage) Store(ctx context.Context, key string, value []byte) error {
	if f.down.Load() || f.storeDown.Load() {
		return errTestOutage
	}
	return f.Storage.Store(ctx, key, value)
}

func (f *flakyStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if f.down.Load() {
		return nil, errTestOutage
	}
	return f.Storage.Load(ctx, key)
}

func (f *flakyStorage) Exists(ctx context.Context, key string) bool {
	return !f.down.Load() && f.Storage.Exists(ctx, key)
}

func (f *flakyStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	if f.down.Load() {
		return nil, errTestOutage
	}
	return f.Storage.List(ctx, path, recursive)
}

func (f *flakyStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if f.down.Load() {
		return certmagic.KeyInfo{}, errTestOutage
	}
	return f.Storage.Stat(ctx, key)
}

// twoInstances is a cluster of two handlers sharing one flaky storage.
func twoInstances(t *testing.T, idp *fakeIdP) (a, b *harness, st *flakyStorage) {
	t.Helper()
	secret := randomString(24)
	a = newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b = newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b.h.client = freshClient(t, b.h)
	st = &flakyStorage{Storage: a.h.client.revoked.storageBackend()}
	for _, c := range []*client{a.h.client, b.h.client} {
		old := c.revoked.store.Load()
		c.revoked.store.Store(&revStore{storage: st, base: old.base, prefix: old.prefix})
	}
	return a, b, st
}

// TestStorageOutageDoesNotBurnRefreshTokens: while storage is down, an
// instance cannot know whether another one already rotated the session's
// refresh token. Presenting it anyway is the attack on Logto's rotation
// the handoff exists to stop: one instance rotates (its handoff write
// fails), the other presents the dead token, and Logto revokes the
// user's whole grant. So nobody refreshes until storage answers; sessions
// go on with their claims meanwhile.
func TestStorageOutageDoesNotBurnRefreshTokens(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, st := twoInstances(t, idp)
	br := a.signedIn()
	old := br.clone()

	st.down.Store(true)
	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	if n := idp.refreshGrants.Load(); n != 0 {
		t.Errorf("%d refresh grants while storage was down, want 0", n)
	}

	st.down.Store(false)
	a.clock.Advance(refreshRetry + time.Second)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 1, " after the outage (the other instance adopts it)")
}

// TestStorageOutageRotationHandedOverLater: the rotation's handoff write
// fails; it must be retried until it lands, or the other instance later
// presents the dead token and Logto revokes the grant.
func TestStorageOutageRotationHandedOverLater(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, st := twoInstances(t, idp)
	br := a.signedIn()
	old := br.clone()

	st.storeDown.Store(true)
	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	st.storeDown.Store(false)
	a.h.client.revoked.load() // the next poll

	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 1, " (the other instance adopts the rotation)")
}

// TestStorageOutageLogoutReachesOthersLater: a back-channel logout that
// arrives while storage is down ends the session on the instance Logto
// called at once, and on the others once storage is back, rather than
// never (the user would stay signed in on every other instance).
func TestStorageOutageLogoutReachesOthersLater(t *testing.T) {
	idp := newFakeIdP(t)
	a, b, st := twoInstances(t, idp)
	br := a.signedIn()
	mustPass(t, b.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")

	st.down.Store(true)
	mustAccept(t, a.postLogout(idp.logoutToken("user-1", nil)))
	a.mustBeSignedOut(t, br)
	a.h.client.revoked.load()
	b.h.client.revoked.load()
	mustPass(t, b.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1") // b cannot know yet

	st.down.Store(false)
	a.h.client.revoked.load() // a's next poll writes what failed
	b.h.client.revoked.load()
	b.mustBeSignedOut(t, br)
}

// TestRotationHandoffFollowsChain: a cookie that missed two rotations made
// by another instance (a tab left open) is mapped to the newest state. The
// state after the first rotation carries a token rotated away since:
// redeeming it would make Logto revoke the grant.
func TestRotationHandoffFollowsChain(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, _ := twoInstances(t, idp)
	br := a.signedIn()
	old := br.clone()
	for range 2 {
		a.clock.Advance(time.Hour)
		mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	}
	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 2, " (both made by the first instance)")
}

// TestStorageOutageRouteTokenWaits: a route whose API token must be
// renewed while storage is down answers 502 rather than present a refresh
// token another instance may have rotated; once storage is back it works.
func TestStorageOutageRouteTokenWaits(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	secret := randomString(24)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret}; h.TokenResource = testAPI })
	st := &flakyStorage{Storage: a.h.client.revoked.storageBackend()}
	old := a.h.client.revoked.store.Load()
	a.h.client.revoked.store.Store(&revStore{storage: st, base: old.base, prefix: old.prefix})
	br := a.signedIn()
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	grants := idp.refreshGrants.Load()

	st.down.Store(true)
	a.clock.Advance(2 * time.Hour)
	a.serve(http.MethodGet, "/", br, fetchAPI()).mustHandlerError(t, http.StatusBadGateway)
	if n := idp.refreshGrants.Load(); n != grants {
		t.Errorf("%d refresh grants while storage was down, want 0", n-grants)
	}

	st.down.Store(false)
	a.clock.Advance(refreshRetry + time.Second)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Fatalf("Logto refused: %v", r)
	}
}
