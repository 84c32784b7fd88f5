package logto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// maxHandoffHops bounds how many rotations adoptRotated follows: a cookie
// that missed several rotations (a tab left open while other instances
// refreshed) is mapped to the newest state, not the next one, whose token
// was rotated away too.
const maxHandoffHops = 16

// errStorageUnavailable: storage could not say whether another instance
// rotated the session's refresh token. Presenting the token anyway could
// make Logto revoke the whole grant, so the refresh waits, as when Logto
// itself is unreachable.
var errStorageUnavailable = fmt.Errorf("%w: storage unreachable, cannot check for a rotated refresh token", errUnavailable)

// adoptRotated returns the newest state other instances stored for u's
// refresh token, or nil when it was not rotated elsewhere.
func (c *client) adoptRotated(ctx context.Context, u *user) (*user, error) {
	st := c.revoked.storageBackend()
	if st == nil || u.s.Refresh == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var adopted *user
	for range maxHandoffHops {
		b, err := st.Load(ctx, c.handoffKey(u.s.Refresh))
		if err != nil {
			if isNotExist(err) {
				break
			}
			c.logger.Warn("cannot read rotated refresh tokens from storage; the session's refresh waits", errField(err))
			return nil, errStorageUnavailable
		}
		plain, err := c.sessions.Open(handoffAAD, string(b))
		if err != nil {
			break
		}
		nu, err := decodeUser(plain)
		if err != nil || nu.s.ID != u.s.ID || nu.s.Gen <= u.s.Gen || nu.s.Refresh == u.s.Refresh {
			break
		}
		// Storage is not the cookie, but the same rule holds: the key alone
		// must not be enough to hand a session another identity.
		if nu.sub != u.sub || c.verifyStored(ctx, nu.s.IDToken) != nil {
			break
		}
		adopted, u = nu, nu
	}
	if adopted == nil {
		return nil, nil
	}
	adopted.cookie = c.sessions.Seal(sessionAAD, adopted.encode())
	c.users.put(adopted.cookie, adopted)
	return adopted, nil
}

// publishRotated stores the state that replaced oldRefresh. A write that
// fails is retried on every poll of the logout list until it lands.
func (c *client) publishRotated(ctx context.Context, oldRefresh string, nu *user) {
	st := c.revoked.storageBackend()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	sealed := c.sessions.Seal(handoffAAD, nu.encode())
	if err := c.revoked.storeOrRetry(ctx, st, c.handoffKey(oldRefresh), []byte(sealed), c.now().Add(handoffTTL)); err != nil {
		c.logger.Warn("cannot share a rotated refresh token through storage yet; retrying until it lands", errField(err))
	}
}

// handoffAAD binds sealed handoff records to their purpose.
const handoffAAD = "rotation handoff"
