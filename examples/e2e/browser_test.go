package e2e

// Browser tests: a real headless Chromium against the static-site example
// (examples/static-site) served by a real Caddy with the module, signing in
// at the dev IdP.

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserSignInFromHomePage proves the main journey: an anonymous visitor
// sees the public home page (pass mode), signs in with Logto, comes back
// signed in with the user's claims on the page, and reaches /private/; the
// user id on the page is the IdP's sub for alice.
func TestBrowserSignInFromHomePage(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")
	b := newBrowser(t)
	ctx := b.ctx

	b.navigate(ctx, s.URL+"/")
	b.waitPage(ctx, "anonymous home page", func(p page) bool { return p.State == "Not authenticated" })
	b.screenshot(ctx, "1-home-anonymous")

	b.click(ctx, "#sign-in")
	b.waitPage(ctx, "IdP login page", func(p page) bool { return strings.HasPrefix(p.URL, s.idp.base) && p.LoginForm })
	b.screenshot(ctx, "2-idp-login")
	b.signIn(ctx, "alice", "alice")

	home := b.waitPage(ctx, "signed-in home page", func(p page) bool { return p.State == "Authenticated" })
	b.screenshot(ctx, "3-home-signed-in")
	if home.URL != s.URL+"/" {
		t.Errorf("after sign-in the browser is at %q, want %q", home.URL, s.URL+"/")
	}
	if home.Name != "Alice Park" || home.Email != "alice@example.com" {
		t.Errorf("home page shows name %q email %q, want Alice Park alice@example.com", home.Name, home.Email)
	}
	sub := s.idp.userID(t, "alice")
	if home.UserID != sub {
		t.Errorf("home page #user-id = %q, want alice's sub %q", home.UserID, sub)
	}

	b.navigate(ctx, s.URL+"/private/")
	priv := b.waitPage(ctx, "private page", func(p page) bool { return p.State == "Private page" })
	b.screenshot(ctx, "4-private")
	if priv.URL != s.URL+"/private/" {
		t.Errorf("private page URL %q, want %q", priv.URL, s.URL+"/private/")
	}
	if priv.UserID != sub || priv.Name != "Alice Park" {
		t.Errorf("private page shows #user-id %q #name %q, want %q Alice Park", priv.UserID, priv.Name, sub)
	}
	if docs := b.errorDocuments(); len(docs) > 0 {
		t.Errorf("documents answered with errors: %v", docs)
	}
}

// TestBrowserDeepLinkComesBack proves that a deep link survives the sign-in:
// an anonymous browser opening /private/?x=1#frag is sent to Logto and, once
// signed in, lands on /private/?x=1 (not on the home page).
func TestBrowserDeepLinkComesBack(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")
	b := newBrowser(t)
	ctx := b.ctx

	b.navigate(ctx, s.URL+"/private/?x=1#frag")
	b.waitPage(ctx, "IdP login page", func(p page) bool { return strings.HasPrefix(p.URL, s.idp.base) && p.LoginForm })
	b.signIn(ctx, "bob", "bob")
	p := b.waitPage(ctx, "private page", func(p page) bool { return p.State == "Private page" })
	b.screenshot(ctx, "deep-link-landed")
	got, _, _ := strings.Cut(p.URL, "#")
	if got != s.URL+"/private/?x=1" {
		t.Errorf("landed on %q, want %q", p.URL, s.URL+"/private/?x=1")
	}
	if p.Name != "Bob Lee" {
		t.Errorf("private page #name %q, want Bob Lee", p.Name)
	}
}

