package logto

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

const (
	bearerAPI = "https://api.example.test"
	testM2MID = "m2mapp0123456789abcde" // 21 lower-case letters and digits, as Logto's
)

// accessToken mints a Logto access token as the tenant would: a user's
// token for bearerAPI with scope "read:data", edited by edit (which may also
// change the header).
func (idp *fakeIdP) accessToken(edit func(header, claims map[string]any)) string {
	now := idp.now().Unix()
	header := map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": idp.kid()}
	claims := map[string]any{
		"jti": randomString(12), "sub": "user-1", "iat": now, "exp": now + 3600,
		"scope": "read:data", "client_id": "spa-app", "iss": idp.issuer, "aud": bearerAPI,
	}
	if edit != nil {
		edit(header, claims)
	}
	tok := signJWT(header, claims, es384Signer(idp.signingKey()))
	registerLogSecrets(tok)
	return tok
}

// m2mToken is a machine-to-machine token as Logto issues it: sub =
// client_id = the app's id, and no scope claim at all when its roles
// grant nothing of what it asked for.
func (idp *fakeIdP) m2mToken(scope string) string {
	return idp.accessToken(func(_, c map[string]any) {
		c["sub"], c["client_id"] = testM2MID, testM2MID
		if scope == "" {
			delete(c, "scope")
		} else {
			c["scope"] = scope
		}
	})
}

func bearer(tok string) reqOpt { return withHeader("Authorization", "Bearer "+tok) }

func bearerHarness(t *testing.T, configure func(h *Handler)) *harness {
	return newHarness(t, nil, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		if configure != nil {
			configure(h)
		}
	})
}

// placeholderOf reads a placeholder as the handler after logto saw it.
func placeholderOf(res *result, key string) string {
	repl := res.nextReq.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl.ReplaceAll("{"+key+"}", "")
}

// mustBearerFail checks an RFC 6750 failure: the status, the challenge
// with the error code (none for ""), no redirect, no cookie, and nothing
// served.
func mustBearerFail(t *testing.T, res *result, status int, code string) {
	t.Helper()
	res.mustHandlerError(t, status)
	www := res.rec.Header().Get("WWW-Authenticate")
	if !strings.HasPrefix(www, `Bearer realm="logto"`) {
		t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", www)
	}
	if code == "" && strings.Contains(www, "error=") {
		t.Errorf("WWW-Authenticate = %q, want no error code", www)
	}
	if code != "" && !strings.Contains(www, `error="`+code+`"`) {
		t.Errorf("WWW-Authenticate = %q, want error=%q", www, code)
	}
	if loc := res.rec.Header().Get("Location"); loc != "" {
		t.Errorf("redirected to %q", loc)
	}
	if sc := res.rec.Header().Values("Set-Cookie"); len(sc) > 0 {
		t.Errorf("set cookies %q", sc)
	}
}

func TestBearerUserAndMachineTokensAccepted(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) {
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}", "X-Client": "{http.auth.user.client_id}"}
	})
	user := hx.idp.accessToken(nil)
	// A client must not choose the identity the upstream sees.
	res := hx.serve("GET", "/api/data", nil, bearer(user), withHeader("X-User-Id", "forged"),
		withHeader("Logto-ID-Token", "forged"), withHeader("Cookie", "logto.1=x; theme=dark"))
	mustPass(t, res, "user-1")
	if got := res.nextReq.Header.Get("Logto-ID-Token"); got != "" {
		t.Errorf("a client's Logto-ID-Token reached the upstream: %q", got)
	}
	if got := res.nextReq.Header.Get("Authorization"); got != "Bearer "+user {
		t.Error("the client's Authorization header did not reach the upstream unchanged")
	}
	if got := res.nextReq.Header.Get("X-User-Id"); got != "user-1" {
		t.Errorf("X-User-Id = %q, want the token's sub", got)
	}
	if got := res.nextReq.Header.Get("Cookie"); strings.Contains(got, "logto") {
		t.Errorf("module cookies reached the upstream: %q", got)
	}
	for key, want := range map[string]string{
		"http.auth.user.client_id":        "spa-app",
		"http.auth.user.scope":            "read:data",
		"http.auth.logto.access_token":    user,
		"http.auth.logto.organization_id": "",
		"http.auth.logto.id_token":        "",
		"http.auth.user.iss":              "",
	} {
		if got := placeholderOf(res, key); got != want {
			t.Errorf("{%s} = %.40q, want %.40q", key, got, want)
		}
	}
	if len(res.setCookies(t)) > 0 {
		t.Error("a bearer request got a cookie")
	}

	m2m := hx.idp.m2mToken("")
	res = hx.serve("POST", "/api/data", nil, bearer(m2m))
	mustPass(t, res, testM2MID)
	if got := placeholderOf(res, "http.auth.user.scope"); got != "" {
		t.Errorf("{http.auth.user.scope} of a token without scope = %q", got)
	}
	if got := res.nextReq.Header.Get("X-Client"); got != testM2MID {
		t.Errorf("X-Client = %q, want the M2M app id", got)
	}
}

