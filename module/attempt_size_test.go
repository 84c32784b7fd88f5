package logto

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

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
