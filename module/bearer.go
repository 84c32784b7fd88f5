package logto

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
)

// bearerChallenge is the WWW-Authenticate challenge of RFC 6750 without an
// error: what a request gets that brought no token where one is needed.
const bearerChallenge = `Bearer realm="logto"`

// organizationIndicator, as a bearer indicator, accepts organization
// tokens (audience urn:logto:organization:<id>).
const organizationIndicator = "organization"

// organizationAudience prefixes the audience of Logto's organization tokens.
const organizationAudience = "urn:logto:organization:"

// provisionBearer expands and checks the bearer options. A mixed block
// (cookies and tokens) with scope rules and no token_resource reads its
// browser users' permissions from a token for the first indicator, so one
// rule means the same permission for both kinds of client.
func (h *Handler) provisionBearer(repl *caddy.Replacer) error {
	if h.BearerOnly && len(h.Bearer) == 0 {
		return errors.New("logto: bearer_only needs bearer <resource indicator>: it accepts only access tokens")
	}
	for i, ind := range h.Bearer {
		ind = repl.ReplaceAll(ind, "")
		if !validIndicator(ind) {
			return fmt.Errorf("logto: bearer: %q is not a resource indicator (an absolute URI such as https://api.example.com, or %q)", ind, organizationIndicator)
		}
		if slices.Contains(h.Bearer[:i], ind) {
			return fmt.Errorf("logto: bearer: %q given twice", ind)
		}
		h.Bearer[i] = ind
	}
	if len(h.Bearer) > 0 && !h.BearerOnly && h.TokenResource == "" && h.Bearer[0] != organizationIndicator {
		for _, r := range h.Require {
			if r.Kind == "scope" {
				h.TokenResource = h.Bearer[0]
				break
			}
		}
	}
	return nil
}

