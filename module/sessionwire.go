package logto

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync"
)

// The session payload, sealed by the codec, in a compact binary form (the
// cookie is sent with every request, and JSON around a JWT around JSON
// spent a third of it on base64 of base64):
//
//	format (1 byte, sessionFormat)
//	uvarint Created (unix ms), Seen, Idle, Expires (unix s), Gen
//	token   ID (the session id)
//	token   Refresh
//	idToken
//	uvarint flags (bit 0: StepUp, bit 1: Access follows)
//	list    Scopes, list Resources (what the sign-in asked for)
//	token   Access, uvarint AccessExp (only with flag bit 1)
//
// A list is a uvarint count, then for each string a uvarint length and its
// bytes. A token is 0x01, uvarint length and the bytes base64url (unpadded)
// decodes to, for a value that is canonical base64url, or 0x00, uvarint
// length and the string itself. The ID token is 0x01, uvarint length and
// its header and payload JSON (joined by a NUL byte, which JSON cannot
// hold) deflated with sessionDict, then a token for the raw signature; or
// 0x00 and a token for the whole compact JWT when it is not canonical
// base64url (re-encoding it must give back exactly the signed bytes).
//
// Compression here leaks nothing: the compressed part is the user's own ID
// token, which the user can read anyway; the refresh token is not
// compressed. A payload of another format (an older cookie) is "signed
// out", never an error worse than that.
const sessionFormat = 0x02

// sessionDict primes deflate with what Logto's ID tokens hold, so the
// short JSON compresses well. Changing it changes the format.
const sessionDict = `{"alg":"ES384","typ":"JWT","kid":"` + "\x00" +
	`{"sub":"","name":"","picture":null,"username":"","email":"","email_verified":true,"phone_number":"","phone_number_verified":false,` +
	`"custom_data":{},"identities":{},"roles":[],"organizations":[],"organization_roles":[],"sid":"",` +
	`"created_at":17,"updated_at":17,"nonce":"","at_hash":"","aud":"","exp":17,"iat":17,"iss":"https://`

// A deflate writer at BestCompression costs some 800 KB to set up, and
// every sign-in, refresh and idle-tracking re-seal encodes a session, so
// writers (Reset keeps the dictionary) and readers are reused.
var (
	deflaters = sync.Pool{New: func() any {
		w, _ := flate.NewWriterDict(nil, flate.BestCompression, []byte(sessionDict))
		return w
	}}
	inflaters = sync.Pool{New: func() any { return flate.NewReaderDict(nil, []byte(sessionDict)) }}
)

// maxSessionJSON bounds what a payload inflates to; the cookie itself is
// bounded far below what a bomb would need.
const maxSessionJSON = 256 << 10

var errBadPayload = errors.New("logto: malformed session payload")

var b64 = base64.RawURLEncoding.Strict()

func encodeSession(s session) []byte {
	b := make([]byte, 0, 64+len(s.IDToken))
	b = append(b, sessionFormat)
	for _, n := range []int64{s.Created, s.Seen, s.Idle, s.Expires, int64(s.Gen)} {
		b = binary.AppendUvarint(b, uint64(max(n, 0)))
	}
	b = appendToken(b, s.ID)
	b = appendToken(b, s.Refresh)
	parts := strings.Split(s.IDToken, ".")
	if len(parts) == 3 {
		head, err1 := canonical(parts[0])
		payload, err2 := canonical(parts[1])
		_, err3 := canonical(parts[2])
		if err1 == nil && err2 == nil && err3 == nil {
			var z bytes.Buffer
			w := deflaters.Get().(*flate.Writer)
			w.Reset(&z)
			w.Write(head)
			w.Write([]byte{0})
			w.Write(payload)
			w.Close()
			deflaters.Put(w)
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(z.Len()))
			b = append(b, z.Bytes()...)
			b = appendToken(b, parts[2])
			return appendAsked(b, s)
		}
	}
	b = append(b, 0)
	b = appendToken(b, s.IDToken)
	return appendAsked(b, s)
}

