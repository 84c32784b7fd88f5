package logto

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestSignInHappyPath runs the whole flow in-process: gate, Logto, callback,
// and the signed-in request that follows.
func TestSignInHappyPath(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) {
		h.Scopes = []string{"email", "roles"}
		h.Headers = map[string]string{"X-Auth-User": "{http.auth.user.id}", "X-Auth-Email": "{http.auth.user.email}"}
	})
	b := newBrowser()
	b.extra = "theme=dark; _ga=GA1.2.3"

	auth := hx.startSignIn(b, "/docs/page?x=1&y=%2F")
	attempts := b.names(attemptPrefix)
	if len(attempts) != 1 {
		t.Fatalf("attempt cookies after the redirect: %v, want one", attempts)
	}
	code := hx.idp.issueCode(auth, "user-1")
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
	if res.err != nil || res.rec.Code != http.StatusFound {
		t.Fatalf("callback: err=%v code=%d refusals=%v", res.err, res.rec.Code, hx.idp.tokenRefusals())
	}
	if got := res.rec.Header().Get("Location"); got != "/docs/page?x=1&y=%2F" {
		t.Errorf("callback Location = %q, want the original URL", got)
	}
	if cc := res.rec.Header().Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("callback Cache-Control = %q, want no-store", cc)
	}
	for _, line := range res.rec.Header().Values("Set-Cookie") {
		if len("Set-Cookie: "+line) >= 4096 {
			t.Errorf("Set-Cookie line of %d bytes", len(line))
		}
	}
	sc := res.setCookie(t, sessionCookie)
	if sc == nil || sc.Value == "" {
		t.Fatalf("no session cookie set: %v", res.rec.Header().Values("Set-Cookie"))
	}
	if !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.Domain != "" {
		t.Errorf("session cookie attributes: %q", sc.Raw)
	}
	if sc.MaxAge < int((14*24*time.Hour-time.Minute)/time.Second) {
		t.Errorf("session cookie Max-Age = %d, want the session lifetime", sc.MaxAge)
	}
	if ac := res.setCookie(t, attempts[0]); ac == nil || ac.MaxAge >= 0 {
		t.Errorf("attempt cookie %s not cleared: %v", attempts[0], res.rec.Header().Values("Set-Cookie"))
	}
	if n := len(b.names(attemptPrefix)); n != 0 {
		t.Errorf("%d attempt cookies left in the browser", n)
	}
	if n := hx.idp.codeGrants.Load(); n != 1 {
		t.Errorf("code redeemed %d times, want 1", n)
	}

	// The page the user asked for, with the session.
	res = hx.serve(http.MethodGet, "/docs/page?x=1", b, navigation(),
		withHeader("X-Auth-User", "admin"), withHeader("X-Auth-Email", "root@evil.example"),
		withHeader("Logto-ID-Token", "forged"))
	mustPass(t, res, "user-1")
	for k, want := range map[string]string{
		"http.auth.user.email":          "ada@example.com",
		"http.auth.user.name":           "Ada Lovelace",
		"http.auth.user.username":       "ada",
		"http.auth.user.picture":        "", // null, not "null"
		"http.auth.user.roles":          "admin,editor",
		"http.auth.user.organizations":  "org1,org2",
		"http.auth.user.email_verified": "true",
		"http.auth.user.created_at":     "1700000000000", // not 1.7e+12
		"http.auth.user.nonexistent":    "",
	} {
		if got := res.ph[k]; got != want {
			t.Errorf("{%s} = %q, want %q", k, got, want)
		}
	}
	if idt := res.ph["http.auth.logto.id_token"]; !slices.Contains(hx.idp.issued(), idt) && strings.Count(idt, ".") != 2 {
		t.Errorf("{http.auth.logto.id_token} = %q, want the ID token", idt)
	}
	hdr := res.nextReq.Header
	if got := hdr.Values("X-Auth-User"); len(got) != 1 || got[0] != "user-1" {
		t.Errorf("X-Auth-User upstream = %q, want only the user's id", got)
	}
	if got := hdr.Values("X-Auth-Email"); len(got) != 1 || got[0] != "ada@example.com" {
		t.Errorf("X-Auth-Email upstream = %q", got)
	}
	if got := hdr.Values("Logto-ID-Token"); len(got) != 0 {
		t.Errorf("client's Logto-ID-Token forwarded: %q", got)
	}
	if got := strings.Join(hdr.Values("Cookie"), "; "); got != "theme=dark; _ga=GA1.2.3" {
		t.Errorf("cookies upstream = %q, want only the site's own", got)
	}
}