// validIndicator accepts what Logto accepts as an API resource indicator:
// an absolute URI. Placeholders are expanded before this check.
func validIndicator(s string) bool {
	if s == organizationIndicator {
		return true
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && (u.Host != "" || u.Opaque != "") && u.Fragment == ""
}

// credKind says what a request brought by way of an access token.
type credKind int

const (
	credNone      credKind = iota // no Authorization: Bearer, no token in the query
	credToken                     // one well-formed Authorization: Bearer <token>
	credMalformed                 // RFC 6750 invalid_request: see reason
)

type bearerCred struct {
	kind   credKind
	token  string
	reason string
}

// bearerCredentials reads the request's access token. Only the
// Authorization header is a way in (RFC 6750 section 2.1; the scheme name
// is case-insensitive, RFC 7235). A token in the query string is refused
// rather than ignored, since URLs end up in logs and the client should
// learn so. Two Authorization headers, "Bearer" with no token or with
// more than one, are malformed requests. auth is the Authorization header
// as the client sent it: another block of the application may set that
// header for its upstream, and so strip the client's before this one runs.
func bearerCredentials(auth []string, r *http.Request) bearerCred {
	inQuery := strings.Contains(r.URL.RawQuery, "access_token") && r.URL.Query().Has("access_token")
	if len(auth) == 0 {
		if inQuery {
			return bearerCred{kind: credMalformed, reason: "access tokens are not accepted in the query string"}
		}
		return bearerCred{kind: credNone}
	}
	scheme, rest, _ := strings.Cut(strings.TrimLeft(auth[0], " "), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if len(auth) > 1 {
			return bearerCred{kind: credMalformed, reason: "more than one Authorization header"}
		}
		// Another scheme (Basic, say) is not ours to judge.
		return bearerCred{kind: credNone}
	}
	switch token := strings.Trim(rest, " "); {
	case len(auth) > 1:
		return bearerCred{kind: credMalformed, reason: "more than one Authorization header"}
	case inQuery:
		return bearerCred{kind: credMalformed, reason: "more than one way of sending the access token"}
	case token == "":
		return bearerCred{kind: credMalformed, reason: "no token after Bearer"}
	case !isB64Token(token):
		return bearerCred{kind: credMalformed, reason: "the Authorization header is not Bearer followed by one token"}
	default:
		return bearerCred{kind: credToken, token: token}
	}
}

// isB64Token checks RFC 6750's b64token syntax: 1*( ALPHA / DIGIT / "-" /
// "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// gateBearer is the gate for a request of a bearer block that carries a
// token (or any request of a bearer_only block). No session is read and no
// cookie is set; failures follow RFC 6750. Like admit, it reports whether
// the request goes on, and otherwise the error.
func (h *Handler) gateBearer(w http.ResponseWriter, r *http.Request, st *requestState, first bool, repl *caddy.Replacer, cred bearerCred) (bool, error) {
	if first {
		repl.Map(st.placeholder)
	}
	h.stripModuleCookies(r)
	protected, err := h.protects(r)
	if err != nil {
		return false, err
	}
	// Where nothing is required (outside the matcher), a token is used when
	// good and otherwise ignored, as a bad cookie means "signed out".
	switch {
	case cred.kind == credNone:
		if h.Pass || !protected {
			return true, nil
		}
		return false, bearerFail(w, http.StatusUnauthorized, "", "", "")
	case cred.kind == credMalformed:
		if !protected {
			return true, nil
		}
		h.logger.Debug("bearer request rejected", zap.String("reason", cred.reason))
		h.client.metrics.bearerToken(bearerInvalidRequest)
		return false, bearerFail(w, http.StatusBadRequest, "invalid_request", cred.reason, "")
	}

	tok, err := h.client.verifyBearer(r.Context(), cred.token, h.acceptsAudience)
	if err == nil && tok.orgScoped() && h.Organization == "" {
		// Its scope is what the caller's roles in one organization grant,
		// not their permissions on the API: only a block that names the
		// route's organization can judge it (authorizeBearer).
		err = errTokenOrgScoped
	}
	if err != nil {
		if !protected {
			return true, nil
		}
		if errors.Is(err, errUnavailable) {
			h.logger.Error("cannot verify an access token: Logto's keys are unavailable", errField(err))
			return false, caddyhttp.Error(http.StatusBadGateway, err)
		}
		h.logger.Debug("access token rejected", errField(err))
		h.client.metrics.bearerToken(bearerInvalidToken)
		return false, bearerFail(w, http.StatusUnauthorized, "invalid_token", rejectionText(err), "")
	}
	if protected {
		if err := h.authorizeBearer(w, repl, tok); err != nil {
			h.client.metrics.bearerRefused(err)
			return false, err
		}
	}
	if st.user != nil {
		// An earlier block named the browser's session user; the token's
		// identity replaces it, headers included.
		dropIdentity(r, repl, st)
	}
	st.bearer, st.user, st.client = tok, nil, nil
	h.client.metrics.bearerToken(bearerAccepted)
	// The accepted token goes on as the client sent it, should another
	// block of the application have stripped or set that header (this
	// block's own header option may still set it).
	r.Header["Authorization"] = st.auth
	if !first {
		// An earlier logto handler may have set these; the token's win.
		// (The first handler's are served by the placeholder hook, which
		// costs no map.)
		repl.Set("http.auth.logto.access_token", tok.raw)
		repl.Set("http.auth.logto.organization_id", tok.org)
	}
	h.setHeaders(r, repl, st)
	return true, nil
}

// acceptsAudience reports whether a token's audience is one the block
// accepts.
func (h *Handler) acceptsAudience(aud string) bool {
	if strings.HasPrefix(aud, organizationAudience) {
		return slices.Contains(h.Bearer, organizationIndicator) && validID(aud[len(organizationAudience):])
	}
	return slices.Contains(h.Bearer, aud)
}

// authorizeBearer checks the route's organization and the rules against a
// verified token. Rules
// read the token's own claims: its scope for permissions (machine-to-
// machine roles arrive as scopes), organization_id or an organization
// audience for the organization, any claim for the rest.
func (h *Handler) authorizeBearer(w http.ResponseWriter, repl *caddy.Replacer, tok *bearerToken) error {
	org := tok.org
	if h.Organization != "" {
		if route := repl.ReplaceAll(h.Organization, ""); !validID(route) || org != route {
			return bearerFail(w, http.StatusUnauthorized, "invalid_token", "the access token is not for this organization", "")
		}
	}
	who := subject{claim: func(name string) any { return tok.claims[name] }, orgs: tok.orgs, scopes: tok.scopes, org: org}
	for _, rule := range h.Require {
		switch {
		case ruleMet(rule, who):
		case rule.Kind == "scope":
			return h.bearerForbidden(w, tok, "require scope not met", strings.Join(rule.Values, " "))
		default:
			return h.bearerForbidden(w, tok, "require "+rule.Kind+" not met", "")
		}
	}
	return nil
}

func (h *Handler) bearerForbidden(w http.ResponseWriter, tok *bearerToken, reason, scope string) error {
	h.logger.Info("access token denied", zap.String("user_id", tok.sub), zap.String("reason", reason))
	return bearerFail(w, http.StatusForbidden, "insufficient_scope", "the access token lacks a permission this route requires", scope)
}

// bearerFail answers per RFC 6750 section 3: the challenge, with an error
// code when the request brought a token, as a Caddy error so handle_errors
// applies. Nothing of the token is echoed.
func bearerFail(w http.ResponseWriter, status int, code, desc, scope string) error {
	v := bearerChallenge
	if code != "" {
		v += `, error="` + code + `"`
	}
	if desc != "" {
		v += `, error_description="` + quotable(desc) + `"`
	}
	if scope != "" {
		v += `, scope="` + quotable(scope) + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	w.Header().Set("Cache-Control", "no-store")
	msg := "logto: bearer: " + desc
	if desc == "" {
		msg = "logto: bearer: an access token is required"
	}
	return caddyhttp.Error(status, errors.New(msg))
}

// quotable keeps a value inside a quoted-string (RFC 6750 forbids '"' and
// '\' in error_description and scope anyway).
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}

// maxBearerToken bounds the access tokens looked at; Logto's are under 1 KB.
const maxBearerToken = 8 << 10

// maxCachedBearer bounds the verified-token cache (about 1 KB a token).
// Only tokens whose signature verified enter it, so forged tokens cannot
// grow it; a miss costs one signature check.
const maxCachedBearer = 20000

// bearerToken is a verified Logto access token, shared read-only by the
// requests that present it.
type bearerToken struct {
	raw    string // the token, for {http.auth.logto.access_token}
	sub    string
	id     any // sub, boxed once for the placeholder
	aud    string
	org    string // organization_id claim, or the id of an organization audience
	exp    int64
	scopes []string // the scope claim; absent and "" both mean none
	claims map[string]any
	values map[string]any // claims as placeholder strings
}

// placeholder serves {http.auth.user.*} for a bearer request: the token's
// sub as id, its other claims (client_id, scope, organization_id, ...)
// by name; the token's own protocol claims (iss, aud, exp, ...) are empty.
// orgs is the organization the token is for, as require organization
// reads it: a token belongs to at most one.
func (t *bearerToken) orgs() []string {
	if t.org == "" {
		return nil
	}
	return []string{t.org}
}

// orgScoped reports whether the token is for an API but scoped to an
// organization (Logto's resource plus organization_id grant), as opposed
// to a global API token or an organization token.
func (t *bearerToken) orgScoped() bool {
	return t.org != "" && !strings.HasPrefix(t.aud, organizationAudience)
}

func (t *bearerToken) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		switch key {
		case "http.auth.logto.id_token":
			return "", true
		case "http.auth.logto.organization_id":
			return t.org, true
		case "http.auth.logto.access_token":
			return t.raw, true
		}
		return nil, false
	}
	if name == "id" {
		return t.id, true
	}
	if v, ok := t.values[name]; ok {
		return v, true
	}
	return "", true
}