// TestBearerRejections: each way a stranger can present a token that is
// not a current access token of this tenant for this API is refused, with
// RFC 6750's status and challenge, never a redirect or a cookie.
func TestBearerRejections(t *testing.T) {
	hx := bearerHarness(t, nil)
	idp := hx.idp
	other := newFakeIdP(t)
	good := idp.accessToken(nil)
	pubBytes, _ := idp.signingKey().PublicKey.Bytes()
	cases := []struct {
		name   string
		opts   []reqOpt
		target string
		status int
		code   string
	}{
		// A token for another of the tenant's APIs must not open this one.
		{"another resource", []reqOpt{bearer(idp.accessToken(func(_, c map[string]any) { c["aud"] = "https://other.example.test" }))}, "", 401, "invalid_token"},
		// Another tenant's token (its own key and issuer).
		{"another issuer", []reqOpt{bearer(other.accessToken(nil))}, "", 401, "invalid_token"},
		// Our key, a claimed issuer of someone else.
		{"foreign iss claim", []reqOpt{bearer(idp.accessToken(func(_, c map[string]any) { c["iss"] = "https://evil.example/oidc" }))}, "", 401, "invalid_token"},
		{"expired", []reqOpt{bearer(idp.accessToken(func(_, c map[string]any) { c["exp"] = idp.now().Unix() - 120 }))}, "", 401, "invalid_token"},
		{"issued in the future", []reqOpt{bearer(idp.accessToken(func(_, c map[string]any) { c["iat"] = idp.now().Unix() + 600 }))}, "", 401, "invalid_token"},
		// alg none: no signature at all.
		{"alg none", []reqOpt{bearer(signJWT(map[string]any{"alg": "none", "typ": "at+jwt"}, map[string]any{"iss": idp.issuer, "aud": bearerAPI, "sub": "x", "client_id": "x", "exp": idp.now().Unix() + 60}, nil) + "x")}, "", 401, "invalid_token"},
		// Algorithm confusion: an HMAC keyed with the tenant's public key.
		{"HS256 with the public key", []reqOpt{bearer(signJWT(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": idp.kid()}, map[string]any{"iss": idp.issuer, "aud": bearerAPI, "sub": "x", "client_id": "x", "exp": idp.now().Unix() + 60}, hs256Signer(string(pubBytes))))}, "", 401, "invalid_token"},
		// An ID token (typ JWT, aud the app) is not an access token.
		{"ID token", []reqOpt{bearer(idp.sign(idp.idClaims("user-1", "")))}, "", 401, "invalid_token"},
		{"ID token with the API audience", []reqOpt{bearer(idp.accessToken(func(h, _ map[string]any) { h["typ"] = "JWT" }))}, "", 401, "invalid_token"},
		// Logto's refresh tokens are opaque.
		{"refresh token", []reqOpt{bearer(randomString(32)[:43])}, "", 401, "invalid_token"},
		{"truncated", []reqOpt{bearer(good[:len(good)-10])}, "", 401, "invalid_token"},
		{"signature of another token", []reqOpt{bearer(good[:strings.LastIndexByte(good, '.')] + idp.accessToken(nil)[strings.LastIndexByte(good, '.'):])}, "", 401, "invalid_token"},
		{"unknown key", []reqOpt{bearer(signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": "nope"}, map[string]any{"iss": idp.issuer, "aud": bearerAPI, "sub": "x", "client_id": "x", "exp": idp.now().Unix() + 60}, es384Signer(other.signingKey())))}, "", 401, "invalid_token"},
		{"no client_id", []reqOpt{bearer(idp.accessToken(func(_, c map[string]any) { delete(c, "client_id") }))}, "", 401, "invalid_token"},
		{"scope not a string", []reqOpt{bearer(idp.accessToken(func(_, c map[string]any) { c["scope"] = []string{"read:data"} }))}, "", 401, "invalid_token"},
		// RFC 6750 2.3 is not supported: URLs end up in logs.
		{"token in the query string", nil, "/api?access_token=" + good, 400, "invalid_request"},
		{"token in the query and the header", []reqOpt{bearer(good)}, "/api?access_token=" + good, 400, "invalid_request"},
		{"two Authorization headers", []reqOpt{bearer(good), bearer(good)}, "", 400, "invalid_request"},
		{"Bearer with no token", []reqOpt{withHeader("Authorization", "Bearer")}, "", 400, "invalid_request"},
		{"Bearer with blanks only", []reqOpt{withHeader("Authorization", "Bearer   ")}, "", 400, "invalid_request"},
		{"Bearer with extra parts", []reqOpt{withHeader("Authorization", "Bearer "+good+" extra")}, "", 400, "invalid_request"},
		{"Bearer with a comma", []reqOpt{withHeader("Authorization", "Bearer "+good+",x")}, "", 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				target = "/api"
			}
			res := hx.serve("GET", target, nil, append(tc.opts, fetchAPI())...)
			mustBearerFail(t, res, tc.status, tc.code)
		})
	}
	t.Run("lower-case scheme accepted", func(t *testing.T) {
		mustPass(t, hx.serve("GET", "/api", nil, withHeader("Authorization", "bearer "+good)), "user-1")
		mustPass(t, hx.serve("GET", "/api", nil, withHeader("Authorization", "BEARER "+good)), "user-1")
	})
	t.Run("navigation with a bad token is not redirected", func(t *testing.T) {
		res := hx.serve("GET", "/api", nil, navigation(), bearer(good[:20]))
		mustBearerFail(t, res, 401, "invalid_token")
	})
}

func TestBearerInsufficientScope(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) {
		h.Require = []Rule{{Kind: "scope", Values: []string{"write:data"}}}
	})
	for name, tok := range map[string]string{
		"user token with another permission": hx.idp.accessToken(nil),
		"user token with scope \"\"":         hx.idp.accessToken(func(_, c map[string]any) { c["scope"] = "" }),
		"M2M token without a scope claim":    hx.idp.m2mToken(""),
	} {
		res := hx.serve("GET", "/api", nil, bearer(tok))
		mustBearerFail(t, res, 403, "insufficient_scope")
		if www := res.rec.Header().Get("WWW-Authenticate"); !strings.Contains(www, `scope="write:data"`) {
			t.Errorf("%s: WWW-Authenticate = %q, want the missing scope", name, www)
		}
	}
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.m2mToken("read:data write:data"))), testM2MID)
}