func appendAsked(b []byte, s session) []byte {
	var flags uint64
	if s.StepUp {
		flags |= 1
	}
	if s.Access != "" {
		flags |= 2
	}
	b = binary.AppendUvarint(b, flags)
	for _, list := range [][]string{s.Scopes, s.Resources} {
		b = binary.AppendUvarint(b, uint64(len(list)))
		for _, v := range list {
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	if s.Access != "" {
		b = appendToken(b, s.Access)
		b = binary.AppendUvarint(b, uint64(max(s.AccessExp, 0)))
	}
	return b
}

// canonical decodes s when it is base64url exactly as RawURLEncoding
// writes it.
func canonical(s string) ([]byte, error) {
	raw, err := b64.DecodeString(s)
	if err != nil || strings.ContainsAny(s, "\r\n") || b64.EncodeToString(raw) != s {
		return nil, errBadPayload
	}
	return raw, nil
}

func appendToken(b []byte, s string) []byte {
	if raw, err := canonical(s); err == nil && s != "" {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(raw)))
		return append(b, raw...)
	}
	b = append(b, 0)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// wireReader reads the fields of a payload; the first error sticks.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) uvarint() int64 {
	if r.err != nil {
		return 0
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > 1<<62 {
		r.err = errBadPayload
		return 0
	}
	r.b = r.b[k:]
	return int64(n)
}

func (r *wireReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > int64(len(r.b)) {
		r.err = errBadPayload
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *wireReader) flag() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errBadPayload
		return 0
	}
	f := r.b[0]
	r.b = r.b[1:]
	if f > 1 {
		r.err = errBadPayload
	}
	return f
}

func (r *wireReader) token() string {
	f := r.flag()
	v := r.bytes()
	if f == 1 {
		return b64.EncodeToString(v)
	}
	return string(v)
}

// list reads a list of strings; a count larger than what is left is
// malformed, so a hostile count cannot make it allocate.
func (r *wireReader) list() []string {
	n := r.uvarint()
	if r.err != nil || n > int64(len(r.b)) {
		r.err = errBadPayload
		return nil
	}
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		v := r.bytes()
		if r.err != nil {
			return nil
		}
		out = append(out, string(v))
	}
	return out
}

func decodeSession(plain []byte) (session, error) {
	var s session
	if len(plain) == 0 || plain[0] != sessionFormat {
		return s, errBadPayload
	}
	r := &wireReader{b: plain[1:]}
	s.Created, s.Seen, s.Idle, s.Expires = r.uvarint(), r.uvarint(), r.uvarint(), r.uvarint()
	if gen := r.uvarint(); gen <= 1<<30 {
		s.Gen = int(gen)
	} else {
		r.err = errBadPayload
	}
	s.ID = r.token()
	s.Refresh = r.token()
	if r.flag() == 1 {
		z := r.bytes()
		sig := r.token()
		if r.err != nil {
			return s, r.err
		}
		zr := inflaters.Get().(io.ReadCloser)
		zr.(flate.Resetter).Reset(bytes.NewReader(z), []byte(sessionDict))
		j, err := io.ReadAll(io.LimitReader(zr, maxSessionJSON+1))
		inflaters.Put(zr)
		if err != nil || len(j) > maxSessionJSON {
			return s, errBadPayload
		}
		head, payload, ok := bytes.Cut(j, []byte{0})
		if !ok {
			return s, errBadPayload
		}
		s.IDToken = b64.EncodeToString(head) + "." + b64.EncodeToString(payload) + "." + sig
	} else {
		s.IDToken = r.token()
	}
	flags := r.uvarint()
	if flags > 3 {
		r.err = errBadPayload
	}
	s.StepUp = flags&1 != 0
	s.Scopes = r.list()
	s.Resources = r.list()
	if flags&2 != 0 {
		if s.Access = r.token(); s.Access == "" {
			r.err = errBadPayload
		}
		s.AccessExp = r.uvarint()
	}
	if r.err != nil || len(r.b) != 0 {
		return s, errBadPayload
	}
	return s, nil
}