// TestCookieAttributesBySite: __Host- cookies with Secure on HTTPS and on
// localhost (a secure context to browsers), plain cookies on plain HTTP
// elsewhere, where a Secure cookie would be dropped and the user loop.
func TestCookieAttributesBySite(t *testing.T) {
	for _, c := range []struct {
		site, name string
		secure     bool
	}{
		{"https://app.example.com", "__Host-logto", true},
		{"http://localhost:8080", "__Host-logto", true},
		{"http://127.0.0.1:8080", "__Host-logto", true},
		{"http://intranet.example", "logto", false},
	} {
		t.Run(c.site, func(t *testing.T) {
			hx := newHarness(t, nil, nil)
			res := hx.serve(http.MethodGet, c.site+"/", nil, navigation())
			auth := hx.mustRedirectToAuth(t, res)
			if got := auth.Query().Get("redirect_uri"); got != c.site+"/logto/sign-in-callback" {
				t.Errorf("redirect_uri = %q", got)
			}
			var attempt *http.Cookie
			for _, ck := range res.setCookies(t) {
				if strings.HasPrefix(ck.Name, c.name+"-signin-") {
					attempt = ck
				}
			}
			if attempt == nil {
				t.Fatalf("no attempt cookie named %s-signin-*: %v", c.name, res.rec.Header().Values("Set-Cookie"))
			}
			code := hx.idp.issueCode(auth, "user-1")
			q := url.Values{"code": {code}, "state": {auth.Query().Get("state")}, "iss": {hx.idp.issuer}}
			res = hx.serve(http.MethodGet, c.site+"/logto/sign-in-callback?"+q.Encode(), nil,
				withHeader("Cookie", attempt.Name+"="+attempt.Value))
			sc := res.setCookie(t, c.name)
			if sc == nil || sc.Value == "" {
				t.Fatalf("no session cookie %s: err=%v %v", c.name, res.err, res.rec.Header().Values("Set-Cookie"))
			}
			if sc.Secure != c.secure || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" {
				t.Errorf("session cookie %q", sc.Raw)
			}
		})
	}
}

// TestManyOrganizationsSessionFitsCookies: a user in hundreds of
// organizations makes a session far over 4 KB; it is split across cookies
// that each fit, and still signs the user in (Logto's Node SDK loops here,
// logto-io/logto #6597).
func TestManyOrganizationsSessionFitsCookies(t *testing.T) {
	hx := newHarness(t, nil, nil)
	var orgs []any
	for range 400 {
		// Random, as Logto's ids are: the session is compressed.
		orgs = append(orgs, "organization-id-"+randomString(9))
	}
	hx.idp.addUser("user-orgs", map[string]any{"name": "Many", "organizations": orgs})
	b := newBrowser()
	res := hx.signIn(b, "/", "user-orgs")
	if n := len(res.setCookies(t)); n < 3 {
		t.Errorf("want the session split across several cookies, got %d Set-Cookie lines", n)
	}
	for _, line := range res.rec.Header().Values("Set-Cookie") {
		if len("Set-Cookie: "+line) >= 4096 {
			t.Errorf("Set-Cookie line of %d bytes", len(line))
		}
	}
	mustPass(t, hx.serve(http.MethodGet, "/", b, navigation()), "user-orgs")
}

