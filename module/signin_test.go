package logto

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestSignInForwardsLogtoParams: the safe per-request parameters of
// /logto/sign-in reach Logto, and the user lands on redirect afterwards.
func TestSignInForwardsLogtoParams(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := newBrowser()
	res := hx.serve(http.MethodGet, "/logto/sign-in?first_screen=register&direct_sign_in=social:kakao&login_hint=a@b.c"+
		"&ui_locales=ko-KR&organization_id=abc&identifier=email%20phone&redirect=/x", b)
	auth := hx.mustRedirectToAuth(t, res)
	q := auth.Query()
	for k, want := range map[string]string{
		"first_screen":    "register",
		"direct_sign_in":  "social:kakao",
		"login_hint":      "a@b.c",
		"ui_locales":      "ko-KR",
		"organization_id": "abc",
		"identifier":      "email phone",
		"prompt":          "consent",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	code := hx.idp.issueCode(auth, "user-1")
	res = hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)
	if got := res.rec.Header().Get("Location"); res.err != nil || got != "/x" {
		t.Fatalf("callback: err=%v Location %q, want /x", res.err, got)
	}
}

// TestSignInConfigParams: the Logto options of the configuration reach
// every authorization request, the gate's included.
func TestSignInConfigParams(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) {
		h.FirstScreen = "identifier:sign_in"
		h.Identifiers = []string{"email", "username"}
		h.DirectSignIn = "sso:conn-1"
		h.LoginHint = "ada@example.com"
		h.UILocales = []string{"ko-KR", "en"}
		h.SignInOrganization = "org1"
		h.Prompt = "login consent"
		h.ExtraParams = map[string]string{"one_time_token": "ott-1"}
	})
	q := hx.startSignIn(newBrowser(), "/").Query()
	for k, want := range map[string]string{
		"first_screen":    "identifier:sign_in",
		"identifier":      "email username",
		"direct_sign_in":  "sso:conn-1",
		"login_hint":      "ada@example.com",
		"ui_locales":      "ko-KR en",
		"organization_id": "org1",
		"prompt":          "login consent",
		"one_time_token":  "ott-1",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// TestSignUpOpensRegistration: /logto/sign-up asks Logto for the
// registration screen, in current and older Logto's terms.
func TestSignUpOpensRegistration(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.FirstScreen = "sign_in" })
	q := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-up?redirect=/welcome", newBrowser())).Query()
	if q.Get("first_screen") != "register" || q.Get("interaction_mode") != "signUp" {
		t.Errorf("first_screen=%q interaction_mode=%q, want register/signUp", q.Get("first_screen"), q.Get("interaction_mode"))
	}
}

// TestSignInRejectsHostileParams: values that are not what Logto takes
// (control characters that could split a header, unknown screens, a
// direct_sign_in that is not kind:target, oversized values) get 400 rather
// than being passed on to Logto or into a cookie.
func TestSignInRejectsHostileParams(t *testing.T) {
	hx := newHarness(t, nil, nil)
	long := strings.Repeat("a", 300)
	for _, c := range []struct{ name, query string }{
		{"control char in login_hint", "login_hint=a%0d%0aSet-Cookie:x=1"},
		{"NUL in login_hint", "login_hint=a%00b"},
		{"DEL in login_hint", "login_hint=a%7fb"},
		{"unknown first_screen", "first_screen=admin"},
		{"first_screen with control char", "first_screen=register%0a"},
		{"direct_sign_in without colon", "direct_sign_in=kakao"},
		{"direct_sign_in empty target", "direct_sign_in=social:"},
		{"direct_sign_in with slash", "direct_sign_in=social:../../x"},
		{"300-char login_hint", "login_hint=" + long},
		{"300-char organization_id", "organization_id=" + long},
		{"organization_id with space", "organization_id=a%20b"},
		{"300-char ui_locales", "ui_locales=" + long},
		{"ui_locales with quote", "ui_locales=ko%22KR"},
		{"unknown identifier", "identifier=password"},
		{"prompt none", "prompt=none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := hx.serve(http.MethodGet, "/logto/sign-in?"+c.query, newBrowser())
			res.mustHandlerError(t, http.StatusBadRequest)
			if len(res.rec.Header().Values("Set-Cookie")) != 0 || res.rec.Header().Get("Location") != "" {
				t.Errorf("rejected request still set cookies or redirected: %v", res.rec.Header())
			}
		})
	}
}

