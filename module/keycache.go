package logto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// The tenant's keys, as last fetched, are kept in Caddy's storage so that
// an instance started while Logto is unreachable can still verify the
// sessions it is shown (verify.go) instead of signing everyone out. They
// are sealed with the session key: whoever can write to storage but does
// not hold the cookie key cannot slip in a key of their own.

// keysAAD binds the sealed key set to its purpose.
const keysAAD = "tenant keys"

// keyCache writes a fetched key set to storage when it changed.
type keyCache struct {
	mu   sync.Mutex
	last [32]byte
}

// keysKey names the saved keys per client (endpoint, app and cookie keys),
// not only per app_id: clients of one app_id that seal with different keys
// would otherwise overwrite each other's copy, which the other cannot open.
func (c *client) keysKey() string {
	sum := sha256.Sum256([]byte("jwks\x00" + c.poolKey))
	return c.revoked.storagePrefix() + "/jwks/" + hex.EncodeToString(sum[:16])
}

// saveKeys keeps body (a JWKS document that parsed) in storage.
func (c *client) saveKeys(body []byte) {
	st := c.revoked.storageBackend()
	if st == nil {
		return
	}
	sum := sha256.Sum256(body)
	c.keyCache.mu.Lock()
	defer c.keyCache.mu.Unlock()
	if sum == c.keyCache.last {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := st.Store(ctx, c.keysKey(), []byte(c.sessions.Seal(keysAAD, body))); err != nil {
		c.logger.Warn("cannot keep Logto's keys in storage; an instance started while Logto is down will sign users out", errField(err))
		return
	}
	c.keyCache.last = sum
}

// savedVerifier verifies stored ID tokens with the keys kept in storage.
func (c *client) savedVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	st := c.revoked.storageBackend()
	if st == nil {
		return nil, errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sealed, err := st.Load(ctx, c.keysKey())
	if err != nil {
		return nil, errUnavailable
	}
	body, err := c.sessions.Open(keysAAD, string(sealed))
	if err != nil {
		return nil, errUnavailable
	}
	set, err := parseJWKS(body)
	if err != nil {
		return nil, err
	}
	return oidc.NewVerifier(c.idp.issuer, staticKeys{set}, &oidc.Config{
		ClientID:             c.idp.appID,
		SupportedSigningAlgs: []string{oidc.ES384, oidc.ES256, oidc.ES512, oidc.RS256},
		SkipExpiryCheck:      true,
	}), nil
}
