package logto

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func mustCodec(t testing.TB, purpose string, secrets ...string) *Codec {
	t.Helper()
	bs := make([][]byte, len(secrets))
	for i, s := range secrets {
		bs[i] = []byte(s)
	}
	c, err := NewCodec(purpose, bs...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawOf decodes a sealed value, for tests that inspect or forge the wire format.
func rawOf(t testing.TB, v string) []byte {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// codecGolden holds values sealed by version 1 with codecGoldenSecrets. They
// must open forever: cookies in browsers outlive deployments.
var (
	codecGoldenSecrets = []string{"fuzz-new", "fuzz-old"}
	codecGolden        = []struct{ name, plaintext, value string }{
		{"s", "", "AZeqU5xqzQi1UvlWQsyKnktTNOeirgI6R3x8ujlEjqNt"},
		{"s", "hello", "AZeqU5yewydJbxGY-SYPxhgQagrJFISrXpw_OW6Lc7cZEtBT8Z8"},
		{"__Host-logto_session", strings.Repeat(`{"sub":"u"}`, 40), "AZeqU5yZo-Z8WLq27WGHsTUCzUtjE0oWiSGgZGLtq36W77DUYbeLir_IlRRYftqXoswsqme2IskNeQvkVsr-NLEPsPP4RI02gFZh-wWlvJ_spJxGKd_w7Uwb0spG4aMqRKVJqPxjX7gpxug-lZyt9GrYreDS5td0zoHgHNt2Iz2FD7M0My5bnyFfvHfljFpsczpykpJOmujergzczPF4TGV8nyjRX3aZiX6YSnuHhOMs-u7tQ3XGIl3UhwMZps2W_dsHpPJA0oLP8j3XoHMVG1iQh6vcP0GTP0n2apWP-WILMx97ePnqdK28vYuhzlsu8Eqfk6xWUsTaJBvRHNbaGjKvRAIb3uWf155KRPvgKJS9MPbBMgFC1MARkJ5AhvCiB64xM7k9ctTGvIhPEE8Nx4zlVdhfx3rn7tm6wkhY90RyilunZEnW4eCDAOYVTdy7FohL6s1O5WYwuqQSsl9EvMVEA5WMMXus0uaxQwJ6hTtoy1TTsfeNxCzbZ-H_M8gnqSz2YKNPwVmJr23V1ZwogQmY7I3fTWUXOeVlRA3vs5ZPdHjuMnkB-jhdfswd32B2cFZbAI9A0D3bcVqyi4SIyjI2wZle6BtB3L-k6xUW27pNTO61G4P9QXM"},
		// Sealed with the older secret alone.
		{"__Host-logto_tx_x", "tx", "AfYVc-7Idsn_RPlvohhpLCOuItGju0Nf2hW9HLFZJewNEQ8"},
	}
)

// TestCodecGoldenVectors stops a refactor from silently changing key
// derivation or the wire format, which would sign every user out on upgrade
// (or, worse, change how existing cookies are read).
func TestCodecGoldenVectors(t *testing.T) {
	c := mustCodec(t, "session", codecGoldenSecrets...)
	for _, g := range codecGolden {
		if got, err := c.Open(g.name, g.value); err != nil || string(got) != g.plaintext {
			t.Errorf("%s: Open = %q, %v", g.name, got, err)
		}
	}
	if _, err := mustCodec(t, "transaction", codecGoldenSecrets...).Open(codecGolden[0].name, codecGolden[0].value); err == nil {
		t.Error("golden value opened under another purpose")
	}
}

func TestNewCodecErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		secrets [][]byte
	}{
		{"no secret", nil},
		{"empty secret", [][]byte{{}}},
		{"empty older secret", [][]byte{[]byte("new"), nil}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCodec("session", tt.secrets...); err == nil {
				t.Fatal("NewCodec succeeded")
			}
		})
	}
}

func TestCodecRoundTrip(t *testing.T) {
	c := mustCodec(t, "session", "s3cret-s3cret-s3cret-s3cret-s3cret")
	for _, size := range []int{0, 1, 15, 16, 17, 1200, 20000} {
		pt := make([]byte, size)
		rand.Read(pt)
		v := c.Seal("__Host-logto_session", pt)
		if strings.ContainsAny(v, "=+/.*~") {
			t.Errorf("size %d: sealed value %q is not unpadded base64url", size, v[:min(len(v), 40)])
		}
		raw := rawOf(t, v)
		if raw[0] != codecVersion || len(raw) != codecOverhead+size {
			t.Errorf("size %d: version %#x, length %d", size, raw[0], len(raw))
		}
		got, err := c.Open("__Host-logto_session", v)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("size %d: Open = %x, %v", size, got[:min(len(got), 16)], err)
		}
	}
}