// tokenRejected is why an access token is not accepted; its text goes to
// the client as error_description, so it never holds token content.
type tokenRejected string

func (e tokenRejected) Error() string { return "logto: access token rejected: " + string(e) }

func rejectionText(err error) string {
	var tr tokenRejected
	if errors.As(err, &tr) {
		return "the access token " + string(tr)
	}
	return "the access token is not valid"
}

var (
	errTokenMalformed = tokenRejected("is malformed")
	errTokenType      = tokenRejected("is not an access token (typ at+jwt)")
	errTokenAlg       = tokenRejected("is signed with an algorithm the tenant does not use")
	errTokenIssuer    = tokenRejected("is from another issuer")
	errTokenAudience  = tokenRejected("is not for this API resource")
	errTokenExpired   = tokenRejected("is expired")
	errTokenEarly     = tokenRejected("is not valid yet")
	errTokenSignature = tokenRejected("signature does not verify")
	errTokenOrgScoped = tokenRejected("is scoped to an organization, and this route names none")
)

// sigChecks counts signature checks of access tokens, for the test that
// a flood of forgeries costs at most one each.
var sigChecks atomic.Int64

// verifyBearer returns the verified token for raw, from the cache when it
// was verified before. accept says whether the audience is one the block
// takes; it is asked before the signature is checked, so a token for
// another API costs no signature check.
func (c *client) verifyBearer(ctx context.Context, raw string, accept func(aud string) bool) (*bearerToken, error) {
	if len(raw) > maxBearerToken {
		return nil, errTokenMalformed
	}
	now := c.now().Unix()
	leeway := int64(clockSkew / time.Second)
	key := c.bearer.key(raw)
	if t := c.bearer.get(key, raw); t != nil {
		if now > t.exp+leeway {
			c.bearer.remove(key)
			return nil, errTokenExpired
		}
		if !accept(t.aud) {
			return nil, errTokenAudience
		}
		return t, nil
	}

	p := c.idp
	jws, err := parseJWS(raw)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(jws.header.Typ, "at+jwt") && !strings.EqualFold(jws.header.Typ, "application/at+jwt") {
		return nil, errTokenType
	}
	if len(jws.header.Crit) > 0 {
		return nil, errTokenMalformed
	}
	t, err := newBearerToken(jws.claims)
	if err != nil {
		return nil, err
	}
	if iss, _ := jws.claims["iss"].(string); iss != p.issuer {
		return nil, errTokenIssuer
	}
	if !accept(t.aud) {
		return nil, errTokenAudience
	}
	if now > t.exp+leeway {
		return nil, errTokenExpired
	}
	for _, name := range []string{"nbf", "iat"} {
		if v, ok := jws.claims[name]; ok {
			n, err := numberClaim(v)
			if err != nil {
				return nil, errTokenMalformed
			}
			if n > now+leeway {
				return nil, errTokenEarly
			}
		}
	}

	keys, algs, err := p.bearerKeys(ctx)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(algs, jws.header.Alg) {
		return nil, errTokenAlg
	}
	pub, err := keys.keyByID(ctx, jws.header.Kid)
	if errors.Is(err, errBadSignature) {
		return nil, errTokenSignature
	}
	if err != nil {
		return nil, err
	}
	if !verifySignature(ctx, raw, pub) {
		return nil, errTokenSignature
	}
	t.raw = raw
	c.bearer.put(key, t, now)
	return t, nil
}