// TestSessionCookieSizes measures the session cookie of Logto-shaped users
// (random 12-character ids, organization_roles entries "<id>:<role>",
// email, roles, ms timestamps, a 22-character at_hash, a 21-character app
// id and a 43-character kid), keeps a typical user's (no organizations)
// within 1 KiB, and checks every Set-Cookie line stays under the browsers' 4096
// bytes, so a user in many organizations never loops on sign-in (Logto's
// own cookie SDKs do: logto-io/logto#6597). Run with -v for the sizes.
func TestSessionCookieSizes(t *testing.T) {
	for _, n := range []int{0, 1, 20, 50} {
		hx := newHarness(t, nil, nil)
		orgs, orgRoles := []any{}, []any{}
		for range n {
			id := logtoID(12)
			orgs = append(orgs, id)
			orgRoles = append(orgRoles, id+":member")
		}
		sub := logtoID(12)
		hx.idp.addUser(sub, map[string]any{
			"name": "Jane Doe", "username": "jane", "picture": nil,
			"email": "jane@example.com", "email_verified": true,
			"created_at": json.Number("1764400000123"), "updated_at": json.Number("1764401234567"),
			"roles": []any{"viewer"}, "organizations": orgs, "organization_roles": orgRoles,
		})
		b := newBrowser()
		res := hx.signIn(b, "/", sub)
		total, lines := 0, 0
		for _, c := range res.setCookies(t) {
			if strings.HasPrefix(c.Name, "__Host-logto") && !strings.Contains(c.Name, "signin") && c.Value != "" {
				total += len(c.Value)
				lines++
			}
		}
		for _, line := range res.rec.Header().Values("Set-Cookie") {
			if len("Set-Cookie: "+line) >= 4096 {
				t.Errorf("%d organizations: Set-Cookie line of %d bytes", n, len(line))
			}
		}
		t.Logf("%2d organizations: session %4d bytes in %d cookie(s)", n, total, lines)
		if n == 0 && total > 1024 {
			t.Errorf("a typical user's session cookie is %d bytes, want at most 1 KiB", total)
		}
		mustPass(t, hx.serve(http.MethodGet, "/", b, navigation()), sub)
	}
}

// ---- hostile callbacks ----

// pending starts a sign-in in b and returns the authorization URL.
func (hx *harness) pending(b *tbrowser) *url.URL {
	hx.t.Helper()
	return hx.startSignIn(b, "/wanted")
}

// mustRejectCallback checks a callback failed cleanly: a HandlerError with
// a 4xx or 502 status, no session, nothing passed on.
func mustRejectCallback(t *testing.T, res *result) {
	t.Helper()
	if res.err == nil {
		t.Fatalf("callback accepted: %d Location %q", res.rec.Code, res.rec.Header().Get("Location"))
	}
	st := res.status()
	if st != http.StatusBadGateway && (st < 400 || st > 499) {
		t.Fatalf("callback answered %d (%v), want 4xx or 502", st, res.err)
	}
	res.mustHandlerError(t, st)
	if res.newSession(t) {
		t.Fatal("a session cookie was set")
	}
}

// TestCallbackRejectsBadState: the state ties the callback to the browser
// that started the sign-in. Without it (missing, forged, overlong, not
// base64url) anyone could make a victim's browser complete a sign-in they
// started (login CSRF), so nothing is redeemed.
func TestCallbackRejectsBadState(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := newBrowser()
	auth := hx.pending(b)
	code := hx.idp.issueCode(auth, "user-1")
	good := auth.Query().Get("state")
	for _, c := range []struct{ name, state string }{
		{"missing", ""},
		{"forged", randomString(24)},
		{"same cookie name, other state", good[:12] + randomString(15)[:20]},
		{"overlong", good + strings.Repeat("A", 5000)},
		{"not base64url", strings.Repeat("%", 32)},
		{"not base64url, right length", good[:31] + "="},
		{"control characters", good[:31] + "\n"},
		{"unicode", good[:30] + "é"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := url.Values{"code": {code}, "iss": {hx.idp.issuer}}
			if c.state != "" {
				q.Set("state", c.state)
			}
			mustRejectCallback(t, hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b.clone()))
		})
	}
	if n := hx.idp.codeGrants.Load(); n != 0 {
		t.Errorf("the code was sent to Logto %d times", n)
	}
	// The genuine callback still works afterwards.
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)
	if res.err != nil || !res.newSession(t) {
		t.Fatalf("genuine callback failed: %v", res.err)
	}
}

// TestCallbackRejectsAnotherBrowsersAttempt: an attacker signs in to his
// own account, stops at the callback and sends the link (his code and
// state) to the victim. The victim's browser has no attempt with that state,
// so it is not signed in to the attacker's account (login CSRF).
func TestCallbackRejectsAnotherBrowsersAttempt(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.idp.addUser("attacker", map[string]any{"name": "Mallory"})
	attacker, victim := newBrowser(), newBrowser()
	auth := hx.pending(attacker)
	code := hx.idp.issueCode(auth, "attacker")
	hx.pending(victim) // the victim may even be signing in herself
	mustRejectCallback(t, hx.serve(http.MethodGet, hx.callbackURL(auth, code), victim))
	if n := hx.idp.codeGrants.Load(); n != 0 {
		t.Errorf("the attacker's code was redeemed %d times", n)
	}
}

