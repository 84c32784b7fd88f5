package logto

// Verifying access tokens: what a token costs, and the verified-token cache.

import (
	"strings"
	"testing"
	"time"
)

// TestBearerForgedFloodIsCheap: a flood of distinct forged tokens costs at
// most one signature check each, never grows the cache, and never makes
// the module fetch Logto's keys beyond the refetch cap.
func TestBearerForgedFloodIsCheap(t *testing.T) {
	hx := bearerHarness(t, nil)
	idp := hx.idp
	mustPass(t, hx.serve("GET", "/api", nil, bearer(idp.accessToken(nil))), "user-1")
	jwks := idp.jwksHits.Load()
	attacker := newFakeIdP(t)
	before := sigChecks.Load()
	const n = 200
	for i := range n {
		// The tenant's kid, the attacker's key.
		forged := signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": idp.kid()},
			map[string]any{"iss": idp.issuer, "aud": bearerAPI, "sub": randomString(8), "client_id": "x", "exp": idp.now().Unix() + 60, "i": i},
			es384Signer(attacker.signingKey()))
		mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(forged)), 401, "invalid_token")
	}
	if got := sigChecks.Load() - before; got > n {
		t.Errorf("%d forged tokens cost %d signature checks", n, got)
	}
	if got := idp.jwksHits.Load() - jwks; got != 0 {
		t.Errorf("forged tokens with a known kid fetched the keys %d times", got)
	}
	before = sigChecks.Load()
	for range n {
		forged := signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": randomString(6)},
			map[string]any{"iss": idp.issuer, "aud": bearerAPI, "sub": "x", "client_id": "x", "exp": idp.now().Unix() + 60},
			es384Signer(attacker.signingKey()))
		mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(forged)), 401, "invalid_token")
	}
	if got := idp.jwksHits.Load() - jwks; got > refetchBurst {
		t.Errorf("forged tokens with unknown kids fetched the keys %d times (cap %d)", got, refetchBurst)
	}
	if got := sigChecks.Load() - before; got != 0 {
		t.Errorf("tokens naming no known key cost %d signature checks", got)
	}
	if got := hx.h.client.bearer.len(); got != 1 {
		t.Errorf("cache holds %d tokens, want only the genuine one", got)
	}
}

// TestBearerCachedUntilExpiry: a token is verified once, then served from
// the cache, and refused once expired (60 s leeway).
func TestBearerCachedUntilExpiry(t *testing.T) {
	hx := bearerHarness(t, nil)
	tok := hx.idp.accessToken(func(_, c map[string]any) { c["exp"] = hx.idp.now().Unix() + 300 })
	before := sigChecks.Load()
	for range 5 {
		mustPass(t, hx.serve("GET", "/api", nil, bearer(tok)), "user-1")
	}
	if got := sigChecks.Load() - before; got != 1 {
		t.Errorf("5 requests with one token cost %d signature checks, want 1", got)
	}
	hx.clock.Advance(300*time.Second + clockSkew - time.Second)
	mustPass(t, hx.serve("GET", "/api", nil, bearer(tok)), "user-1")
	hx.clock.Advance(2 * time.Second)
	mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(tok)), 401, "invalid_token")
}

// TestBearerKeyRotation: a token signed with a key Logto has just rotated
// in is accepted (the keys are fetched again for its kid).
func TestBearerKeyRotation(t *testing.T) {
	hx := bearerHarness(t, nil)
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.accessToken(nil))), "user-1")
	hx.idp.rotateKey(false)
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.accessToken(nil))), "user-1")
}

// TestBearerCacheComparesTheToken: the cache is keyed by a 64-bit hash, so
// an entry must be used only for the very token it was verified for; a
// token that collides (by chance or by search) is verified afresh.
func TestBearerCacheComparesTheToken(t *testing.T) {
	bc := newBearerCache(4)
	good := &bearerToken{raw: "header.payload.signature", exp: 100}
	k := bc.key(good.raw)
	bc.put(k, good, 0)
	if bc.get(k, good.raw) != good {
		t.Fatal("cached token not found")
	}
	if bc.get(k, "header.payload.forged") != nil {
		t.Fatal("an entry was returned for another token under the same key")
	}
	// Full: expired entries go first, and the size stays bounded.
	for i := range 10 {
		tok := &bearerToken{raw: strings.Repeat("x", i+1), exp: int64(i)}
		bc.put(bc.key(tok.raw), tok, 5)
	}
	if n := bc.len(); n > 4 {
		t.Errorf("cache holds %d entries, bound 4", n)
	}
}