// bearerKeys returns the tenant's key set and the signing algorithms it
// uses, after discovery.
func (p *provider) bearerKeys(ctx context.Context) (*keySet, []string, error) {
	if _, _, err := p.discover(ctx); err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	algs := p.md.IDTokenAlgs
	if len(algs) == 0 {
		algs = []string{"ES384", "RS256"}
	}
	return p.keys, algs, nil
}

// newBearerToken reads the claims of an access token (not yet verified).
func newBearerToken(claims map[string]any) (*bearerToken, error) {
	t := &bearerToken{claims: claims}
	t.sub, _ = claims["sub"].(string)
	if t.sub == "" {
		return nil, errTokenMalformed
	}
	if _, ok := claims["client_id"].(string); !ok {
		return nil, errTokenMalformed
	}
	t.id = t.sub
	switch aud := claims["aud"].(type) {
	case string:
		t.aud = aud
	case []any:
		// RFC 9068 allows a list; Logto sends one string. One audience
		// only, so "the token's API" stays one thing.
		if len(aud) != 1 {
			return nil, errTokenAudience
		}
		t.aud, _ = aud[0].(string)
	}
	if t.aud == "" {
		return nil, errTokenAudience
	}
	exp, ok := claims["exp"]
	if !ok {
		return nil, errTokenMalformed
	}
	var err error
	if t.exp, err = numberClaim(exp); err != nil {
		return nil, errTokenMalformed
	}
	// A machine-to-machine token granted nothing has no scope claim; a
	// user's has "": both mean no permissions.
	switch s := claims["scope"].(type) {
	case nil:
	case string:
		t.scopes = strings.Fields(s)
	default:
		return nil, errTokenMalformed
	}
	if org, ok := claims["organization_id"]; ok {
		if t.org, ok = org.(string); !ok || !validID(t.org) {
			return nil, errTokenMalformed
		}
	} else if id, ok := strings.CutPrefix(t.aud, organizationAudience); ok {
		t.org = id
	}
	t.values = placeholderValues(claims)
	return t, nil
}