// TestBrowserSignUpAndKakao proves the sign-in options reach Logto: the
// sign-up link opens the registration screen (first_screen=register) and a
// newly created user ends up signed in; the Kakao link sends
// direct_sign_in=social:kakao and the Kakao user ends up signed in.
func TestBrowserSignUpAndKakao(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")

	t.Run("sign-up", func(t *testing.T) {
		b := newBrowser(t)
		ctx := b.ctx
		b.navigate(ctx, s.URL+"/")
		b.waitPage(ctx, "anonymous home page", func(p page) bool { return p.State == "Not authenticated" })
		b.click(ctx, "#sign-up")
		b.waitPage(ctx, "IdP registration page", func(p page) bool {
			return strings.HasPrefix(p.URL, s.idp.base) && strings.HasSuffix(p.Form, "/register")
		})
		b.screenshot(ctx, "register-page")
		reqs := s.idp.authRequests(t, s.appID)
		if len(reqs) == 0 || reqs[len(reqs)-1]["first_screen"] != "register" {
			t.Errorf("authorization request did not carry first_screen=register: %v", reqs)
		}

		username := "e2e_" + randomHex(4)
		b.do(ctx, "fill the registration form",
			chromedp.SetValue(chromedp.CSS(`input[name=username]`), username),
			chromedp.SetValue(chromedp.CSS(`input[name=password]`), "pw-"+username),
			chromedp.Click(chromedp.CSS(`form button[type=submit]`)),
		)
		home := b.waitPage(ctx, "signed-in home page", func(p page) bool { return p.State == "Authenticated" })
		b.screenshot(ctx, "registered-home")
		if want := s.idp.userID(t, username); home.UserID != want {
			t.Errorf("home page #user-id %q, want the new user's id %q", home.UserID, want)
		}
	})

	t.Run("kakao", func(t *testing.T) {
		b := newBrowser(t)
		ctx := b.ctx
		b.navigate(ctx, s.URL+"/")
		b.waitPage(ctx, "anonymous home page", func(p page) bool { return p.State == "Not authenticated" })
		b.click(ctx, "#kakao")
		b.waitPage(ctx, "stand-in Kakao page", func(p page) bool {
			return strings.HasPrefix(p.URL, s.idp.base) && p.H1 == "Kakao" && strings.HasSuffix(p.Form, "/kakao")
		})
		b.screenshot(ctx, "kakao-page")
		found := false
		for _, r := range s.idp.authRequests(t, s.appID) {
			if r["direct_sign_in"] == "social:kakao" {
				found = true
			}
		}
		if !found {
			t.Errorf("no authorization request carried direct_sign_in=social:kakao")
		}
		b.click(ctx, "form button[type=submit]")
		home := b.waitPage(ctx, "signed-in home page", func(p page) bool { return p.State == "Authenticated" })
		b.screenshot(ctx, "kakao-home")
		if home.Name != "Kakao User" {
			t.Errorf("home page #name %q, want Kakao User", home.Name)
		}
	})
}

// TestBrowserTwoTabsSignInAtOnce proves that sign-in attempts do not clobber
// each other: two tabs sent to Logto at the same time (two attempts, two
// states, two attempt cookies) both complete, each on its own page, with no
// error page on the way.
//
// Logto keeps one sign-in interaction per browser (its interaction cookie
// has path "/"; the dev IdP does the same), so the tab whose interaction was
// superseded cannot submit its stale form. It starts its authorization
// request again (the same URL Caddy sent it to) and, since the IdP now has
// a session, is sent straight back with a code for its own state: the
// module must still hold that attempt after the other one completed.
func TestBrowserTwoTabsSignInAtOnce(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := newSite(t, env.idp)
	s.start(gatedCaddyfile(""), "", nil)
	b := newBrowser(t)
	tab1, tab2 := b.ctx, b.newTab()

	b.navigate(tab2, s.URL+"/private/b")
	b.waitPage(tab2, "tab 2 at the IdP", func(p page) bool { return strings.HasPrefix(p.URL, s.idp.base) && p.LoginForm })
	b.navigate(tab1, s.URL+"/private/a")
	b.waitPage(tab1, "tab 1 at the IdP", func(p page) bool { return strings.HasPrefix(p.URL, s.idp.base) && p.LoginForm })
	reqs := s.idp.authRequests(t, s.appID)
	if len(reqs) != 2 || reqs[0]["state"] == reqs[1]["state"] {
		t.Fatalf("want two authorization requests with distinct states, got %v", reqs)
	}

	b.signIn(tab1, "alice", "alice")
	p1 := b.waitPage(tab1, "tab 1 on /private/a", func(p page) bool { return p.State == "Private page" })
	b.screenshot(tab1, "tab1")

	q := url.Values{}
	for k, v := range reqs[0] {
		q.Set(k, fmt.Sprint(v))
	}
	b.navigate(tab2, s.idp.base+"/oidc/auth?"+q.Encode())
	p2 := b.waitPage(tab2, "tab 2 on /private/b", func(p page) bool { return p.State == "Private page" || p.LoginForm })
	b.screenshot(tab2, "tab2")

	sub := s.idp.userID(t, "alice")
	for _, c := range []struct {
		p    page
		path string
	}{{p1, "/private/a"}, {p2, "/private/b"}} {
		if c.p.URL != s.URL+c.path || c.p.Path != c.path || c.p.UserID != sub {
			t.Errorf("tab landed on %q (path %q, user %q), want %s as %s", c.p.URL, c.p.Path, c.p.UserID, c.path, sub)
		}
	}
	// The first tab is still signed in after the second sign-in replaced
	// the session cookie.
	b.navigate(tab1, s.URL+"/private/a2")
	if p := b.waitPage(tab1, "tab 1 again", func(p page) bool { return p.State != "" || p.LoginForm }); p.UserID != sub {
		t.Errorf("tab 1 after tab 2 signed in: %+v", p)
	}
	if docs := b.errorDocuments(); len(docs) > 0 {
		t.Errorf("documents answered with errors: %v", docs)
	}
}