// TestCodecNonceIsRandom stops keystream reuse: two seals of the same
// plaintext must use different nonces, or XORing them would reveal it.
func TestCodecNonceIsRandom(t *testing.T) {
	c := mustCodec(t, "session", "k")
	a, b := rawOf(t, c.Seal("n", []byte("same"))), rawOf(t, c.Seal("n", []byte("same")))
	if bytes.Equal(a[5:17], b[5:17]) || bytes.Equal(a, b) {
		t.Fatal("two seals share a nonce")
	}
}

// TestCodecRejectsTampering stops forged sessions: flipping any bit of a
// sealed value (to change a user id, an expiry, a role) must not open.
func TestCodecRejectsTampering(t *testing.T) {
	c := mustCodec(t, "session", "k")
	v := c.Seal("s", []byte(`{"sub":"user-1","exp":1700000000}`))
	raw := rawOf(t, v)
	for i := range raw {
		for _, bit := range []byte{0x01, 0x80} {
			forged := bytes.Clone(raw)
			forged[i] ^= bit
			if _, err := c.Open("s", base64.RawURLEncoding.EncodeToString(forged)); !errors.Is(err, ErrBadCookie) {
				t.Fatalf("byte %d bit %#x flipped: Open err = %v", i, bit, err)
			}
		}
	}
	// Every character of the text form too, including the last one, whose
	// low bits are padding a lax decoder would ignore.
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range v {
		for _, r := range []byte{alphabet[(strings.IndexByte(alphabet, v[i])+1)%64], '!', '='} {
			forged := v[:i] + string(r) + v[i+1:]
			if _, err := c.Open("s", forged); !errors.Is(err, ErrBadCookie) {
				t.Fatalf("char %d set to %q: Open err = %v", i, r, err)
			}
		}
	}
}

// TestCodecRejectsTruncation stops an attacker from cutting a value short
// (to drop trailing claims or hit a parser edge case).
func TestCodecRejectsTruncation(t *testing.T) {
	c := mustCodec(t, "session", "k")
	v := c.Seal("s", []byte("some session payload"))
	for n := range len(v) {
		if _, err := c.Open("s", v[:n]); !errors.Is(err, ErrBadCookie) {
			t.Fatalf("truncated to %d: err = %v", n, err)
		}
	}
	if _, err := c.Open("s", v+"A"); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("extended: err = %v", err)
	}
}

// TestCodecRejectsCookieSwap stops replaying a value sealed for one cookie
// under another name: a sign-in transaction cookie (which an attacker can
// make the module issue) must never be accepted as a session cookie.
func TestCodecRejectsCookieSwap(t *testing.T) {
	c := mustCodec(t, "session", "k")
	v := c.Seal("__Host-logto_tx_abc", []byte(`{"sub":"x"}`))
	for _, name := range []string{"__Host-logto_session", "__Host-logto_tx_abd", "", "__Host-logto_tx_abc "} {
		if _, err := c.Open(name, v); !errors.Is(err, ErrBadCookie) {
			t.Errorf("opened under %q: err = %v", name, err)
		}
	}
}

// TestCodecRejectsOtherPurpose stops reusing a value across codecs built from
// the same secret for different purposes (keys are separated by HKDF info).
func TestCodecRejectsOtherPurpose(t *testing.T) {
	tx := mustCodec(t, "transaction", "k")
	session := mustCodec(t, "session", "k")
	v := tx.Seal("s", []byte("x"))
	if _, err := session.Open("s", v); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("err = %v", err)
	}
}

// TestCodecKeyRotation checks that rotating cookie_secret signs nobody out:
// cookies sealed with the old secret still open, and new ones use the new
// secret, so the old one can be dropped once its cookies have expired.
func TestCodecKeyRotation(t *testing.T) {
	old := mustCodec(t, "session", "old")
	rotated := mustCodec(t, "session", "new", "old")
	onlyNew := mustCodec(t, "session", "new")

	v := old.Seal("s", []byte("before"))
	if got, err := rotated.Open("s", v); err != nil || string(got) != "before" {
		t.Fatalf("old cookie after rotation: %q, %v", got, err)
	}
	w := rotated.Seal("s", []byte("after"))
	if !bytes.Equal(rawOf(t, w)[1:5], onlyNew.keys[0].id[:]) {
		t.Fatal("rotated codec does not seal with the new key")
	}
	if got, err := onlyNew.Open("s", w); err != nil || string(got) != "after" {
		t.Fatalf("new cookie under new key: %q, %v", got, err)
	}
	if _, err := old.Open("s", w); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("new cookie opened with the old key only: %v", err)
	}
}

// TestCodecRejectsUnknownKey stops cookies from a retired secret (or another
// deployment) from being accepted once the secret is removed.
func TestCodecRejectsUnknownKey(t *testing.T) {
	retired := mustCodec(t, "session", "retired")
	c := mustCodec(t, "session", "new", "older")
	if _, err := c.Open("s", retired.Seal("s", []byte("x"))); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("err = %v", err)
	}
}