// TestCallbackRejectsCodeOfAnotherAttempt: a code obtained for one attempt
// (its PKCE challenge) and presented with the state of another attempt of
// the same browser is refused by Logto, since the verifier does not match:
// an intercepted code is useless without its attempt's verifier.
func TestCallbackRejectsCodeOfAnotherAttempt(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := newBrowser()
	first := hx.pending(b)
	second := hx.pending(b)
	code := hx.idp.issueCode(first, "user-1")
	mustRejectCallback(t, hx.serve(http.MethodGet, hx.callbackURL(second, code), b))
	if refusals := hx.idp.tokenRefusals(); !slices.Contains(refusals, "PKCE verification failed") {
		t.Errorf("Logto refusals = %v, want a PKCE failure", refusals)
	}
}

// TestCallbackReplay: a completed callback URL replayed (browser history, a
// leaked Referer, a proxy log) must not sign anyone in again: the attempt
// is spent, and even with a copy of the attempt cookie the code is.
func TestCallbackReplay(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := newBrowser()
	auth := hx.pending(b)
	stolen := b.clone() // the attempt cookie, as an attacker could copy it
	code := hx.idp.issueCode(auth, "user-1")
	cb := hx.callbackURL(auth, code)
	if res := hx.serve(http.MethodGet, cb, b); !res.newSession(t) {
		t.Fatalf("first callback failed: %v", res.err)
	}

	t.Run("same browser", func(t *testing.T) {
		// Signed in, so sent home; but no new session and no redemption.
		res := hx.serve(http.MethodGet, cb, b.clone())
		if res.newSession(t) {
			t.Fatal("replayed callback set a new session")
		}
		if res.err == nil && res.rec.Header().Get("Location") != "/" {
			t.Fatalf("replay: %d Location %q", res.rec.Code, res.rec.Header().Get("Location"))
		}
	})
	t.Run("copied attempt cookie", func(t *testing.T) {
		mustRejectCallback(t, hx.serve(http.MethodGet, cb, stolen))
	})
	t.Run("fresh browser", func(t *testing.T) {
		mustRejectCallback(t, hx.serve(http.MethodGet, cb, newBrowser()))
	})
	if n := hx.idp.codeGrants.Load(); n > 2 {
		t.Errorf("code sent to Logto %d times", n)
	}
}

// TestCallbackRejectsMixUp: the authorization response names its issuer
// (RFC 9207). A response from another identity provider, or one without iss
// when Logto says it always sends it, may carry a code meant for another
// IdP (mix-up attack) and is not redeemed here.
func TestCallbackRejectsMixUp(t *testing.T) {
	for _, c := range []struct{ name, iss string }{
		{"other issuer", "https://evil.example/oidc"},
		{"issuer with trailing slash", "ISSUER/"},
		{"missing iss", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx := newHarness(t, nil, nil)
			b := newBrowser()
			auth := hx.pending(b)
			code := hx.idp.issueCode(auth, "user-1")
			q := url.Values{"code": {code}, "state": {auth.Query().Get("state")}}
			if c.iss != "" {
				q.Set("iss", strings.Replace(c.iss, "ISSUER", hx.idp.issuer, 1))
			}
			mustRejectCallback(t, hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b))
			if n := hx.idp.codeGrants.Load(); n != 0 {
				t.Errorf("code redeemed %d times", n)
			}
		})
	}
}

// TestCallbackWithoutIssWhenUnsupported: a Logto that does not announce
// the iss parameter is not required to send it.
func TestCallbackWithoutIssWhenUnsupported(t *testing.T) {
	idp := newFakeIdP(t)
	idp.issSupported = false
	hx := newHarness(t, idp, nil)
	b := newBrowser()
	auth := hx.pending(b)
	code := hx.idp.issueCode(auth, "user-1")
	q := url.Values{"code": {code}, "state": {auth.Query().Get("state")}}
	if res := hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b); !res.newSession(t) {
		t.Fatalf("callback failed: %v", res.err)
	}
}

