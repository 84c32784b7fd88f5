package logto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// handoffTTL is how long a rotated session state is kept in storage for
// other instances: long enough for every browser tab and instance holding
// the pre-rotation cookie to come back once.
const handoffTTL = 10 * time.Minute

// Rotation handoff. When Logto rotates a session's refresh token, the old
// token is poison: presenting it again (after Logto's 3 s grace) revokes the
// whole grant. Within one instance the live session state takes care of
// that. Across instances that share Caddy's storage, the instance that
// rotated writes the new state, sealed, under a key derived from the old
// token; another instance about to redeem the old token looks there first
// and adopts the new state instead. The cost is one storage read per
// refresh, which happens about once an hour per active session.

func (c *client) handoffKey(refresh string) string {
	sum := sha256.Sum256([]byte("caddy-logto rotation\x00" + refresh))
	return c.revoked.storagePrefix() + "/rotated/" + hex.EncodeToString(sum[:16])
}

// adoptRotated returns the newer state another instance stored for u's
// refresh token, or nil.
func (c *client) adoptRotated(ctx context.Context, u *user) *user {
	st := c.revoked.storageBackend()
	if st == nil || u.s.Refresh == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	b, err := st.Load(ctx, c.handoffKey(u.s.Refresh))
	if err != nil {
		return nil
	}
	plain, err := c.sessions.Open(handoffAAD, string(b))
	if err != nil {
		return nil
	}
	nu, err := decodeUser(plain)
	if err != nil || nu.s.ID != u.s.ID || nu.s.Gen <= u.s.Gen || nu.s.Refresh == u.s.Refresh {
		return nil
	}
	// Storage is not the cookie, but the same rule holds: the key alone
	// must not be enough to hand a session another identity.
	if nu.sub != u.sub || c.verifyStored(ctx, nu.s.IDToken) != nil {
		return nil
	}
	nu.cookie = c.sessions.Seal(sessionAAD, nu.encode())
	c.users.put(nu.cookie, nu)
	return nu
}

// publishRotated stores the state that replaced oldRefresh.
func (c *client) publishRotated(ctx context.Context, oldRefresh string, nu *user) {
	st := c.revoked.storageBackend()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	sealed := c.sessions.Seal(handoffAAD, nu.encode())
	if err := st.Store(ctx, c.handoffKey(oldRefresh), []byte(sealed)); err != nil {
		c.logger.Warn("cannot share a rotated refresh token through storage; other instances may lose this session", errField(err))
	}
}

// handoffAAD binds sealed handoff records to their purpose.
const handoffAAD = "rotation handoff"
