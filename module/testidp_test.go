package logto

// A small in-process stand-in for Logto, enough for handler tests: the
// discovery document, a JWKS with an ES384 key made here, the token endpoint
// (authorization_code and refresh_token with resource and organization_id,
// rotation and reuse detection as Logto does them), userinfo, revocation and
// end-session. There is no authorization page: a test takes the redirect to
// /oidc/auth and has the fake issue a code bound to what it asked for.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is the time seen by a handler and its fake IdP, so a test can
// age sessions, tokens and attempts without sleeping.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Now().Truncate(time.Second)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Failure modes of the fake's token endpoint.
const (
	idpOK           int32 = iota
	idp500                // 500 with an HTML body
	idpGarbage            // 200 with a body that is not JSON
	idpSlow               // answers after slowDelay (longer than the client waits)
	idpInvalidGrant       // 400 invalid_grant
)

// oauthRefusal is an OAuth error answer of the token endpoint.
type oauthRefusal struct {
	status     int
	code, desc string
}

type fakeGrant struct {
	id        string
	sub       string
	scopes    []string
	resources []string
	revoked   bool
}

type fakeCode struct {
	grant       *fakeGrant
	redirectURI string
	challenge   string
	nonce       string
	used        bool
	// idToken, when set, replaces the ID token the code exchange returns
	// (hostile tokens: wrong nonce, audience, issuer, key, algorithm).
	idToken func(claims map[string]any) string
}

type fakeRefresh struct {
	grant  *fakeGrant
	usedAt time.Time // zero until rotated away
}

// fakeIdP is the stand-in. Its knobs are set before the requests they
// affect; counters are read after.
type fakeIdP struct {
	t         testing.TB
	srv       *httptest.Server
	issuer    string
	appID     string
	appSecret string
	keys      atomic.Pointer[[]idpKey] // signing key first; the JWKS has all
	clock     *testClock

	// knobs
	rotate       bool          // rotate refresh tokens on every use (public-client style)
	reuseGrace   time.Duration // Logto's reuse grace; 0 makes any reuse fatal
	idTTL        time.Duration // ID token lifetime, default 1h
	issSupported bool          // authorization_response_iss_parameter_supported
	refreshDelay time.Duration // delay on refresh grants, to widen races
	slowDelay    time.Duration // how long idpSlow waits
	failMode     atomic.Int32  // idpOK, idp500, ...
	// refuseWith, when set, makes the token endpoint answer every grant
	// with this OAuth error (checked before failMode).
	refuseWith atomic.Pointer[oauthRefusal]
	down       atomic.Bool // every endpoint answers 503
	// hold, when set, makes every request wait until the channel is
	// closed (or its client goes away): a Logto that hangs.
	hold     atomic.Pointer[chan struct{}]
	requests atomic.Int64 // every request, answered or not
	// permissions a resource (or "urn:logto:organization:<id>") grants the
	// user; a token carries those that were also asked for at sign-in.
	permissions map[string][]string

	mu          sync.Mutex
	users       map[string]map[string]any
	infoOnly    map[string][]string // claims of a user that only userinfo has
	codes       map[string]*fakeCode
	refresh     map[string]*fakeRefresh
	access      map[string]*fakeGrant
	secrets     []string // everything issued: codes and tokens
	refreshLog  []url.Values
	revokedLog  []url.Values
	endSessions []url.Values
	authErrors  []string // why requests to the token endpoint were refused

	discoveryHits  atomic.Int64
	jwksHits       atomic.Int64
	codeGrants     atomic.Int64
	refreshGrants  atomic.Int64
	userinfoHits   atomic.Int64
	revocationHits atomic.Int64
}

var idpSeq atomic.Int64

