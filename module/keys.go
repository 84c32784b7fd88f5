package logto

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// A signature that does not verify with the keys at hand triggers a fetch
// of Logto's keys (Logto rotated them), but strangers can post tokens with
// bad signatures to /logto/backchannel-logout at will: without a limit each
// would cost Logto a request. So at most refetchBurst fetches happen per
// refetchWindow: a rotation is picked up at once, a flood costs Logto a
// request every few seconds at most.
const (
	refetchBurst  = 3
	refetchWindow = 30 * time.Second
)

// errBadSignature is any signature the tenant's keys do not verify.
var errBadSignature = errors.New("logto: signature does not verify with the tenant's keys")

// keySet is Logto's JWKS as an oidc.KeySet: fetched on first use, fetched
// again when a signature does not verify (key rotation), at most
// refetchBurst times per refetchWindow.
type keySet struct {
	url  string
	http *http.Client
	now  func() time.Time

	fetching sync.Mutex // one fetch at a time, without blocking readers
	mu       sync.Mutex // guards keys and recent
	keys     *oidc.StaticKeySet
	byKid    map[string]crypto.PublicKey // the same keys by their kid
	recent   []time.Time                 // fetches within refetchWindow
}

func newKeySet(url string, hc *http.Client, now func() time.Time) *keySet {
	return &keySet{url: url, http: hc, now: now}
}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	k.mu.Lock()
	keys := k.keys
	k.mu.Unlock()
	if keys != nil {
		if payload, err := keys.VerifySignature(ctx, jwt); err == nil {
			return payload, nil
		}
	}
	keys, err := k.refetch(ctx, keys)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		return nil, errBadSignature
	}
	payload, err := keys.VerifySignature(ctx, jwt)
	if err != nil {
		return nil, errBadSignature
	}
	return payload, nil
}

// refetch fetches the keys unless another caller already replaced seen or
// the last fetch is too recent; it returns the keys to try.
func (k *keySet) refetch(ctx context.Context, seen *oidc.StaticKeySet) (*oidc.StaticKeySet, error) {
	k.fetching.Lock()
	defer k.fetching.Unlock()
	k.mu.Lock()
	if k.keys != seen {
		defer k.mu.Unlock()
		return k.keys, nil // fetched meanwhile
	}
	now := k.now()
	recent := k.recent[:0]
	for _, t := range k.recent {
		if now.Sub(t) < refetchWindow {
			recent = append(recent, t)
		}
	}
	k.recent = recent
	if len(k.recent) >= refetchBurst {
		defer k.mu.Unlock()
		if k.keys == nil {
			return nil, fmt.Errorf("%w: keys could not be fetched; retrying later", errUnavailable)
		}
		return nil, nil
	}
	k.recent = append(k.recent, now)
	k.mu.Unlock()

	// Readers keep verifying with the keys at hand meanwhile.
	keys, byKid, err := fetchJWKS(ctx, k.http, k.url)
	if err != nil {
		return nil, err
	}
	set := &oidc.StaticKeySet{PublicKeys: keys}
	k.mu.Lock()
	k.keys, k.byKid = set, byKid
	k.mu.Unlock()
	return set, nil
}

// keyByID returns the key a token's kid names, for access tokens: one
// signature check with the one key it names, never a try of every key. An
// unknown kid fetches the keys again (Logto rotated them), within the same
// cap as VerifySignature; a known kid whose signature fails is a forgery
// and costs no fetch at all. An empty kid names the only key, if there is
// only one.
func (k *keySet) keyByID(ctx context.Context, kid string) (crypto.PublicKey, error) {
	k.mu.Lock()
	keys, pub := k.keys, k.lookup(kid)
	k.mu.Unlock()
	if pub != nil {
		return pub, nil
	}
	got, err := k.refetch(ctx, keys)
	if err != nil {
		return nil, err
	}
	if got == nil {
		return nil, errBadSignature // the cap is spent: rejected cheaply
	}
	k.mu.Lock()
	pub = k.lookup(kid)
	k.mu.Unlock()
	if pub == nil {
		return nil, errBadSignature
	}
	return pub, nil
}

// lookup finds a key by kid; the caller holds k.mu.
func (k *keySet) lookup(kid string) crypto.PublicKey {
	if kid == "" {
		if k.keys != nil && len(k.keys.PublicKeys) == 1 {
			return k.keys.PublicKeys[0]
		}
		return nil
	}
	return k.byKid[kid]
}

// jwk is the part of a JSON Web Key (RFC 7517) the module reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func fetchJWKS(ctx context.Context, hc *http.Client, url string) ([]crypto.PublicKey, map[string]crypto.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: keys: %v", errUnavailable, scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%w: keys answered %s", errUnavailable, resp.Status)
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, nil, fmt.Errorf("%w: keys are not a JSON key set", errUnavailable)
	}
	var keys []crypto.PublicKey
	byKid := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if pub, err := k.publicKey(); err == nil {
			keys = append(keys, pub)
			if k.Kid != "" {
				byKid[k.Kid] = pub
			}
		}
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("%w: the key set holds no usable signing key", errUnavailable)
	}
	return keys, byKid, nil
}

// publicKey decodes an EC (P-256, P-384, P-521) or RSA key; Logto signs
// with EC P-384 by default and RSA on tenants older than 1.0.
func (k jwk) publicKey() (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding
	switch k.Kty {
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, errX := b64.DecodeString(k.X)
		y, errY := b64.DecodeString(k.Y)
		size := (curve.Params().BitSize + 7) / 8
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, errors.New("malformed EC key")
		}
		point := append(append([]byte{4}, x...), y...)
		return ecdsa.ParseUncompressedPublicKey(curve, point)
	case "RSA":
		n, errN := b64.DecodeString(k.N)
		e, errE := b64.DecodeString(k.E)
		if errN != nil || errE != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("malformed or short RSA key")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	}
	return nil, fmt.Errorf("unsupported key type %q", k.Kty)
}
