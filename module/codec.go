package logto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// ErrBadCookie is returned by Open for every value it does not accept. The
// reason is deliberately not given: a tampered, truncated, foreign or
// old-key cookie all mean "signed out", and telling them apart would only
// help someone probing the codec.
var ErrBadCookie = errors.New("logto: invalid cookie")

// Wire format of a sealed value, before base64url (no padding):
//
//	version (1) || key id (4) || nonce (12) || ciphertext || tag (16)
//
// The additional authenticated data is version || key id || cookie name.
// The version byte lets a future format be introduced while old cookies are
// still recognised (or cleanly rejected); the key id lets Open pick the right
// key instead of trying each one.
const (
	codecVersion   = 0x01
	codecKeyIDSize = 4
	codecNonceSize = 12 // the standard GCM nonce size
	codecTagSize   = 16
	codecHeader    = 1 + codecKeyIDSize + codecNonceSize
	codecOverhead  = codecHeader + codecTagSize

	// codecAADHeader is how much of the header is authenticated along with
	// the cookie name: version and key id, so that a future format cannot
	// be made to read a version 1 ciphertext.
	codecAADHeader = 1 + codecKeyIDSize

	// codecMaxValue bounds the encoded values Open looks at. Browsers keep
	// about 4 KiB per cookie and the chunked cookies top out far below this,
	// so anything longer is hostile and is refused before it costs a decode.
	codecMaxValue = 64 << 10
)

// codecSalt is the HKDF salt. It is fixed, not secret: it only separates
// this project's keys from anything else derived from the same secret
// (Logto's app secret may well be used elsewhere).
var codecSalt = []byte("github.com/caddy-logto/caddy-logto cookie codec")

// Strict rejects non-zero trailing bits, so each sealed value has exactly
// one accepted encoding and a flipped final character cannot slip through.
var codecEncoding = base64.RawURLEncoding.Strict()

// Codec seals and opens cookie values with AES-256-GCM. The first key seals;
// every key opens (rotation).
//
// A Codec is safe for concurrent use.
type Codec struct {
	keys []codecKey // keys[0] seals
}

type codecKey struct {
	id   [codecKeyIDSize]byte
	aead cipher.AEAD
}

// NewCodec derives one AES-256 key per secret with HKDF-SHA256 (salt: a
// fixed project-specific constant, info: "caddy-logto v1 " + purpose).
// secrets[0] seals; the others only open, so a secret can be rotated by
// putting the new one first and keeping the old one until its cookies have
// expired. Distinct purposes give unrelated keys from the same secrets.
//
// HKDF does not stretch: secrets must already be high-entropy.
func NewCodec(purpose string, secrets ...[]byte) (*Codec, error) {
	if len(secrets) == 0 {
		return nil, errors.New("logto: codec needs at least one secret")
	}
	c := &Codec{keys: make([]codecKey, 0, len(secrets))}
	for i, secret := range secrets {
		if len(secret) == 0 {
			return nil, errors.New("logto: codec secret " + strconv.Itoa(i) + " is empty")
		}
		key, err := hkdf.Key(sha256.New, secret, codecSalt, "caddy-logto v1 "+purpose, 32)
		if err != nil {
			return nil, err
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		// The id is a hash of the derived key, not of the secret, so it says
		// nothing about the secret and differs per purpose.
		sum := sha256.Sum256(key)
		k := codecKey{aead: aead}
		copy(k.id[:], sum[:codecKeyIDSize])
		c.keys = append(c.keys, k)
	}
	return c, nil
}

// Seal returns base64url (no padding) of: version byte 0x01 || key id
// (4 bytes) || 12-byte random nonce || ciphertext+tag.
//
// The cookie name is additional authenticated data (after the version and
// key id), so a value sealed for one cookie name never opens under another
// (a transaction cookie cannot be replayed as a session cookie).
//
// Random 96-bit nonces are safe for far more seals than one key will ever
// see here (the GCM bound is about 2^32 messages per key).
func (c *Codec) Seal(name string, plaintext []byte) string {
	k := &c.keys[0]
	rawLen := codecOverhead + len(plaintext)
	encLen := codecEncoding.EncodedLen(rawLen)
	// One scratch buffer holds the text form, the raw sealed bytes and the
	// AAD, so the only other allocation is the returned string.
	buf := make([]byte, encLen+rawLen+codecAADHeader+len(name))
	text, raw, aad := buf[:encLen], buf[encLen:encLen+rawLen], buf[encLen+rawLen:]
	raw[0] = codecVersion
	copy(raw[1:], k.id[:])
	nonce := raw[1+codecKeyIDSize : codecHeader]
	rand.Read(nonce) // never fails since Go 1.24; it crashes the program instead
	copy(aad, raw[:codecAADHeader])
	copy(aad[codecAADHeader:], name)
	k.aead.Seal(raw[:codecHeader], nonce, plaintext, aad)
	codecEncoding.Encode(text, raw)
	return string(text)
}

// Open reverses Seal. Any failure (bad base64, wrong version, unknown key id,
// too short, authentication failure) returns ErrBadCookie: it never panics
// and never tells the caller why.
//
// The returned slice is freshly allocated and belongs to the caller.
func (c *Codec) Open(name, value string) ([]byte, error) {
	if len(value) > codecMaxValue || len(value) < codecEncoding.EncodedLen(codecOverhead) {
		return nil, ErrBadCookie
	}
	// encoding/base64 skips CR and LF even in strict mode; refusing them
	// keeps one accepted spelling per sealed value.
	if strings.ContainsAny(value, "\r\n") {
		return nil, ErrBadCookie
	}
	// One allocation: the decoded bytes, followed by room for the AAD.
	// Decryption then happens in place.
	rawMax := codecEncoding.DecodedLen(len(value))
	buf := make([]byte, rawMax+codecAADHeader+len(name))
	n, err := codecEncoding.Decode(buf[:rawMax], []byte(value))
	if err != nil || n < codecOverhead || buf[0] != codecVersion {
		return nil, ErrBadCookie
	}
	aad := buf[rawMax:]
	copy(aad, buf[:codecAADHeader])
	copy(aad[codecAADHeader:], name)
	raw := buf[:n]
	id := raw[1 : 1+codecKeyIDSize]
	nonce := raw[1+codecKeyIDSize : codecHeader]
	sealed := raw[codecHeader:]
	// Ids are 32-bit, so two keys may share one; try each that matches.
	tried := false
	for i := range c.keys {
		k := &c.keys[i]
		if string(k.id[:]) != string(id) {
			continue
		}
		if tried {
			// A failed in-place Open wipes its output, which is the
			// ciphertext; decode it again for the next key.
			codecEncoding.Decode(buf[:rawMax], []byte(value))
		}
		tried = true
		plaintext, err := k.aead.Open(sealed[:0], nonce, sealed, aad)
		if err == nil {
			return plaintext, nil
		}
	}
	return nil, ErrBadCookie
}