// newFakeIdP starts a fake Logto tenant with one user, "user-1", for an
// application with an id unique to the test.
func newFakeIdP(t testing.TB) *fakeIdP {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := idpSeq.Add(1)
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	idp := &fakeIdP{
		t:            t,
		appID:        fmt.Sprintf("app-%d-%s", n, truncate(name, 40)),
		appSecret:    "secret-" + randomString(18),
		clock:        newTestClock(),
		idTTL:        time.Hour,
		issSupported: true,
		slowDelay:    3 * time.Second,
		permissions:  map[string][]string{},
		users:        map[string]map[string]any{},
		infoOnly:     map[string][]string{},
		codes:        map[string]*fakeCode{},
		refresh:      map[string]*fakeRefresh{},
		access:       map[string]*fakeGrant{},
	}
	// Logto's kids are 43 characters (a JWK thumbprint).
	idp.keys.Store(&[]idpKey{{key: key, kid: randomString(32)}})
	idp.addUser("user-1", map[string]any{
		"name":               "Ada Lovelace",
		"username":           "ada",
		"picture":            nil,
		"email":              "ada@example.com",
		"email_verified":     true,
		"roles":              []any{"admin", "editor"},
		"organizations":      []any{"org1", "org2"},
		"organization_roles": []any{"org1:admin", "org2:viewer"},
		"created_at":         json.Number("1700000000000"),
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oidc/.well-known/openid-configuration", idp.serveDiscovery)
	mux.HandleFunc("GET /oidc/jwks", idp.serveJWKS)
	mux.HandleFunc("POST /oidc/token", idp.serveToken)
	mux.HandleFunc("GET /oidc/me", idp.serveUserinfo)
	mux.HandleFunc("POST /oidc/token/revocation", idp.serveRevocation)
	mux.HandleFunc("GET /oidc/session/end", idp.serveEndSession)
	idp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idp.requests.Add(1)
		if hold := idp.hold.Load(); hold != nil {
			select {
			case <-*hold:
			case <-r.Context().Done():
			}
		}
		if idp.down.Load() {
			http.Error(w, "<html>502 Bad Gateway</html>", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	idp.issuer = idp.srv.URL + "/oidc"
	t.Cleanup(idp.srv.Close)
	registerLogSecrets(idp.appSecret)
	return idp
}

// addUser adds or replaces a user; claims named in infoOnly are left out of
// ID tokens (a tenant without extended ID token claims) but userinfo has
// them.
func (idp *fakeIdP) addUser(sub string, claims map[string]any, infoOnly ...string) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	idp.users[sub] = claims
	idp.infoOnly[sub] = infoOnly
}

func (idp *fakeIdP) now() time.Time { return idp.clock.Now() }

func (idp *fakeIdP) remember(s string) string {
	idp.secrets = append(idp.secrets, s)
	registerLogSecrets(s)
	return s
}

// issued returns every code and token the fake has handed out.
func (idp *fakeIdP) issued() []string {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	return slices.Clone(idp.secrets)
}

func (idp *fakeIdP) refreshRequests() []url.Values {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	return slices.Clone(idp.refreshLog)
}

func (idp *fakeIdP) revocations() []url.Values {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	return slices.Clone(idp.revokedLog)
}

func (idp *fakeIdP) tokenRefusals() []string {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	return slices.Clone(idp.authErrors)
}

// mustRefreshCleanly checks that the module made want refresh grants in
// all and that Logto refused none of its token requests: a refresh token
// rotated away and presented again would be refused, and would cost the
// user the whole grant at Logto.
func (idp *fakeIdP) mustRefreshCleanly(t testing.TB, want int64, why string) {
	t.Helper()
	if n := idp.refreshGrants.Load(); n != want {
		t.Errorf("refresh grants = %d, want %d%s", n, want, why)
	}
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Fatalf("Logto refused (a rotated refresh token presented again?): %v", r)
	}
}

// dropGrantedResources plays an API resource deleted in Logto Console
// after the sign-in: every grant loses its resources, so a refresh naming
// one is refused with invalid_target.
func (idp *fakeIdP) dropGrantedResources() {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	for _, rt := range idp.refresh {
		rt.grant.resources = nil
	}
}

// issueCode plays the user signing in at Logto: it reads the authorization
// request the module redirected to and returns a code bound to its
// redirect_uri, PKCE challenge and nonce, for user sub.
func (idp *fakeIdP) issueCode(authURL *url.URL, sub string) string {
	return idp.issueCodeWith(authURL, sub, nil)
}

// issueCodeWith is issueCode with the ID token replaced by what idToken
// makes of the claims a genuine one would carry.
func (idp *fakeIdP) issueCodeWith(authURL *url.URL, sub string, idToken func(claims map[string]any) string) string {
	idp.t.Helper()
	if authURL == nil || authURL.Scheme+"://"+authURL.Host+authURL.Path != idp.srv.URL+"/oidc/auth" {
		idp.t.Fatalf("issueCode: %v is not this IdP's authorization endpoint", authURL)
	}
	q := authURL.Query()
	if q.Get("client_id") != idp.appID {
		idp.t.Fatalf("issueCode: client_id %q, want %q", q.Get("client_id"), idp.appID)
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		idp.t.Fatalf("issueCode: no S256 PKCE challenge in %v", q)
	}
	scopes := strings.Fields(q.Get("scope"))
	// node-oidc-provider drops offline_access unless prompt has consent.
	if !strings.Contains(q.Get("prompt"), "consent") {
		scopes = slices.DeleteFunc(scopes, func(s string) bool { return s == "offline_access" })
	}
	idp.mu.Lock()
	defer idp.mu.Unlock()
	if _, ok := idp.users[sub]; !ok {
		idp.t.Fatalf("issueCode: no user %q", sub)
	}
	code := idp.remember(randomString(32))
	idp.codes[code] = &fakeCode{
		grant:       &fakeGrant{id: randomString(8), sub: sub, scopes: scopes, resources: q["resource"]},
		redirectURI: q.Get("redirect_uri"),
		challenge:   q.Get("code_challenge"),
		nonce:       q.Get("nonce"),
		idToken:     idToken,
	}
	return code
}

// revokeUser revokes every grant of sub, as Console does when an admin
// signs a user out or suspends them.
func (idp *fakeIdP) revokeUser(sub string) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	for _, rt := range idp.refresh {
		if rt.grant.sub == sub {
			rt.grant.revoked = true
		}
	}
	for _, g := range idp.access {
		if g.sub == sub {
			g.revoked = true
		}
	}
}

// wasIssued reports whether the fake handed out this code.
func (idp *fakeIdP) wasIssued(code string) bool {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	_, ok := idp.codes[code]
	return ok
}

func (idp *fakeIdP) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	idp.discoveryHits.Add(1)
	base := idp.srv.URL + "/oidc"
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         idp.issuer,
		"authorization_endpoint":                         base + "/auth",
		"token_endpoint":                                 base + "/token",
		"userinfo_endpoint":                              base + "/me",
		"jwks_uri":                                       base + "/jwks",
		"end_session_endpoint":                           base + "/session/end",
		"revocation_endpoint":                            base + "/token/revocation",
		"introspection_endpoint":                         base + "/token/introspection",
		"id_token_signing_alg_values_supported":          []string{"ES384"},
		"code_challenge_methods_supported":               []string{"S256"},
		"authorization_response_iss_parameter_supported": idp.issSupported,
		"backchannel_logout_supported":                   true,
		"backchannel_logout_session_supported":           true,
		"token_endpoint_auth_methods_supported":          []string{"client_secret_basic", "client_secret_post", "none"},
	})
}

