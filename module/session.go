package logto

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
)

// session is what the session cookie carries, sealed by the codec (in the
// binary form of encodeSession, below). It keeps only what cannot be had again
// cheaply: the ID token (which also holds the user's claims, so they are
// not stored twice, and whose signature lets any instance verify it) and
// the refresh token. Access tokens (for userinfo, API resources and
// organizations) are kept in memory and re-obtained with the refresh
// token, so the cookie does not grow with the number of APIs a route uses.
type session struct {
	ID      string // random session id, the back-channel logout key
	IDToken string // raw ID token, verified when stored and when first decoded
	Refresh string // refresh token
	Created int64  // sign-in time, unix milliseconds (ordered against logouts)
	Seen    int64  // last activity, unix seconds (idle timeout)
	Idle    int64  // longest time unused so far, seconds (a stricter block's idle timeout)
	Expires int64  // absolute end, unix seconds
	Gen     int    // bumped by every refresh, so newer state wins
	// What the sign-in asked Logto for besides the reserved scopes
	// (abbreviated, see abbreviateAsked): Logto grants nothing later that
	// was not asked for here, so a route needing more sends the user
	// through sign-in again.
	Scopes    []string
	Resources []string
	StepUp    bool // the sign-in was such a second one

	// A session without a refresh token carries the access token of its
	// code exchange, for userinfo: no instance can get another, and the
	// session ends with its ID token, when that one expires too.
	Access    string
	AccessExp int64 // unix seconds
}

// user is a decoded session with its claims, shared read-only between the
// requests that present the same cookie.
type user struct {
	s     session
	sub   string
	id    any    // sub, boxed once for the placeholder
	sid   string // Logto's sid claim, when the tenant sends it
	idExp int64  // ID token expiry, unix seconds
	// refreshAt is when the session is refreshed (a margin before idExp),
	// computed once rather than on every request.
	refreshAt int64
	claims    map[string]any
	// values are the claims as placeholder strings, computed once.
	values map[string]any
	// cookie is the sealed value this user was decoded from or sealed to.
	cookie string
	// asked indexes what the sign-in asked for (session.Scopes, Resources).
	asked map[askedKey]struct{}
}

var errBadSession = errors.New("logto: malformed session")

// decodeUser parses a session payload. The caller verifies the ID token
// (verifyStored) before trusting a cookie it has not seen.
func decodeUser(plain []byte) (*user, error) {
	s, err := decodeSession(plain)
	if err != nil {
		return nil, errBadSession
	}
	return newUser(s)
}

// newUser derives the claims of a session from its ID token.
func newUser(s session) (*user, error) {
	if s.ID == "" || s.IDToken == "" || s.Expires == 0 {
		return nil, errBadSession
	}
	claims, err := jwtClaims(s.IDToken)
	if err != nil {
		return nil, errBadSession
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, errBadSession
	}
	u := &user{s: s, sub: sub, id: sub, claims: claims}
	u.sid, _ = claims["sid"].(string)
	if exp, ok := claims["exp"].(json.Number); ok {
		u.idExp, _ = exp.Int64()
		u.refreshAt = u.idExp - refreshMargin(u)
	}
	u.values = placeholderValues(claims)
	u.asked = askedSet(&s)
	return u, nil
}

func (u *user) encode() []byte { return encodeSession(u.s) }

// jwtClaims decodes the payload of a compact JWT without verifying it.
func jwtClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errBadSession
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, errBadSession
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, errBadSession
	}
	return claims, nil
}

// protocolClaims are ID token claims about the token, not the user; they
// are left out of /logto/user and of placeholders.
var protocolClaims = map[string]bool{
	"iss": true, "aud": true, "exp": true, "iat": true, "nbf": true,
	"nonce": true, "at_hash": true, "c_hash": true, "s_hash": true,
	"auth_time": true, "acr": true, "amr": true, "azp": true, "jti": true,
}

// userClaims returns the claims worth showing: the user's, not the token's.
func userClaims(claims map[string]any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		if !protocolClaims[k] {
			out[k] = v
		}
	}
	return out
}

// placeholderValues turns claims into the strings placeholders show: null is
// empty (not "null"), lists are comma-separated, objects are JSON.
func placeholderValues(claims map[string]any) map[string]any {
	out := make(map[string]any, len(claims))
	for k, v := range claims {
		if protocolClaims[k] {
			continue
		}
		out[k] = claimString(v)
	}
	return out
}

func claimString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case json.Number:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			switch e.(type) {
			case map[string]any, []any:
				b, _ := json.Marshal(v)
				return string(b)
			}
			parts = append(parts, claimString(e))
		}
		return strings.Join(parts, ",")
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// stringsOf is a claim's value as a list of strings: a string alone, or
// the strings of a list.
func stringsOf(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// numberClaim reads a numeric claim decoded with UseNumber.
func numberClaim(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		return int64(n), nil
	}
	return 0, errBadSession
}

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