// TestBearerOrganization: with organization on the block, a token must
// belong to the route's organization, so a member of one customer cannot
// use its token on another's subdomain.
func TestBearerOrganization(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) {
		h.Bearer = []string{bearerAPI, organizationIndicator}
		h.Organization = "{http.request.header.X-Org}"
		h.Require = []Rule{{Kind: "organization"}}
	})
	idp := hx.idp
	orgAPI := func(org string) string {
		return idp.accessToken(func(_, c map[string]any) { c["organization_id"] = org })
	}
	orgToken := func(org string) string {
		return idp.accessToken(func(_, c map[string]any) { c["aud"] = organizationAudience + org })
	}
	res := hx.serve("GET", "/api", nil, bearer(orgAPI("org1")), withHeader("X-Org", "org1"))
	mustPass(t, res, "user-1")
	if got := placeholderOf(res, "http.auth.logto.organization_id"); got != "org1" {
		t.Errorf("{http.auth.logto.organization_id} = %q", got)
	}
	mustPass(t, hx.serve("GET", "/api", nil, bearer(orgToken("org1")), withHeader("X-Org", "org1")), "user-1")
	mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(orgAPI("org2")), withHeader("X-Org", "org1")), 401, "invalid_token")
	mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(orgToken("org2")), withHeader("X-Org", "org1")), 401, "invalid_token")
	mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(idp.accessToken(nil)), withHeader("X-Org", "org1")), 401, "invalid_token")
	mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(orgAPI("org1"))), 401, "invalid_token")

	// Without "organization" among the indicators, organization tokens are
	// another audience.
	hx2 := bearerHarness(t, nil)
	mustBearerFail(t, hx2.serve("GET", "/api", nil, bearer(hx2.idp.accessToken(func(_, c map[string]any) { c["aud"] = organizationAudience + "org1" }))), 401, "invalid_token")
}