func (idp *fakeIdP) serveJWKS(w http.ResponseWriter, r *http.Request) {
	idp.jwksHits.Add(1)
	var keys []any
	for _, k := range *idp.keys.Load() {
		keys = append(keys, ecJWK(&k.key.PublicKey, k.kid))
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func ecJWK(pub *ecdsa.PublicKey, kid string) map[string]any {
	b, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	size := (len(b) - 1) / 2
	return map[string]any{
		"kty": "EC", "crv": pub.Curve.Params().Name, "kid": kid, "alg": "ES384", "use": "sig",
		"x": base64.RawURLEncoding.EncodeToString(b[1 : 1+size]),
		"y": base64.RawURLEncoding.EncodeToString(b[1+size:]),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// clientAuthenticated checks client_secret_basic: id and secret are
// form-encoded before Basic encoding (RFC 6749 section 2.3.1).
func (idp *fakeIdP) clientAuthenticated(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	return err1 == nil && err2 == nil && id == idp.appID && secret == idp.appSecret
}

func (idp *fakeIdP) refuse(w http.ResponseWriter, status int, code, why string) {
	idp.mu.Lock()
	idp.authErrors = append(idp.authErrors, why)
	idp.mu.Unlock()
	oauthError(w, status, code, why)
}

func (idp *fakeIdP) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		idp.refuse(w, http.StatusBadRequest, "invalid_request", "form does not parse")
		return
	}
	if !idp.clientAuthenticated(r) {
		idp.refuse(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		idp.codeGrants.Add(1)
		if !idp.failure(w, r) {
			idp.redeemCode(w, r)
		}
	case "refresh_token":
		idp.refreshGrants.Add(1)
		idp.mu.Lock()
		idp.refreshLog = append(idp.refreshLog, r.PostForm)
		idp.mu.Unlock()
		if idp.refreshDelay > 0 {
			time.Sleep(idp.refreshDelay)
		}
		if !idp.failure(w, r) {
			idp.redeemRefresh(w, r)
		}
	default:
		idp.refuse(w, http.StatusBadRequest, "unsupported_grant_type", "grant type")
	}
}

// failure answers per the failure mode and reports whether it did.
func (idp *fakeIdP) failure(w http.ResponseWriter, r *http.Request) bool {
	if ref := idp.refuseWith.Load(); ref != nil {
		oauthError(w, ref.status, ref.code, ref.desc)
		return true
	}
	switch idp.failMode.Load() {
	case idp500:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "<html>Internal Server Error</html>")
	case idpGarbage:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token": "tru`)
	case idpSlow:
		select {
		case <-r.Context().Done():
		case <-time.After(idp.slowDelay):
		}
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "slow")
	case idpInvalidGrant:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "grant request is invalid")
	default:
		return false
	}
	return true
}

func (idp *fakeIdP) redeemCode(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	idp.mu.Lock()
	c := idp.codes[f.Get("code")]
	switch {
	case c == nil:
		idp.mu.Unlock()
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "unknown code")
		return
	case c.used:
		// A code is good once; its replay revokes what it granted.
		c.grant.revoked = true
		idp.mu.Unlock()
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "code already used")
		return
	}
	c.used = true
	idp.mu.Unlock()
	if f.Get("redirect_uri") != c.redirectURI {
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
		return
	}
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
		return
	}
	if id := f.Get("client_id"); id != "" && id != idp.appID {
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "client_id mismatch")
		return
	}
	claims := idp.idClaims(c.grant.sub, c.nonce)
	var idt string
	if c.idToken != nil {
		idt = c.idToken(claims)
	} else {
		idt = idp.sign(claims)
	}
	writeJSON(w, http.StatusOK, idp.tokens(c.grant, idt, nil))
}

// tokens builds a token response for a grant: an opaque access token, the
// ID token, and a new refresh token when offline_access was granted (or
// refresh, when given, the one to return).
func (idp *fakeIdP) tokens(g *fakeGrant, idToken string, refresh *string) map[string]any {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	at := idp.remember(randomString(32)[:43])
	idp.access[at] = g
	resp := map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   3600,
		"id_token":     idToken,
		"scope":        strings.Join(g.scopes, " "),
	}
	switch {
	case refresh != nil:
		resp["refresh_token"] = *refresh
	case slices.Contains(g.scopes, "offline_access"):
		rt := idp.remember(randomString(32))
		idp.refresh[rt] = &fakeRefresh{grant: g}
		resp["refresh_token"] = rt
	}
	return resp
}

func (idp *fakeIdP) redeemRefresh(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	now := idp.now()
	idp.mu.Lock()
	rt := idp.refresh[f.Get("refresh_token")]
	switch {
	case rt == nil:
		idp.mu.Unlock()
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "unknown refresh token")
		return
	case rt.grant.revoked:
		idp.mu.Unlock()
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "grant revoked")
		return
	case !rt.usedAt.IsZero() && now.Sub(rt.usedAt) > idp.reuseGrace:
		// Logto: a rotated refresh token presented again revokes the whole
		// grant, the newest token included.
		rt.grant.revoked = true
		idp.mu.Unlock()
		idp.refuse(w, http.StatusBadRequest, "invalid_grant", "refresh token already used")
		return
	}
	g := rt.grant
	users := idp.users[g.sub]
	idp.mu.Unlock()

	resource, org := f.Get("resource"), f.Get("organization_id")
	if resource != "" && !slices.Contains(g.resources, resource) {
		idp.refuse(w, http.StatusBadRequest, "invalid_target", "resource not granted")
		return
	}
	if org != "" {
		orgs, _ := users["organizations"].([]any)
		if !slices.Contains(g.scopes, "urn:logto:scope:organizations") || !slices.Contains(orgs, any(org)) {
			idp.refuse(w, http.StatusForbidden, "invalid_target", "not a member of the organization")
			return
		}
	}

	var next *string
	idp.mu.Lock()
	if idp.rotate {
		rt.usedAt = now
		n := idp.remember(randomString(32))
		idp.refresh[n] = &fakeRefresh{grant: g}
		next = &n
	} else {
		same := f.Get("refresh_token")
		next = &same
	}
	idp.mu.Unlock()

	resp := idp.tokens(g, idp.sign(idp.idClaims(g.sub, "")), next)
	if resource != "" || org != "" {
		aud := resource
		perms := idp.permissions[resource]
		if org != "" {
			perms = idp.permissions["urn:logto:organization:"+org]
			if resource == "" {
				aud = "urn:logto:organization:" + org
			}
		}
		var scope []string
		for _, p := range perms {
			if slices.Contains(g.scopes, p) {
				scope = append(scope, p)
			}
		}
		iat := now.Unix()
		claims := map[string]any{
			"iss": idp.issuer, "sub": g.sub, "aud": aud, "client_id": idp.appID,
			"iat": iat, "exp": iat + 3600, "jti": randomString(12), "scope": strings.Join(scope, " "),
		}
		if org != "" {
			claims["organization_id"] = org
		}
		idp.mu.Lock()
		resp["access_token"] = idp.remember(signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": idp.kid()}, claims, es384Signer(idp.signingKey())))
		idp.mu.Unlock()
		resp["scope"] = strings.Join(scope, " ")
	}
	writeJSON(w, http.StatusOK, resp)
}

// idClaims are the claims of a genuine ID token for sub.
func (idp *fakeIdP) idClaims(sub, nonce string) map[string]any {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	now := idp.now().Unix()
	claims := map[string]any{
		"iss": idp.issuer, "aud": idp.appID, "sub": sub,
		"iat": now, "exp": now + int64(idp.idTTL/time.Second), "at_hash": randomString(16),
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	for k, v := range idp.users[sub] {
		if !slices.Contains(idp.infoOnly[sub], k) {
			claims[k] = v
		}
	}
	return claims
}

func (idp *fakeIdP) serveUserinfo(w http.ResponseWriter, r *http.Request) {
	idp.userinfoHits.Add(1)
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	idp.mu.Lock()
	g := idp.access[token]
	var claims map[string]any
	if ok && g != nil && !g.revoked {
		claims = map[string]any{"sub": g.sub}
		for k, v := range idp.users[g.sub] {
			claims[k] = v
		}
	}
	idp.mu.Unlock()
	if claims == nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		oauthError(w, http.StatusUnauthorized, "invalid_token", "access token invalid")
		return
	}
	writeJSON(w, http.StatusOK, claims)
}

func (idp *fakeIdP) serveRevocation(w http.ResponseWriter, r *http.Request) {
	idp.revocationHits.Add(1)
	if err := r.ParseForm(); err != nil {
		idp.refuse(w, http.StatusBadRequest, "invalid_request", "form does not parse")
		return
	}
	if !idp.clientAuthenticated(r) {
		idp.refuse(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	idp.mu.Lock()
	idp.revokedLog = append(idp.revokedLog, r.PostForm)
	if rt := idp.refresh[r.PostForm.Get("token")]; rt != nil {
		rt.grant.revoked = true
	}
	idp.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (idp *fakeIdP) serveEndSession(w http.ResponseWriter, r *http.Request) {
	idp.mu.Lock()
	idp.endSessions = append(idp.endSessions, r.URL.Query())
	idp.mu.Unlock()
	w.Header().Set("Content-Type", "text/html")
	fmt.Fprint(w, `<form method="post" action="/oidc/session/end/confirm"></form>`)
}

// sign makes a compact JWS with the tenant's ES384 key.
func (idp *fakeIdP) sign(claims map[string]any) string {
	return signJWT(map[string]any{"alg": "ES384", "typ": "JWT", "kid": idp.kid()}, claims, es384Signer(idp.signingKey()))
}

// logoutClaims are the claims of a genuine back-channel logout token for
// sub.
func (idp *fakeIdP) logoutClaims(sub string) map[string]any {
	return map[string]any{
		"iss": idp.issuer, "aud": idp.appID, "sub": sub, "iat": idp.now().Unix(), "jti": randomString(12),
		"events": map[string]any{backchannelEvent: map[string]any{}},
	}
}

// logoutToken is a genuine back-channel logout token for sub, changed by
// edit (which may delete claims).
func (idp *fakeIdP) logoutToken(sub string, edit func(map[string]any)) string {
	claims := idp.logoutClaims(sub)
	if edit != nil {
		edit(claims)
	}
	return idp.sign(claims)
}

type idpKey struct {
	key *ecdsa.PrivateKey
	kid string
}

func (idp *fakeIdP) kid() string                   { return (*idp.keys.Load())[0].kid }
func (idp *fakeIdP) signingKey() *ecdsa.PrivateKey { return (*idp.keys.Load())[0].key }

// rotateKey makes a new signing key, keeping the previous one in the JWKS
// (as Logto does when keys are rotated in Console) unless dropOld.
func (idp *fakeIdP) rotateKey(dropOld bool) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	keys := []idpKey{{key: key, kid: "kid-" + randomString(6)}}
	if !dropOld {
		keys = append(keys, *idp.keys.Load()...)
	}
	idp.keys.Store(&keys)
}

type jwsSigner func(signingInput []byte) []byte

func es384Signer(key *ecdsa.PrivateKey) jwsSigner {
	return func(in []byte) []byte {
		sum := sha512.Sum384(in)
		r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			panic(err)
		}
		sig := make([]byte, 96)
		r.FillBytes(sig[:48])
		s.FillBytes(sig[48:])
		return sig
	}
}

func hs256Signer(secret string) jwsSigner {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(in)
		return m.Sum(nil)
	}
}

func signJWT(header, claims map[string]any, sign jwsSigner) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(in))
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Hostile ID tokens, for issueCodeWith.

func (idp *fakeIdP) tokenEditedClaims(edit func(map[string]any)) func(map[string]any) string {
	return func(c map[string]any) string {
		edit(c)
		return idp.sign(c)
	}
}

func tokenSignedByUnknownKey(kid string) func(map[string]any) string {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return func(c map[string]any) string {
		return signJWT(map[string]any{"alg": "ES384", "typ": "JWT", "kid": kid}, c, es384Signer(key))
	}
}

func tokenAlgNone(c map[string]any) string {
	return signJWT(map[string]any{"alg": "none", "typ": "JWT"}, c, nil)
}

func (idp *fakeIdP) tokenHS256(c map[string]any) string {
	// Algorithm confusion: an HMAC keyed with something the attacker may
	// know (here the client secret, the classic choice).
	return signJWT(map[string]any{"alg": "HS256", "typ": "JWT", "kid": idp.kid()}, c, hs256Signer(idp.appSecret))
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