// TestCodecKeyIDCollision covers two keys sharing a key id: a failed attempt
// with the first must not spoil the attempt with the second.
func TestCodecKeyIDCollision(t *testing.T) {
	a := mustCodec(t, "session", "a")
	b := mustCodec(t, "session", "b")
	both := &Codec{keys: []codecKey{a.keys[0], b.keys[0]}}
	both.keys[0].id = b.keys[0].id // force the collision; a is tried first
	v := b.Seal("s", []byte("payload"))
	if got, err := both.Open("s", v); err != nil || string(got) != "payload" {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

// TestCodecAuthenticatesHeader stops relabelling a ciphertext: version and
// key id are authenticated, so a value cannot be passed off as another
// format version, nor moved to another key that happens to share its id.
func TestCodecAuthenticatesHeader(t *testing.T) {
	c := mustCodec(t, "session", "k")
	raw := rawOf(t, c.Seal("s", []byte("payload")))
	// Give the codec a second copy of the key under another id and point
	// the value at it: the tag must no longer verify.
	alias := c.keys[0]
	alias.id[0] ^= 0xff
	c.keys = append(c.keys, alias)
	raw[1] ^= 0xff
	if _, err := c.Open("s", base64.RawURLEncoding.EncodeToString(raw)); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("err = %v", err)
	}
}

// TestCodecRejectsGarbage stops malformed input from reaching the cipher or
// causing a panic or a 500: everything is just "signed out".
func TestCodecRejectsGarbage(t *testing.T) {
	c := mustCodec(t, "session", "k")
	v := c.Seal("s", []byte("payload"))
	raw := rawOf(t, v)
	withVersion := func(ver byte) string {
		r := bytes.Clone(raw)
		r[0] = ver
		return base64.RawURLEncoding.EncodeToString(r)
	}
	for _, tt := range []struct{ name, value string }{
		{"empty", ""},
		{"one char", "A"},
		{"header only", base64.RawURLEncoding.EncodeToString(raw[:codecHeader])},
		{"no tag", base64.RawURLEncoding.EncodeToString(raw[:codecOverhead-1])},
		{"padded", base64.URLEncoding.EncodeToString(raw)},
		{"padding appended", v + "=="},
		{"standard alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(v) + "+/"},
		{"whitespace", v[:10] + " " + v[10:]},
		{"newline", v[:10] + "\n" + v[10:]},
		{"carriage return", v[:10] + "\r\n" + v[10:]},
		{"quoted", `"` + v + `"`},
		{"version 0", withVersion(0)},
		{"version 2", withVersion(2)},
		{"all zero", base64.RawURLEncoding.EncodeToString(make([]byte, 64))},
		{"oversized", strings.Repeat("A", codecMaxValue+4)},
		{"non-ASCII", v[:10] + "é" + v[10:]},
		{"NUL", v[:10] + "\x00" + v[10:]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Open("s", tt.value)
			if !errors.Is(err, ErrBadCookie) || got != nil {
				t.Fatalf("Open = %q, %v", got, err)
			}
		})
	}
}

// TestCodecOpenSameError checks that callers (and so clients) cannot tell
// why a value was refused: every failure is the very same error value.
func TestCodecOpenSameError(t *testing.T) {
	c := mustCodec(t, "session", "k")
	other := mustCodec(t, "session", "other")
	v := c.Seal("s", []byte("x"))
	tail := "AA"
	if strings.HasSuffix(v, tail) {
		tail = "BA" // the tag happened to end in AA (1 in 4096)
	}
	for _, bad := range []string{"!", v[:len(v)-1], other.Seal("s", nil), v[:len(v)-2] + tail} {
		if _, err := c.Open("s", bad); err != ErrBadCookie {
			t.Errorf("err = %#v, want ErrBadCookie itself", err)
		}
	}
}

func TestCodecOpenResultIsFresh(t *testing.T) {
	c := mustCodec(t, "session", "k")
	v := c.Seal("s", []byte("payload"))
	a, _ := c.Open("s", v)
	a[0] = 'X'
	if b, _ := c.Open("s", v); string(b) != "payload" {
		t.Fatalf("second Open = %q", b)
	}
}

func BenchmarkCodecOpen(b *testing.B) {
	c := mustCodec(b, "session", "new", "old")
	pt := make([]byte, 1200)
	rand.Read(pt)
	v := c.Seal("__Host-logto_session", pt)
	b.ReportAllocs()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := c.Open("__Host-logto_session", v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecSeal(b *testing.B) {
	c := mustCodec(b, "session", "new", "old")
	pt := make([]byte, 1200)
	rand.Read(pt)
	b.ReportAllocs()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		c.Seal("__Host-logto_session", pt)
	}
}