// TestOrganizationScopedTokenRefusedWithoutOrganization stops a member of
// an organization from spending their organization roles as global
// permissions. Logto issues a token for an API scoped to an organization
// (a refresh or client credentials grant with resource and
// organization_id): its aud is the API, its organization_id names the
// organization, and its scope holds what the caller's roles in that
// organization grant. A block without `organization` judged that scope as
// global, so whoever is admin of some organization (their own, say)
// passed `require scope write:data` on the whole API. Such a token is
// refused as not for this route (401 invalid_token, saying why) unless the
// block names the route's organization; organization tokens (aud
// urn:logto:organization:<id>), which only "bearer organization" accepts,
// are another matter.
func TestOrganizationScopedTokenRefusedWithoutOrganization(t *testing.T) {
	write := []Rule{{Kind: "scope", Values: []string{"write:data"}}}
	for name, configure := range map[string]func(h *Handler){
		"bearer API":              func(h *Handler) { h.Require = write },
		"bearer API organization": func(h *Handler) { h.Bearer, h.Require = []string{bearerAPI, organizationIndicator}, write },
		"bearer_only":             func(h *Handler) { h.BearerOnly, h.Require = true, write },
		"pass":                    func(h *Handler) { h.Pass = true },
	} {
		t.Run(name, func(t *testing.T) {
			hx := bearerHarness(t, configure)
			idp := hx.idp
			for who, tok := range map[string]string{
				"user": idp.accessToken(func(_, c map[string]any) { c["organization_id"], c["scope"] = "org1", "read:data write:data" }),
				"M2M": idp.accessToken(func(_, c map[string]any) {
					c["sub"], c["client_id"] = testM2MID, testM2MID
					c["organization_id"], c["scope"] = "org1", "read:data write:data"
				}),
			} {
				res := hx.serve("GET", "/api", nil, bearer(tok), fetchAPI())
				mustBearerFail(t, res, 401, "invalid_token")
				if www := res.rec.Header().Get("WWW-Authenticate"); !strings.Contains(www, `error_description="the access token is scoped to an organization`) {
					t.Errorf("%s: WWW-Authenticate = %q, want an error_description saying why", who, www)
				}
			}
			// A global token with the permission still opens the API.
			mustPass(t, hx.serve("GET", "/api", nil, bearer(idp.accessToken(func(_, c map[string]any) { c["scope"] = "write:data" }))), "user-1")
		})
	}

	// Naming the route's organization is how such tokens are taken: for
	// that organization only.
	hx := bearerHarness(t, func(h *Handler) { h.Organization, h.Require = "org1", write })
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.accessToken(func(_, c map[string]any) { c["organization_id"], c["scope"] = "org1", "write:data" }))), "user-1")
	mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(hx.idp.accessToken(func(_, c map[string]any) { c["organization_id"], c["scope"] = "org2", "write:data" }))), 401, "invalid_token")
}

func TestBearerOnlyWithoutAppCredentials(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) {
		h.AppID, h.AppSecret, h.BearerOnly = "", "", true
	})
	res := hx.serve("GET", "/api", nil, navigation())
	mustBearerFail(t, res, 401, "")
	// The flow endpoints are off: nothing signs in here.
	mustBearerFail(t, hx.serve("GET", "/logto/sign-in", nil, navigation()), 401, "")
	// A session cookie means nothing to a bearer_only block.
	mustBearerFail(t, hx.serve("GET", "/api", nil, withHeader("Cookie", "__Host-logto=abc")), 401, "")
	// Another scheme is no bearer credential.
	mustBearerFail(t, hx.serve("GET", "/api", nil, withHeader("Authorization", "Basic YTpi")), 401, "")
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.m2mToken(""))), testM2MID)

	for name, h := range map[string]*Handler{
		"bearer_only without bearer":    {Endpoint: hx.idp.srv.URL, BearerOnly: true},
		"bearer not a URI":              {Endpoint: hx.idp.srv.URL, BearerOnly: true, Bearer: []string{"api"}},
		"bearer twice":                  {Endpoint: hx.idp.srv.URL, BearerOnly: true, Bearer: []string{bearerAPI, bearerAPI}},
		"no app_id without bearer_only": {Endpoint: hx.idp.srv.URL, Bearer: []string{bearerAPI}},
	} {
		if err := h.Provision(testCaddyContext(t)); err == nil {
			t.Errorf("%s: provisioned", name)
		}
	}
}

