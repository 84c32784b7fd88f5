package logto

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// mustClearSession checks the response expires the session cookie.
func mustClearSession(t *testing.T, res *result) {
	t.Helper()
	c := res.setCookie(t, sessionCookie)
	if c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Fatalf("session cookie not cleared: %v", res.rec.Header().Values("Set-Cookie"))
	}
	if !c.Secure || c.Path != "/" {
		// A __Host- cookie is only replaced by one with Secure and Path=/.
		t.Errorf("clearing cookie %q would be ignored by the browser", c.Raw)
	}
}

// TestSessionLifetimeEnds: a session ends session_lifetime after sign-in
// however active it is, so a stolen cookie does not live forever.
func TestSessionLifetimeEnds(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.SessionLifetime = caddy.Duration(2 * time.Hour) })
	b := hx.signedIn()
	hx.clock.Advance(90 * time.Minute) // past the ID token, within the session
	mustPass(t, hx.serve(http.MethodGet, "/", b, navigation()), "user-1")
	hx.clock.Advance(31 * time.Minute)
	stale := b.clone()
	res := hx.serve(http.MethodGet, "/", b, navigation())
	hx.mustRedirectToAuth(t, res)
	mustClearSession(t, res)
	hx.serve(http.MethodGet, "/", stale, fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
}

// TestSessionIdleTimeout: a session unused for idle_timeout ends (a
// forgotten shared computer); activity keeps it going.
func TestSessionIdleTimeout(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.IdleTimeout = caddy.Duration(30 * time.Minute) })
	b := hx.signedIn()
	for range 3 {
		hx.clock.Advance(20 * time.Minute)
		mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	}
	old := b.clone()
	hx.clock.Advance(31 * time.Minute)
	res := hx.serve(http.MethodGet, "/", b, navigation())
	hx.mustRedirectToAuth(t, res)
	mustClearSession(t, res)
	hx.mustBeSignedOut(t, old)
}

// TestSessionIdleTimeoutOldCookie: an idle-refreshed session re-issues its
// cookie; an older copy of the cookie (taken before the activity) still
// ends at its own idle time, it is not kept alive by the victim's activity.
func TestSessionIdleTimeoutOldCookie(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.IdleTimeout = caddy.Duration(30 * time.Minute) })
	b := hx.signedIn()
	copied := b.clone()
	hx.clock.Advance(20 * time.Minute)
	res := hx.serve(http.MethodGet, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if !res.newSession(t) {
		t.Fatal("activity did not re-issue the session cookie")
	}
	hx.clock.Advance(15 * time.Minute)
	mustPass(t, hx.serve(http.MethodGet, "/", b.clone(), fetchAPI()), "user-1")
	hx.mustBeSignedOut(t, copied)
}

// TestTamperedSessionCookie: a session cookie that was altered, cut,
// padded or made up means "signed out": never a 500, never a user.
func TestTamperedSessionCookie(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	good := b.get(sessionCookie)
	flip := func(s string, i int) string {
		c := byte('A')
		if s[i] == 'A' {
			c = 'B'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	for _, c := range []struct{ name, value string }{
		{"flipped first byte", flip(good, 0)},
		{"flipped middle", flip(good, len(good)/2)},
		{"flipped last", flip(good, len(good)-1)},
		{"truncated", good[:len(good)-10]},
		{"half", good[:len(good)/2]},
		{"appended", good + "AAAA"},
		{"empty", ""},
		{"garbage", "not-a-session"},
		{"base64 of JSON", "eyJpIjoieCIsInQiOiJ4IiwiZSI6OTk5OTk5OTk5OX0"},
		{"chunk marker without chunks", "3*" + good},
		{"single chunk marker", "1*" + good[:100]},
		{"huge", strings.Repeat("A", 5000)},
		{"quoted", `"` + good + `"x`},
	} {
		t.Run(c.name, func(t *testing.T) {
			evil := newBrowser()
			evil.set(sessionCookie, c.value)
			res := hx.serve(http.MethodGet, "/", evil, fetchAPI())
			res.mustHandlerError(t, http.StatusUnauthorized)
			hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/", evil, navigation()))
			if res := hx.serve(http.MethodGet, "/logto/user", evil); res.status() != http.StatusUnauthorized {
				t.Errorf("/logto/user answered %d", res.status())
			}
		})
	}
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
}

// TestSessionCookieFromAnotherKey: a cookie sealed by another site or
// application (another key) is not a session here, even for the same
// Logto tenant: one site's cookie must not open another.
func TestSessionCookieFromAnotherKey(t *testing.T) {
	idp := newFakeIdP(t)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{"site-a-" + randomString(24)} })
	other := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{"site-b-" + randomString(24)} })
	b := other.signedIn()
	mustPass(t, other.serve(http.MethodGet, "/", b.clone(), fetchAPI()), "user-1")
	a.mustBeSignedOut(t, b)
}