// TestSignInDoesNotForwardProtocolParams: a link to /logto/sign-in must not
// widen what is asked of Logto (scopes, resources, extra parameters) nor
// change the protocol (client, redirect URI, response type, PKCE): that
// would let a third party craft sign-ins that grant it more.
func TestSignInDoesNotForwardProtocolParams(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.Scopes = []string{"email"} })
	hostile := url.Values{
		"scope":                 {"openid all:admin"},
		"scopes":                {"all:admin"},
		"resource":              {"https://evil.example"},
		"resources":             {"https://evil.example"},
		"client_id":             {"evil-app"},
		"redirect_uri":          {"https://evil.example/cb"},
		"response_type":         {"token"},
		"response_mode":         {"form_post"},
		"code_challenge":        {"x"},
		"code_challenge_method": {"plain"},
		"state":                 {"attacker-state"},
		"nonce":                 {"attacker-nonce"},
		"one_time_token":        {"ott"},
		"extra":                 {"1"},
	}
	q := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in?"+hostile.Encode(), newBrowser())).Query()
	if got := strings.Fields(q.Get("scope")); !slices.Equal(got, []string{"openid", "offline_access", "profile", "email"}) {
		t.Errorf("scope = %q", q.Get("scope"))
	}
	for k, want := range map[string]string{
		"client_id":             hx.idp.appID,
		"redirect_uri":          testSite + "/logto/sign-in-callback",
		"response_type":         "code",
		"code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"resource", "resources", "scopes", "response_mode", "one_time_token", "extra"} {
		if v, ok := q[k]; ok {
			t.Errorf("%s forwarded: %q", k, v)
		}
	}
	for k, bad := range map[string]string{"state": "attacker-state", "nonce": "attacker-nonce", "code_challenge": "x"} {
		if q.Get(k) == bad {
			t.Errorf("%s taken from the request", k)
		}
	}
}

// TestSignInRedirectIsNotAnOpenRedirect: after signing in the user lands on
// redirect only if it is on this site; a phishing link
// /logto/sign-in?redirect=https://evil lands on /.
func TestSignInRedirectIsNotAnOpenRedirect(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, target := range []string{"https://evil.example/", "//evil.example", "/\\evil.example"} {
		b := newBrowser()
		auth := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in?redirect="+url.QueryEscape(target), b))
		code := hx.idp.issueCode(auth, "user-1")
		res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)
		if got := res.rec.Header().Get("Location"); got != "/" {
			t.Errorf("redirect=%q landed on %q", target, got)
		}
	}
}