// TestBearerMixedSite: one route serves browsers (cookie sessions, sign-in
// redirects) and API clients (bearer tokens) with the same rules.
func TestBearerMixedSite(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) {
		h.Require = []Rule{{Kind: "scope", Values: []string{"read:data"}}}
	})
	if hx.h.TokenResource != bearerAPI {
		t.Fatalf("token_resource = %q: browser users' permissions should come from a token for the bearer API", hx.h.TokenResource)
	}
	if !strings.Contains(strings.Join(hx.h.Scopes, " "), "read:data") {
		t.Errorf("sign-in scopes %q lack the rule's permission", hx.h.Scopes)
	}
	hx.idp.permissions[bearerAPI] = []string{"read:data"}
	b := hx.signedIn()
	res := hx.serve("GET", "/api", b, fetchAPI())
	mustPass(t, res, "user-1")
	mustPass(t, hx.serve("GET", "/api", nil, bearer(hx.idp.m2mToken("read:data"))), testM2MID)
	// Anonymous browser navigation: sign in, as before.
	hx.mustRedirectToAuth(t, hx.serve("GET", "/api", nil, navigation()))
	// Anonymous fetch: 401 offering both ways in.
	res = hx.serve("GET", "/api", nil, fetchAPI())
	res.mustHandlerError(t, 401)
	if www := strings.Join(res.rec.Header().Values("WWW-Authenticate"), "\n"); !strings.Contains(www, "Logto realm") || !strings.Contains(www, bearerChallenge) {
		t.Errorf("WWW-Authenticate = %q, want both challenges", www)
	}
	// A signed-in browser that also sends a bad token is judged on the token.
	mustBearerFail(t, hx.serve("GET", "/api", b, bearer("garbage")), 401, "invalid_token")
}

// TestBearerPassAndUnprotected: in pass mode a request without a token
// goes through anonymously, and one with a bad token is refused (the client
// asserted credentials that are not good). Outside the block's matcher a
// good token identifies the client and a bad one is ignored, as a bad
// cookie is; either way the client cannot choose its identity.
func TestBearerPassAndUnprotected(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) { h.BearerOnly, h.Pass = true, true })
	res := hx.serve("GET", "/", nil)
	if !res.next || placeholderOf(res, "http.auth.user.id") != "" {
		t.Fatal("pass mode without a token should go through anonymously")
	}
	mustPass(t, hx.serve("GET", "/", nil, bearer(hx.idp.accessToken(nil))), "user-1")
	mustBearerFail(t, hx.serve("GET", "/", nil, bearer("x.y.z")), 401, "invalid_token")

	hx = bearerHarness(t, func(h *Handler) {
		h.BearerOnly = true
		h.ProtectRaw = caddyhttp.RawMatcherSets{{"path": json.RawMessage(`["/api/*"]`)}}
	})
	mustBearerFail(t, hx.serve("GET", "/api/x", nil), 401, "")
	res = hx.serve("GET", "/public", nil, bearer("x.y.z"))
	if !res.next || res.err != nil || placeholderOf(res, "http.auth.user.id") != "" || placeholderOf(res, "http.auth.logto.access_token") != "" {
		t.Fatalf("outside the matcher a bad token should go through anonymously (err %v)", res.err)
	}
	res = hx.serve("GET", "/public", nil, bearer(hx.idp.accessToken(nil)))
	if !res.next || placeholderOf(res, "http.auth.user.id") != "user-1" {
		t.Fatal("outside the matcher a good token should identify the client")
	}
}

