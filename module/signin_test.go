package logto

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
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