// TestBrowserSignOut proves sign-out ends both sessions: #sign-out lands on
// the home page signed out, the refresh token is revoked and Logto's session
// is ended (so /private/ shows Logto's login form again rather than bouncing
// straight back signed in).
func TestBrowserSignOut(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")
	b := newBrowser(t)
	ctx := b.ctx

	b.navigate(ctx, s.URL+"/private/")
	b.signIn(ctx, "carol", "carol")
	b.waitPage(ctx, "private page", func(p page) bool { return p.State == "Private page" })
	before := s.idp.stats(t)

	b.click(ctx, "#sign-out")
	// The click returns before the navigation starts: wait until the
	// browser has left the private page and come back from Logto.
	home := b.waitPage(ctx, "home page after sign-out", func(p page) bool {
		return strings.HasPrefix(p.URL, s.URL) && !strings.HasPrefix(p.URL, s.URL+"/private/") && p.State != ""
	})
	b.screenshot(ctx, "signed-out-home")
	if home.URL != s.URL+"/" || home.State != "Not authenticated" {
		t.Errorf("after sign-out: %q shows %q, want %s/ showing Not authenticated", home.URL, home.State, s.URL)
	}
	after := s.idp.stats(t)
	if after.Revocations <= before.Revocations {
		t.Errorf("no refresh token revocation at sign-out (stats before %+v, after %+v)", before, after)
	}
	if after.EndSessions <= before.EndSessions {
		t.Errorf("Logto's session was not ended at sign-out (stats before %+v, after %+v)", before, after)
	}

	b.navigate(ctx, s.URL+"/private/")
	p := b.waitPage(ctx, "IdP login page again", func(p page) bool {
		return p.LoginForm || p.State == "Private page"
	})
	b.screenshot(ctx, "private-after-sign-out")
	if !p.LoginForm || !strings.HasPrefix(p.URL, s.idp.base) {
		t.Errorf("after sign-out /private/ shows %+v, want the IdP's login form", p)
	}
}

// TestBrowserFetchGets401 proves that script requests are never redirected
// to a sign-in page they cannot follow: fetch('/private/') and an XHR from
// the public page get 401 with WWW-Authenticate, and no redirect.
func TestBrowserFetchGets401(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")
	b := newBrowser(t)
	ctx := b.ctx

	b.navigate(ctx, s.URL+"/")
	b.waitPage(ctx, "anonymous home page", func(p page) bool { return p.State == "Not authenticated" })

	type result struct {
		Status     int    `json:"status"`
		Redirected bool   `json:"redirected"`
		URL        string `json:"url"`
		WWW        string `json:"www"`
	}
	f := evalJSON[result](b, ctx, `fetch('/private/').then(r => ({status: r.status, redirected: r.redirected, url: r.url, www: r.headers.get('WWW-Authenticate') || ''}))`)
	if f.Status != 401 || f.Redirected || f.URL != s.URL+"/private/" || f.WWW == "" {
		t.Errorf("fetch('/private/') = %+v, want 401 with WWW-Authenticate and no redirect", f)
	}
	x := evalJSON[result](b, ctx, `new Promise((ok) => {
		const x = new XMLHttpRequest();
		x.open('GET', '/private/');
		x.onloadend = () => ok({status: x.status, redirected: x.responseURL !== location.origin + '/private/', url: x.responseURL, www: x.getResponseHeader('WWW-Authenticate') || ''});
		x.send();
	})`)
	if x.Status != 401 || x.Redirected || x.WWW == "" {
		t.Errorf("XHR /private/ = %+v, want 401 with WWW-Authenticate and no redirect", x)
	}
	if reqs := s.idp.authRequests(t, s.appID); len(reqs) != 0 {
		t.Errorf("script requests reached the IdP: %v", reqs)
	}
}