func TestBearerCredentials(t *testing.T) {
	for _, tc := range []struct {
		header []string
		query  string
		kind   credKind
	}{
		{nil, "", credNone},
		{[]string{"Basic YTpi"}, "", credNone},
		{[]string{"Bearer abc.def.ghi"}, "", credToken},
		{[]string{"bearer abc"}, "", credToken},
		{[]string{"Bearer abc=="}, "", credToken},
		{[]string{"Bearer  abc "}, "", credToken},
		{[]string{"Bearer"}, "", credMalformed},
		{[]string{"Bearer a b"}, "", credMalformed},
		{[]string{"Bearer a=b"}, "", credMalformed},
		{[]string{"Bearer a", "Bearer a"}, "", credMalformed},
		{[]string{"Basic YTpi", "Bearer a"}, "", credMalformed},
		{nil, "access_token=abc", credMalformed},
		{nil, "x=access_token", credNone},
		{[]string{"Bearer a"}, "access_token=a", credMalformed},
	} {
		r, _, _ := newRequest("GET", "/?"+tc.query, nil)
		for _, h := range tc.header {
			r.Header.Add("Authorization", h)
		}
		if got := bearerCredentials(r.Header["Authorization"], r); got.kind != tc.kind {
			t.Errorf("%q ?%s: kind %d, want %d", tc.header, tc.query, got.kind, tc.kind)
		}
	}
}

// Verifying access tokens: what a token costs, and the verified-token cache.

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

// TestBearerFloodKeepsValidTokensCached: the verified-token cache is full
// of genuine tokens (its bound), then comes a flood of distinct forged
// ones, under the tenant's kid and under unknown ones. Forged tokens never
// enter the cache, so it neither grows nor drops a genuine token to make
// room: every genuine one is still a cache hit afterwards (no signature
// check), and the flood cannot make API clients pay a signature check each.
func TestBearerFloodKeepsValidTokensCached(t *testing.T) {
	hx := bearerHarness(t, nil)
	idp := hx.idp
	const valid = 300
	hx.h.client.bearer = newBearerCache(valid)
	toks := make([]string, valid)
	for i := range toks {
		sub := fmt.Sprintf("client-%d", i)
		toks[i] = idp.accessToken(func(_, c map[string]any) { c["sub"] = sub })
		mustPass(t, hx.serve("GET", "/api", nil, bearer(toks[i])), sub)
	}
	attacker := newFakeIdP(t)
	for i := range 2 * valid {
		kid := idp.kid()
		if i%2 == 1 {
			kid = randomString(6)
		}
		forged := signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": kid},
			map[string]any{"iss": idp.issuer, "aud": bearerAPI, "sub": randomString(8), "client_id": "x", "exp": idp.now().Unix() + 60},
			es384Signer(attacker.signingKey()))
		mustBearerFail(t, hx.serve("GET", "/api", nil, bearer(forged)), 401, "invalid_token")
	}
	if n := hx.h.client.bearer.len(); n != valid {
		t.Errorf("cache holds %d tokens after the flood, want the %d genuine ones", n, valid)
	}
	before := sigChecks.Load()
	for i, tok := range toks {
		mustPass(t, hx.serve("GET", "/api", nil, bearer(tok)), fmt.Sprintf("client-%d", i))
	}
	if n := sigChecks.Load() - before; n != 0 {
		t.Errorf("%d of %d genuine tokens were verified again after the flood, want all cache hits", n, valid)
	}
}

