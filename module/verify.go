package logto

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"sync"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Sessions decoded from a cookie carry an ID token that was verified when
// it was stored, but the cookie key alone must not be enough to mint a user
// (a leaked cookie_secret, or app_secret when the keys derive from it): so
// when an instance first decodes a cookie, it verifies the ID token again —
// signature with the tenant's keys, iss, aud, algorithm — but not its
// expiry, since an hour after sign-in every stored ID token has expired and
// the refresh replaces it. Decoded sessions are cached by cookie value, so
// this stays off the hot path.
//
// When Logto's keys cannot be had (Logto unreachable since this process
// started), an ID token this process has verified before (at sign-in, at a
// refresh, or in another cookie: re-sealed for idle tracking, or dropped
// from the decoded-session cache) is still accepted, and others are checked
// against the tenant's keys as last fetched, kept sealed in Caddy's storage
// (keycache.go). Only when neither is there (a first start during an outage)
// is a session refused: the cookie key alone is never trusted.

// maxVerifiedTokens bounds the set of verified ID tokens (32 bytes each).
const maxVerifiedTokens = 100000

// verifiedTokens is the set of ID tokens (by SHA-256 of the whole token)
// this process verified.
type verifiedTokens struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]struct{}
}

func newVerifiedTokens(max int) *verifiedTokens {
	return &verifiedTokens{max: max, m: make(map[[32]byte]struct{})}
}

func (v *verifiedTokens) has(raw string) bool {
	sum := sha256.Sum256([]byte(raw))
	v.mu.Lock()
	_, ok := v.m[sum]
	v.mu.Unlock()
	return ok
}

func (v *verifiedTokens) add(raw string) {
	sum := sha256.Sum256([]byte(raw))
	v.mu.Lock()
	// A dropped token costs one signature check when next seen (or,
	// during an outage, a sign-in).
	makeRoom(v.m, v.max)
	v.m[sum] = struct{}{}
	v.mu.Unlock()
}

// verifyStored checks the ID token of a session decoded from a cookie.
func (c *client) verifyStored(ctx context.Context, raw string) error {
	if c.verified.has(raw) {
		return nil
	}
	_, _, err := c.idp.discover(ctx)
	if err == nil {
		if err = verifyIDToken(ctx, c.idp.storedVerifier(), raw); err == nil {
			c.verified.add(raw)
			return nil
		}
		if c.idp.hasKeys() {
			return err // checked against the tenant's keys: a real failure
		}
	}
	// Logto's keys cannot be had: the ones kept in storage (keycache.go).
	v, serr := c.savedVerifier(ctx)
	if serr != nil {
		return err
	}
	if err := verifyIDToken(ctx, v, raw); err != nil {
		return err
	}
	c.verified.add(raw)
	return nil
}

// errNotIDToken: a token signed by the tenant for the application that is
// not an ID token. A back-channel logout token has iss, aud and sub but
// no exp; a session around it would never expire nor refresh.
var errNotIDToken = errors.New("logto: the session's token is not an ID token (no exp, or a logout token's events)")

// verifyIDToken checks a stored ID token with v (which skips expiry) and
// that it is an ID token at all.
func verifyIDToken(ctx context.Context, v *oidc.IDTokenVerifier, raw string) error {
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return err
	}
	var c struct {
		Events json.RawMessage `json:"events"`
	}
	if tok.Expiry.IsZero() || tok.Claims(&c) != nil || c.Events != nil {
		return errNotIDToken
	}
	return nil
}