// TestSafeReturn: only same-origin targets survive; every trick that makes
// a browser leave the site becomes "/".
func TestSafeReturn(t *testing.T) {
	const site = "https://app.example.com"
	for _, c := range []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/x", "/x"},
		{"/a/b?c=d&e=%2F", "/a/b?c=d&e=%2F"},
		{"/a#frag", "/a#frag"},
		{"/%2F%2Fevil.example", "/"}, // decodes to //evil.example
		{"https://app.example.com/a?b=c", "/a?b=c"},
		{"HTTPS://APP.EXAMPLE.COM/a", "/a"},
		{"https://evil.example", "/"},
		{"https://evil.example/a", "/"},
		{"http://app.example.com/a", "/"}, // scheme downgrade
		{"//evil.example", "/"},
		{"//evil.example/a", "/"},
		{"///evil.example", "/"},
		{"/\\evil.example", "/"},
		{"\\\\evil.example", "/"},
		{"\\/evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"JaVaScRiPt:alert(1)", "/"},
		{"data:text/html,<script>alert(1)</script>", "/"},
		{"http://app.example.com@evil.example", "/"},
		{"https://app.example.com@evil.example/", "/"},
		{"https://user:pw@app.example.com/", "/"},
		{"https://app.example.com.evil.example/", "/"},
		{"%2F%2Fevil.example", "/"},
		{"/x\r\nSet-Cookie: a=b", "/"},
		{"/x\nLocation: https://evil.example", "/"},
		{"/\t/evil.example", "/"},
		{"x", "/"},
		{"evil.example", "/"},
		{"../x", "/"},
		{"/" + strings.Repeat("a", 3000), "/"},
	} {
		if got := safeReturn(c.in, site); got != c.want {
			t.Errorf("safeReturn(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzSafeReturn: whatever goes in, what comes out is a path on this site:
// one leading slash, no backslash, no control characters.
func FuzzSafeReturn(f *testing.F) {
	for _, s := range []string{"/x", "//evil", "/\\evil", "https://app.example.com/a", "https://evil/", "javascript:x", "/%2F%2Fx", "/a#b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := safeReturn(in, "https://app.example.com")
		if !strings.HasPrefix(out, "/") || strings.HasPrefix(out, "//") || strings.ContainsAny(out, "\\\r\n\t") {
			t.Fatalf("safeReturn(%q) = %q", in, out)
		}
		u, err := url.Parse(out)
		if err != nil || u.Host != "" || u.Scheme != "" {
			t.Fatalf("safeReturn(%q) = %q leaves the site", in, out)
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("safeReturn(%q) = %q has control characters", in, out)
			}
		}
	})
}

// TestThousandsOfAttemptCookies: a stranger can send any number of cookies
// named like sign-in attempts. Pruning them (on a sign-in) or clearing them
// (on sign-out) must look at a bounded number, not re-read the header per
// name: 20 000 of them once cost 17 s of CPU and a response with 20 000
// Set-Cookie lines.
func TestThousandsOfAttemptCookies(t *testing.T) {
	hx := newHarness(t, nil, nil)
	var sb strings.Builder
	for i := range 20000 {
		if i > 0 {
			sb.WriteString("; ")
		}
		fmt.Fprintf(&sb, "__Host-logto-signin-%012d=x", i)
	}
	for _, c := range []struct {
		name, path string
		opts       []reqOpt
	}{
		{"navigation", "/private", []reqOpt{navigation()}},
		{"sign-out", "/logto/sign-out", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := hx.serve(http.MethodGet, c.path, nil, append(c.opts, withHeader("Cookie", sb.String()))...)
			if res.err != nil && res.status() >= 500 {
				t.Fatalf("%s: %v", c.path, res.err)
			}
			if n := len(res.rec.Header().Values("Set-Cookie")); n > maxAttemptNames+2 {
				t.Errorf("%s answered %d Set-Cookie lines for a hostile header, want at most %d", c.path, n, maxAttemptNames+2)
			}
		})
	}
}

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

// worstReturn is the longest return URL sign-in keeps (maxReturnURL bytes),
// made of the byte JSON's HTML escaping inflates most.
func worstReturn() string {
	const path = "/reports/q"
	return path + "?" + strings.Repeat("&", maxReturnURL-len(path)-1)
}

// hostileSignInQuery is every sign-in parameter a visitor may set, at its
// longest (256 bytes; 128 for an id, as in direct_sign_in's target).
func hostileSignInQuery(ret string) url.Values {
	return url.Values{
		"redirect":        {ret},
		"login_hint":      {strings.Repeat("h", 256)},
		"ui_locales":      {strings.Repeat("en-US ", 42) + "fr"},
		"direct_sign_in":  {"social:" + strings.Repeat("k", 128)},
		"identifier":      {strings.Repeat("email ", 41) + "phone"},
		"organization_id": {strings.Repeat("o", 128)},
		"first_screen":    {"identifier:register"},
		"prompt":          {"login consent"},
	}
}

// manyNeeds configures a block that asks for many scopes and resources,
// as an application with several APIs does.
func manyNeeds(scopes, resources int) func(h *Handler) {
	return func(h *Handler) {
		for i := range scopes {
			h.Scopes = append(h.Scopes, fmt.Sprintf("write:documents-%02d", i))
		}
		for i := range resources {
			h.Resources = append(h.Resources, fmt.Sprintf("https://api-%02d.example.com/v1", i))
		}
	}
}

// attemptCookies are the attempt cookies (chunks included) in the browser.
func attemptCookies(b *tbrowser) []string { return b.names(attemptPrefix) }

// TestAttemptNeverChunksForLongReturn: the longest return URL a visitor
// can make us keep, with every sign-in parameter at its longest and an
// application asking for many scopes and resources, still makes one
// attempt cookie, and the sign-in completes. Chunked attempts stop an
// attack where one crafted link plants several 4 KB cookies per tab that
// ride on every request for an hour (and whose chunks sign-out and the
// callback never cleared), pushing the site past header limits.
func TestAttemptNeverChunksForLongReturn(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, manyNeeds(20, 8))
	ret := worstReturn()
	q := hostileSignInQuery(ret)

	// The premise: before the return URL is shortened, this attempt does
	// not fit one cookie (so the fallback below is what keeps it whole).
	want := hx.h.signInNeeds()
	raw, _ := json.Marshal(attempt{
		Scopes: abbreviateAsked(want.scopes), Resources: abbreviateAsked(want.resources),
		State: randomString(24), Nonce: randomString(24), Verifier: randomString(32),
		Return: ret, RedirectURI: testSite + "/logto/sign-in-callback", Created: 1 << 42,
		Params: signInParams{LoginHint: q.Get("login_hint"), UILocales: q.Get("ui_locales"),
			DirectSignIn: q.Get("direct_sign_in"), Identifier: q.Get("identifier"),
			Organization: q.Get("organization_id"), FirstScreen: q.Get("first_screen"), Prompt: q.Get("prompt")},
	})
	name := attemptPrefix + "AAAAAAAAAAAA"
	if sealed := hx.h.client.attempts.Seal(attemptAAD, raw); fitsOneCookie(name, sealed, hx.h.cookie.secure.opts) {
		t.Fatalf("premise: the worst-case attempt (%d bytes sealed) fits one cookie; make it larger", len(sealed))
	} else {
		t.Logf("worst-case attempt as originally encoded: %d bytes sealed, one cookie holds %d", len(sealed), chunkSize(name, hx.h.cookie.secure.opts))
	}

	b := newBrowser()
	auth := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in?"+q.Encode(), b, navigation()))
	if got := attemptCookies(b); len(got) != 1 || strings.Contains(got[0], ".") {
		t.Fatalf("attempt cookies %v, want exactly one, unchunked", got)
	}
	code := idp.issueCode(auth, "user-1")
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
	if res.err != nil || res.rec.Code != http.StatusFound || b.get(sessionCookie) == "" {
		t.Fatalf("sign-in did not complete: err=%v code=%d refusals=%v", res.err, res.rec.Code, idp.tokenRefusals())
	}
	if loc := res.rec.Header().Get("Location"); loc != "/reports/q" {
		t.Errorf("landed at %.80q, want the return URL's path /reports/q", loc)
	}
	if got := attemptCookies(b); len(got) != 0 {
		t.Errorf("attempt cookies left after the callback: %v", got)
	}
}