// TestCallbackLogtoError: Logto sends the user back with an error (the
// user cancelled, consent denied); it is shown as such, never a session.
// The attempt is spent.
func TestCallbackLogtoError(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := newBrowser()
	auth := hx.pending(b)
	q := url.Values{"error": {"access_denied"}, "error_description": {"<script>alert(1)</script>"},
		"state": {auth.Query().Get("state")}, "iss": {hx.idp.issuer}}
	res := hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b)
	mustRejectCallback(t, res)
	if strings.Contains(res.err.Error(), "<script>") {
		t.Errorf("error description reflected: %v", res.err)
	}
	if n := len(b.names(attemptPrefix)); n != 0 {
		t.Errorf("attempt not spent: %d attempt cookies left", n)
	}
}

// TestCallbackRejectsOversizedCode: a code no IdP issues (megabytes,
// control characters) is refused before it is forwarded to Logto, so the
// callback cannot be used to make the server send huge requests.
func TestCallbackRejectsOversizedCode(t *testing.T) {
	for _, c := range []struct{ name, code string }{
		{"oversized", strings.Repeat("c", 4096)},
		{"empty", ""},
		{"control characters", "abc\x00def"},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx := newHarness(t, nil, nil)
			b := newBrowser()
			auth := hx.pending(b)
			q := url.Values{"code": {c.code}, "state": {auth.Query().Get("state")}, "iss": {hx.idp.issuer}}
			mustRejectCallback(t, hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b))
			if n := hx.idp.codeGrants.Load(); n != 0 {
				t.Errorf("code sent to Logto %d times", n)
			}
		})
	}
}

// TestCallbackRejectsBadIDTokens: the ID token is the user's identity.
// Each case is a token an attacker (or a misbehaving proxy) could put in
// the token response; none may create a session.
func TestCallbackRejectsBadIDTokens(t *testing.T) {
	idp := newFakeIdP(t)
	edit := func(f func(c map[string]any)) func(map[string]any) string { return idp.tokenEditedClaims(f) }
	for _, c := range []struct {
		name   string
		attack string
		token  func(map[string]any) string
	}{
		{"wrong nonce", "a token minted for another sign-in (token injection)",
			edit(func(c map[string]any) { c["nonce"] = randomString(24) })},
		{"no nonce", "a token minted without this attempt's nonce",
			edit(func(c map[string]any) { delete(c, "nonce") })},
		{"wrong audience", "a token issued to another application of the tenant",
			edit(func(c map[string]any) { c["aud"] = "another-app" })},
		{"wrong issuer", "a token from another tenant or IdP",
			edit(func(c map[string]any) { c["iss"] = "https://evil.example/oidc" })},
		{"expired", "an old token replayed",
			edit(func(c map[string]any) {
				now := idp.now().Unix()
				c["iat"], c["exp"] = now-7200, now-3600
			})},
		{"no subject", "a token naming nobody",
			edit(func(c map[string]any) { delete(c, "sub") })},
		{"unknown key", "a token signed with the attacker's key under an unknown kid",
			tokenSignedByUnknownKey("attacker-kid")},
		{"unknown key, tenant's kid", "a token signed with the attacker's key under the tenant's kid",
			tokenSignedByUnknownKey(idp.kid())},
		{"alg none", "an unsigned token", tokenAlgNone},
		{"HS256", "algorithm confusion: HMAC keyed with the client secret", idp.tokenHS256},
		{"garbage", "not a JWT at all", func(map[string]any) string { return "not.a.jwt" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{randomString(24)} })
			b := newBrowser()
			auth := hx.pending(b)
			code := idp.issueCodeWith(auth, "user-1", c.token)
			res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)
			mustRejectCallback(t, res)
			if b.get(sessionCookie) != "" {
				t.Fatalf("%s: signed in", c.attack)
			}
		})
	}
}

// TestCallbackAttemptTimedOut: a user who lingered on Logto's page past
// sign_in_timeout is started over, with the same destination, rather than
// shown an error (or, worse, signed in with a stale attempt).
func TestCallbackAttemptTimedOut(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.SignInTimeout = caddy.Duration(10 * time.Minute) })
	b := newBrowser()
	auth := hx.startSignIn(b, "/report?id=7")
	code := hx.idp.issueCode(auth, "user-1")
	hx.clock.Advance(11 * time.Minute)
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)
	again := hx.mustRedirectToAuth(t, res)
	if again.Query().Get("state") == auth.Query().Get("state") {
		t.Fatal("the timed-out attempt's state was reused")
	}
	if res.newSession(t) {
		t.Fatal("a timed-out attempt set a session")
	}
	if n := hx.idp.codeGrants.Load(); n != 0 {
		t.Errorf("timed-out code redeemed %d times", n)
	}
	code = hx.idp.issueCode(again, "user-1")
	res = hx.serve(http.MethodGet, hx.callbackURL(again, code), b)
	if got := res.rec.Header().Get("Location"); res.err != nil || got != "/report?id=7" {
		t.Fatalf("second attempt: err=%v Location %q, want the original URL", res.err, got)
	}
}

