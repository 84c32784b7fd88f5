package logto

import (
	"net/http"
	"net/url"
	"testing"
)

// FuzzCallbackQuery sends arbitrary raw query strings to the sign-in
// callback, with and without a genuine attempt cookie. Whatever the query,
// the handler must not panic or answer 500, and a session may only come
// out of a code the IdP issued, presented with the attempt's own state.
func FuzzCallbackQuery(f *testing.F) {
	hx := newHarness(f, nil, nil)
	b := newBrowser()
	auth := hx.startSignIn(b, "/fuzz")
	state := auth.Query().Get("state")
	cookie := b.header()
	code := hx.idp.issueCode(auth, "user-1")
	iss := url.QueryEscape(hx.idp.issuer)

	for _, seed := range []string{
		"",
		"code=" + code + "&state=" + state + "&iss=" + iss,
		"code=x&state=" + state + "&iss=" + iss,
		"code=x&state=" + state,
		"state=" + state + "&error=access_denied&error_description=no",
		"state=" + state + "&state=" + state + "&code=a&code=b",
		"code=%00&state=" + state + "&iss=" + iss,
		"state=%zz",
		"state=" + state[:31] + "%C3%A9",
		";;;&&&===",
		"code=" + code + "&state=" + state + "&iss=" + iss + "&iss=https://evil",
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, raw string, withCookie bool) {
		fx := *hx
		fx.t = t
		r, repl, w := newRequest(http.MethodGet, "/logto/sign-in-callback", nil)
		r.URL.RawQuery = raw
		if withCookie {
			r.Header.Set("Cookie", cookie)
		}
		res := fx.serveRequest(r, repl, w, nil)
		if !res.newSession(t) {
			return
		}
		q, _ := url.ParseQuery(raw)
		if !withCookie || q.Get("state") != state || !hx.idp.wasIssued(q.Get("code")) {
			t.Fatalf("query %q (cookie %v) made a session", raw, withCookie)
		}
	})
}