// TestAttemptKeepsReturnThatFits: a long but ordinary return URL (a query
// with many '&', which JSON's HTML escaping would have tripled) is kept
// whole: shortening is for attempts that would not fit.
func TestAttemptKeepsReturnThatFits(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, nil)
	ret := "/search?" + strings.Repeat("a=1&", 400) + "z=2"
	b := newBrowser()
	auth := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in?redirect="+url.QueryEscape(ret), b, navigation()))
	if got := attemptCookies(b); len(got) != 1 {
		t.Fatalf("attempt cookies %v, want one", got)
	}
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, idp.issueCode(auth, "user-1")), b, navigation())
	if loc := res.rec.Header().Get("Location"); loc != ret {
		t.Errorf("landed at %.80q, want the whole return URL", loc)
	}
}

// TestChunkedAttemptFullyCleared: an application whose sign-in asks for so
// much that even an attempt returning to "/" needs chunks still works, and
// the callback and sign-out expire every chunk, not only the first cookie:
// a stale chunk would otherwise ride on every request until it expires.
func TestChunkedAttemptFullyCleared(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, manyNeeds(150, 20))

	b := newBrowser()
	auth := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in?"+hostileSignInQuery("/").Encode(), b, navigation()))
	if got := attemptCookies(b); len(got) < 2 {
		t.Fatalf("attempt cookies %v: the test needs a chunked attempt", got)
	}
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, idp.issueCode(auth, "user-1")), b, navigation())
	if res.err != nil || b.get(sessionCookie) == "" {
		t.Fatalf("sign-in with a chunked attempt did not complete: err=%v code=%d", res.err, res.rec.Code)
	}
	if got := attemptCookies(b); len(got) != 0 {
		t.Errorf("attempt cookies left after the callback: %v", got)
	}

	// An attempt abandoned on Logto's page, then sign-out.
	hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in", b, navigation()))
	if got := attemptCookies(b); len(got) < 2 {
		t.Fatalf("attempt cookies %v: want a chunked attempt", got)
	}
	hx.serve(http.MethodGet, "/logto/sign-out", b)
	if got := attemptCookies(b); len(got) != 0 {
		t.Errorf("attempt cookies left after sign-out: %v", got)
	}
}