// TestManyTabsSignIn: six tabs start signing in one after another before
// any completes (a restored session of tabs). Attempt cookies stay bounded,
// so the Cookie header cannot grow until the site answers 431, and the
// newest attempts all complete.
func TestManyTabsSignIn(t *testing.T) {
	for _, via := range []string{"gate", "sign-in endpoint"} {
		for _, spacing := range []time.Duration{time.Second, 0} {
			t.Run(via+"/spacing "+spacing.String(), func(t *testing.T) {
				hx := newHarness(t, nil, nil)
				b := newBrowser()
				var auths []*url.URL
				for i := range 6 {
					target := "/tab" + string(rune('1'+i))
					if via == "gate" {
						auths = append(auths, hx.startSignIn(b, target))
					} else {
						auths = append(auths, hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in?redirect="+url.QueryEscape(target), b)))
					}
					if n := len(b.names(attemptPrefix)); n > maxAttempts {
						if via == "gate" {
							t.Fatalf("regression: a sign-in started by the gate never prunes attempt cookies (gate strips the module's cookies from the request before startSignIn reads them): %d attempt cookies after tab %d", n, i+1)
						}
						t.Fatalf("after tab %d the browser holds %d attempt cookies", i+1, n)
					}
					hx.clock.Advance(spacing)
				}
				// The newest four complete, in any order.
				for _, i := range []int{4, 2, 5, 3} {
					code := hx.idp.issueCode(auths[i], "user-1")
					res := hx.serve(http.MethodGet, hx.callbackURL(auths[i], code), b)
					if spacing == 0 && res.err != nil {
						t.Fatalf("regression: attempts created in the same second are pruned in arbitrary order, so a newer tab (%d) lost its attempt: %v", i+1, res.err)
					}
					if res.err != nil || res.rec.Header().Get("Location") != "/tab"+string(rune('1'+i)) {
						t.Fatalf("tab %d: err=%v Location %q", i+1, res.err, res.rec.Header().Get("Location"))
					}
				}
				// The two oldest were dropped: their callbacks set no session.
				for _, i := range []int{0, 1} {
					code := hx.idp.issueCode(auths[i], "user-1")
					res := hx.serve(http.MethodGet, hx.callbackURL(auths[i], code), b.clone())
					if res.newSession(t) {
						t.Errorf("dropped tab %d still signed in", i+1)
					}
				}
			})
		}
	}
}

// TestSigningKeyRotation: Logto's keys rotate; an ID token under a kid the
// cached JWKS does not have makes the module fetch the JWKS again, and
// sessions signed in under the old key carry on.
func TestSigningKeyRotation(t *testing.T) {
	for _, dropOld := range []bool{false, true} {
		t.Run(map[bool]string{false: "old key kept", true: "old key dropped"}[dropOld], func(t *testing.T) {
			hx := newHarness(t, nil, nil)
			before := hx.signedIn()
			fetches := hx.idp.jwksHits.Load()
			hx.idp.rotateKey(dropOld)
			after := hx.signedIn()
			if hx.idp.jwksHits.Load() == fetches {
				t.Error("JWKS not fetched again for the new kid")
			}
			mustPass(t, hx.serve(http.MethodGet, "/", before, fetchAPI()), "user-1")
			mustPass(t, hx.serve(http.MethodGet, "/", after, fetchAPI()), "user-1")
			// A refresh returns a token under the new key.
			hx.clock.Advance(time.Hour)
			res := hx.serve(http.MethodGet, "/", before, fetchAPI())
			mustPass(t, res, "user-1")
			if !res.newSession(t) {
				t.Error("refreshed ID token under the new key was not taken")
			}
		})
	}
}

// logtoID makes an id shaped like Logto's: lower-case letters and digits.
func logtoID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte(randomString(n))
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:n])
}