// TestBearerCacheSweptAfterExpiry: expired access tokens leave the cache
// with the client's sweep, not only when the cache is full or the token
// comes back.
func TestBearerCacheSweptAfterExpiry(t *testing.T) {
	hx := bearerHarness(t, nil)
	tok := hx.idp.accessToken(func(_, c map[string]any) { c["exp"] = hx.idp.now().Unix() + 300 })
	mustPass(t, hx.serve("GET", "/api", nil, bearer(tok)), "user-1")
	hx.h.client.sweep()
	if n := hx.h.client.bearer.len(); n != 1 {
		t.Fatalf("cache holds %d tokens before expiry, want 1", n)
	}
	hx.clock.Advance(300*time.Second + clockSkew + time.Second)
	hx.h.client.sweep()
	if n := hx.h.client.bearer.len(); n != 0 {
		t.Errorf("cache holds %d tokens after they expired, want 0", n)
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

// TestBearerSurvivesSiblingAuthorizationHeader stops one block's
// `header Authorization "Bearer {http.auth.logto.access_token}"` from
// locking every API client out of the application's bearer blocks: the
// names a block sets are stripped from the client's request by every block
// of the application, and the client's Authorization used to be deleted
// before the bearer block read it, so every token request answered 401.
// The bearer block judges the token the client sent, and where it accepts
// it the upstream gets that Authorization header unchanged.
func TestBearerSurvivesSiblingAuthorizationHeader(t *testing.T) {
	idp := newFakeIdP(t)
	// A browser section of the same application that forwards its route
	// token to its upstream.
	site := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.TokenResource = bearerAPI
		h.Headers = map[string]string{"Authorization": "Bearer {http.auth.logto.access_token}"}
	})
	api := newHarness(t, idp, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	tok := idp.accessToken(nil)
	mustForward := func(what string, res *result) {
		t.Helper()
		mustPass(t, res, "user-1")
		if got := res.nextReq.Header.Get("Authorization"); got != "Bearer "+tok {
			t.Errorf("%s: the upstream got Authorization %.30q, want the client's token unchanged", what, got)
		}
		if got := res.nextReq.Header.Get("X-User-Id"); got != "user-1" {
			t.Errorf("%s: X-User-Id = %q, want the token's sub", what, got)
		}
	}
	mustForward("bearer block alone", api.serve(http.MethodGet, "/api/data", nil, bearer(tok)))
	mustForward("behind the site block", serveStacked(t, site, api, "/api/data", newBrowser(), bearer(tok)))

	// A token the bearer block refuses is not forwarded either, nor is
	// another scheme the sibling's header name strips.
	mustBearerFail(t, api.serve(http.MethodGet, "/api/data", nil, bearer("garbage")), http.StatusUnauthorized, "invalid_token")
	res := serveStacked(t, site, newHarness(t, idp, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.Pass = true
	}), "/page", newBrowser(), withHeader("Authorization", "Basic YTpi"))
	if !res.next {
		t.Fatalf("an anonymous request to a pass block did not go on: %v", res.err)
	}
	if got := res.nextReq.Header.Get("Authorization"); got != "" {
		t.Errorf("a client's own Authorization %q reached the upstream of a block whose application sets that header", got)
	}
}

// TestBearerBlockDropsTheCookieUsersIdentity stops two identities from
// reaching one upstream: behind a site block that found the browser's
// session and set `header X-User-Id {http.auth.user.id}`, a bearer block
// that accepts a machine-to-machine token used to pass the request on with
// the token's identity in its own headers and placeholders, and the
// cookie user's X-User-Id beside them. The token's identity replaces the
// session's, headers included.
func TestBearerBlockDropsTheCookieUsersIdentity(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	api := newHarness(t, idp, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-Client": "{http.auth.user.client_id}"}
	})
	b := newBrowser()
	signInAt(t, site, b)
	res := serveStacked(t, site, api, "/api/data", b, fetchAPI(), bearer(idp.m2mToken("read:data")))
	mustPass(t, res, testM2MID)
	if got := res.nextReq.Header.Get("X-Client"); got != testM2MID {
		t.Errorf("X-Client = %q, want the token's client", got)
	}
	if got := res.nextReq.Header.Get("X-User-Id"); got != "" {
		t.Errorf("the upstream of a token request got the browser session's X-User-Id %q", got)
	}
}

// TestCookieBlockAfterBearerBlockNamesTheSessionUser: the other order. A
// bearer block accepts a token, then a cookie block of the same
// application judges the request by its session: its rules ran against
// the session's user, so the placeholders and identity headers must name
// that user, not the token's subject, and the bearer block's headers go.
func TestCookieBlockAfterBearerBlockNamesTheSessionUser(t *testing.T) {
	idp := newFakeIdP(t)
	api := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-Client": "{http.auth.user.client_id}"}
	})
	site := newHarness(t, idp, func(h *Handler) {
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	b := newBrowser()
	signInAt(t, site, b)
	res := serveStacked(t, api, site, "/api/data", b, fetchAPI(), bearer(idp.m2mToken("read:data")))
	mustPass(t, res, "user-1")
	if got := res.nextReq.Header.Get("X-User-Id"); got != "user-1" {
		t.Errorf("X-User-Id = %q, want the session's user", got)
	}
	if got := res.nextReq.Header.Get("X-Client"); got != "" {
		t.Errorf("the upstream of a session request got the token's X-Client %q", got)
	}
}