// jws is a compact JWS's header and claims, decoded, not yet verified.
type jws struct {
	header struct {
		Alg  string   `json:"alg"`
		Typ  string   `json:"typ"`
		Kid  string   `json:"kid"`
		Crit []string `json:"crit"`
	}
	claims map[string]any
}

func parseJWS(raw string) (*jws, error) {
	h, rest, ok1 := strings.Cut(raw, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") || h == "" || payload == "" || sig == "" {
		return nil, errTokenMalformed
	}
	hb, err1 := b64.DecodeString(h)
	pb, err2 := b64.DecodeString(payload)
	_, err3 := b64.DecodeString(sig)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errTokenMalformed
	}
	j := &jws{}
	if json.Unmarshal(hb, &j.header) != nil || j.header.Alg == "" {
		return nil, errTokenMalformed
	}
	dec := json.NewDecoder(strings.NewReader(string(pb)))
	dec.UseNumber()
	if dec.Decode(&j.claims) != nil || j.claims == nil || dec.More() {
		return nil, errTokenMalformed
	}
	return j, nil
}

// verifySignature checks raw's signature with pub, with go-jose as every
// other signature the module checks. The algorithm was checked against
// the tenant's before, and go-jose refuses none and a symmetric algorithm
// keyed with a public key.
func verifySignature(ctx context.Context, raw string, pub crypto.PublicKey) bool {
	sigChecks.Add(1)
	_, err := (&oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{pub}}).VerifySignature(ctx, raw)
	return err == nil
}

// bearerCache maps a hash of an access token to the token verified, until
// the token expires. The hash is maphash's, seeded per process (a
// cryptographic hash would cost more than the rest of the request); an
// entry is used only when its token equals the one presented, so a
// collision, found or not, can only cost a signature check.
type bearerCache struct {
	seed maphash.Seed
	mu   sync.RWMutex
	max  int
	m    map[uint64]*bearerToken
}

func newBearerCache(max int) *bearerCache {
	return &bearerCache{seed: maphash.MakeSeed(), max: max, m: make(map[uint64]*bearerToken)}
}

func (bc *bearerCache) key(raw string) uint64 { return maphash.String(bc.seed, raw) }

// get returns the verified token raw, if cached.
func (bc *bearerCache) get(key uint64, raw string) *bearerToken {
	bc.mu.RLock()
	t := bc.m[key]
	bc.mu.RUnlock()
	if t == nil || t.raw != raw {
		return nil
	}
	return t
}

func (bc *bearerCache) remove(key uint64) {
	bc.mu.Lock()
	delete(bc.m, key)
	bc.mu.Unlock()
}

// put adds a verified token. When full, expired tokens go first, then an
// arbitrary tenth: a dropped token only costs one more signature check.
func (bc *bearerCache) put(key uint64, t *bearerToken, now int64) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if len(bc.m) >= bc.max {
		for k, old := range bc.m {
			if old.exp < now {
				delete(bc.m, k)
			}
		}
		makeRoom(bc.m, bc.max)
	}
	bc.m[key] = t
}

// sweep drops the tokens that have expired, so the cache follows the
// tokens in use rather than filling up with old ones.
func (bc *bearerCache) sweep(now int64) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for k, t := range bc.m {
		if t.exp < now {
			delete(bc.m, k)
		}
	}
}

func (bc *bearerCache) len() int {
	bc.mu.RLock()
	defer bc.mu.RUnlock()
	return len(bc.m)
}