// TestCookieSecretRotation: putting a new secret first keeps existing
// sessions (the old key still opens), and once the old secret is removed
// they end.
func TestCookieSecretRotation(t *testing.T) {
	idp := newFakeIdP(t)
	oldKey, newKey := "old-"+randomString(24), "new-"+randomString(24)
	before := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{oldKey} })
	rotated := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{newKey, oldKey} })
	after := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{newKey} })

	b := before.signedIn()
	mustPass(t, rotated.serve(http.MethodGet, "/", b.clone(), fetchAPI()), "user-1")
	after.mustBeSignedOut(t, b)

	// Sessions made after rotation are sealed with the new key.
	nb := rotated.signedIn()
	mustPass(t, after.serve(http.MethodGet, "/", nb.clone(), fetchAPI()), "user-1")
	before.mustBeSignedOut(t, nb)
}

// TestDerivedCookieKeysDependOnAppSecret: without cookie_secret the keys
// come from the app secret, so a site with another app secret (or a leaked
// old one after rotation in Console) cannot forge or open sessions.
func TestDerivedCookieKeysDependOnAppSecret(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, nil)
	b := hx.signedIn()
	other := newHarness(t, idp, func(h *Handler) { h.AppSecret = idp.appSecret + "-rotated" })
	other.mustBeSignedOut(t, b)
}

// TestAttemptCookieIsNotASession: values are sealed for their purpose, so
// an attempt cookie's value (which a visitor gets for free by being sent to
// sign in) is not accepted as a session, and a session value is not an
// attempt.
func TestAttemptCookieIsNotASession(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := newBrowser()
	hx.startSignIn(b, "/")
	names := b.names(attemptPrefix)
	if len(names) != 1 {
		t.Fatalf("attempt cookies %v", names)
	}
	swapped := newBrowser()
	swapped.set(sessionCookie, b.get(names[0]))
	hx.mustBeSignedOut(t, swapped)

	signed := hx.signedIn()
	auth := hx.startSignIn(newBrowser(), "/")
	state := auth.Query().Get("state")
	evil := newBrowser()
	evil.set(attemptPrefix+state[:12], signed.get(sessionCookie))
	code := hx.idp.issueCode(auth, "user-1")
	mustRejectCallback(t, hx.serve(http.MethodGet, hx.callbackURL(auth, code), evil))
}

// TestExpiredSessionClearsCookie: an ended session's cookie is removed,
// so the browser stops sending dead weight (and the module stops
// decrypting it).
func TestExpiredSessionClearsCookie(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.SessionLifetime = caddy.Duration(time.Hour) })
	b := hx.signedIn()
	hx.clock.Advance(time.Hour + time.Second)
	res := hx.serve(http.MethodGet, "/", b, fetchAPI())
	res.mustHandlerError(t, http.StatusUnauthorized)
	mustClearSession(t, res)
	if b.get(sessionCookie) != "" {
		t.Error("browser kept the session cookie")
	}
}

// TestShrunkSessionLifetime: sessions made under a longer lifetime end
// when the configuration shortens it.
func TestShrunkSessionLifetime(t *testing.T) {
	idp := newFakeIdP(t)
	secret := randomString(24)
	long := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b := long.signedIn()
	short := newHarness(t, idp, func(h *Handler) {
		h.CookieSecrets = []string{secret}
		h.SessionLifetime = caddy.Duration(time.Hour)
	})
	idp.clock.Advance(2 * time.Hour) // the one clock of both
	short.mustBeSignedOut(t, b)
}
