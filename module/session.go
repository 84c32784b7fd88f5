package logto

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// session is what the session cookie carries, sealed by the codec (in the
// binary form of sessionwire.go). It keeps only what cannot be had again
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
