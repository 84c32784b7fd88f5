package logto

import (
	"encoding/json"
	"net/http"
	"reflect"
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

// TestSessionWireRoundTrip: every session, whatever its tokens look like
// (canonical base64url or not, empty), comes back exactly; the ID token
// byte for byte, since its signature covers it.
func TestSessionWireRoundTrip(t *testing.T) {
	hx := newHarness(t, nil, nil)
	genuine := hx.idp.sign(hx.idp.idClaims("user-1", "n"))
	for _, s := range []session{
		{ID: randomString(16), IDToken: genuine, Refresh: randomString(32), Created: 1764400000123, Seen: 1764400000, Idle: 12, Expires: 1765600000, Gen: 7},
		{ID: "not base64!", IDToken: "a.b.c", Created: 1},
		{ID: "x", IDToken: genuine + "=", Refresh: "padded=="},
		{ID: "x", IDToken: strings.Replace(genuine, ".", "..", 1)},
		{ID: "AB", IDToken: "AB.AB.AB"}, // non-canonical trailing bits
		{ID: "x", IDToken: genuine, Scopes: []string{"email", "o:r", ""}, Resources: []string{"https://api.example.com"}, StepUp: true},
		{ID: "x", IDToken: genuine, Access: randomString(43), AccessExp: 1764403600},
		{ID: "x", IDToken: genuine, Access: "opaque, not base64", StepUp: true},
		{},
	} {
		got, err := decodeSession(encodeSession(s))
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Errorf("round trip of %+v: %+v, %v", s, got, err)
		}
	}
}

// TestOldSessionFormatMeansSignedOut: a cookie of the previous format (JSON,
// still sealed with a key this instance holds) is "signed out", not a 500.
func TestOldSessionFormatMeansSignedOut(t *testing.T) {
	hx := newHarness(t, nil, nil)
	now := hx.clock.Now()
	old, _ := json.Marshal(map[string]any{
		"i": randomString(16), "t": hx.idp.sign(hx.idp.idClaims("user-1", "")), "r": randomString(32),
		"c": now.UnixMilli(), "s": now.Unix(), "e": now.Unix() + 3600,
	})
	b := newBrowser()
	b.set(sessionCookie, hx.h.client.sessions.Seal(sessionAAD, old))
	hx.mustBeSignedOut(t, b)
	if res := hx.serve(http.MethodGet, "/logto/user", b); res.status() != http.StatusUnauthorized {
		t.Errorf("/logto/user: %d", res.status())
	}
}

// TestSessionFromAnotherApplicationDoesNotOpen stops a session of one
// application from opening another that shares its cookie_secret (a
// tenant's several sites, or another tenant): a cookie from app A used to
// pass app B's `require role admin`. Keys are bound to the issuer and the
// app_id.
func TestSessionFromAnotherApplicationDoesNotOpen(t *testing.T) {
	secret := randomString(32)
	idp := newFakeIdP(t)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b := a.signedIn()
	mustPass(t, a.serve(http.MethodGet, "/", b.clone(), fetchAPI()), "user-1")

	sameTenant := newHarness(t, idp, func(h *Handler) {
		h.AppID = idp.appID + "-b"
		h.CookieSecrets = []string{secret}
		h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}}
	})
	sameTenant.mustBeSignedOut(t, b)

	otherTenant := newHarness(t, nil, func(h *Handler) {
		h.AppID = idp.appID // even the same app id, on another tenant
		h.CookieSecrets = []string{secret}
		h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}}
	})
	otherTenant.mustBeSignedOut(t, b)
}

// sealForged seals a session around idToken with hx's own cookie key, as
// someone holding the key (a leaked cookie_secret, or app_secret when the
// keys are derived from it) could.
func sealForged(t *testing.T, hx *harness, idToken string) *tbrowser {
	t.Helper()
	now := hx.clock.Now()
	asked := hx.h.signInNeeds()
	u, err := newUser(session{
		ID: randomString(16), IDToken: idToken, Refresh: randomString(32),
		Created: now.UnixMilli(), Seen: now.Unix(), Expires: now.Add(time.Hour).Unix(),
		Scopes: abbreviateAsked(asked.scopes), Resources: abbreviateAsked(asked.resources),
	})
	if err != nil {
		t.Fatalf("sealing a session around the token: %v", err)
	}
	b := newBrowser()
	b.set(sessionCookie, hx.h.client.sessions.Seal(sessionAAD, u.encode()))
	return b
}

// TestForgedIDTokenInSealedSessionIsRejected stops whoever holds the
// cookie key from minting any user: a cookie sealed with the right key
// around an unsigned (alg none) ID token with an invented role used to pass
// `require role admin`. The ID token in a session is verified (signature
// with the tenant's keys, iss, aud) when a cookie is first decoded.
func TestForgedIDTokenInSealedSessionIsRejected(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) {
		h.CookieSecrets = []string{randomString(32)}
		h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}}
	})
	idp := hx.idp
	hx.signedIn() // the keys are known
	claims := func() map[string]any {
		c := idp.idClaims("mallory", "")
		c["roles"] = []any{"admin"}
		return c
	}
	genuine := idp.sign(claims())
	owner := claims()
	owner["roles"] = []any{"admin", "owner"}
	mustPass(t, hx.serve(http.MethodGet, "/", sealForged(t, hx, genuine), fetchAPI()), "mallory")

	for _, c := range []struct{ name, token string }{
		{"alg none", tokenAlgNone(claims())},
		{"HS256 keyed with the app secret", idp.tokenHS256(claims())},
		{"signed by another key, the tenant's kid", tokenSignedByUnknownKey(idp.kid())(claims())},
		{"signed by another key, another kid", tokenSignedByUnknownKey("other")(claims())},
		{"another issuer", idp.tokenEditedClaims(func(c map[string]any) { c["iss"] = "https://evil.example/oidc" })(claims())},
		{"another audience", idp.tokenEditedClaims(func(c map[string]any) { c["aud"] = "another-app" })(claims())},
		// Signed by the tenant with the right iss and aud, but not ID
		// tokens: with no exp, a session around one would never expire
		// nor refresh.
		{"a back-channel logout token", idp.logoutToken("mallory", nil)},
		{"no exp", idp.tokenEditedClaims(func(c map[string]any) { delete(c, "exp") })(claims())},
		{"tampered payload", genuine[:strings.IndexByte(genuine, '.')+1] + strings.Split(tokenAlgNone(owner), ".")[1] + genuine[strings.LastIndexByte(genuine, '.'):]},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx.mustBeSignedOut(t, sealForged(t, hx, c.token))
		})
	}
}

// TestStoredIDTokenExpiryIsNotARejection: an expired ID token in a cookie
// is the normal state of a session an hour after sign-in (the refresh
// replaces it), so a cookie first decoded by an instance (a restart, a
// second instance) after that still works.
func TestStoredIDTokenExpiryIsNotARejection(t *testing.T) {
	idp := newFakeIdP(t)
	secret := randomString(32)
	hx := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b := hx.signedIn()
	idp.clock.Advance(3 * time.Hour)
	other := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	other.h.client = freshClient(t, other.h)
	mustPass(t, other.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
}

// TestVerifiedSessionsSurviveLogtoOutage: when Logto (and so its keys)
// cannot be reached, sessions whose ID token this instance has verified
// keep working, even when their cookie is re-sealed or drops out of the
// decoded-session cache; an ID token never verified here is refused.
func TestVerifiedSessionsSurviveLogtoOutage(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.IdleTimeout = caddy.Duration(time.Hour) })
	b := hx.signedIn()
	hx.idp.down.Store(true)
	hx.h.client.users = newUserCache(maxCachedUsers) // forgotten
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	hx.clock.Advance(20 * time.Minute) // re-sealed (idle tracking)
	res := hx.serve(http.MethodGet, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	hx.h.client.users = newUserCache(maxCachedUsers)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	hx.mustBeSignedOut(t, sealForged(t, hx, tokenSignedByUnknownKey(hx.idp.kid())(hx.idp.idClaims("mallory", ""))))
}

// TestRestartDuringOutageKeepsSessions: an instance started while Logto is
// unreachable cannot fetch the keys to verify the sessions it is shown, so
// it uses the tenant's keys as last fetched, kept sealed in Caddy's storage
// (sealed: whoever can write to storage but lacks the cookie key cannot slip
// in a key of their own). Sessions keep working; forged ones do not.
func TestRestartDuringOutageKeepsSessions(t *testing.T) {
	idp := newFakeIdP(t)
	secret := randomString(32)
	hx := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b := hx.signedIn()
	idp.down.Store(true)
	restarted := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	restarted.h.client = freshClient(t, restarted.h)
	mustPass(t, restarted.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	for _, forged := range []string{
		tokenSignedByUnknownKey(idp.kid())(idp.idClaims("mallory", "")),
		tokenAlgNone(idp.idClaims("mallory", "")),
		idp.tokenEditedClaims(func(c map[string]any) { c["aud"] = "another-app" })(idp.idClaims("mallory", "")),
	} {
		// (A navigation would be sent to sign in, which is a 502 while
		// Logto is down.)
		restarted.serve(http.MethodGet, "/", sealForged(t, restarted, forged), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	}
}

// TestShortCookieSecretRefused stops a guessable cookie key: a short
// cookie_secret (`hunter2`) was recovered offline from one cookie, and
// HKDF does not stretch. Under 32 bytes is a provisioning error that says
// how to make a good one.
func TestShortCookieSecretRefused(t *testing.T) {
	idp := newFakeIdP(t)
	for _, secret := range []string{"hunter2", strings.Repeat("x", 31)} {
		h := &Handler{Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, CookieSecrets: []string{secret}}
		err := h.Provision(testCaddyContext(t))
		if err == nil {
			t.Fatalf("a %d-byte cookie_secret was accepted", len(secret))
		}
		if !strings.Contains(err.Error(), "openssl rand -base64 32") || strings.Contains(err.Error(), secret) {
			t.Errorf("error %q must say how to make a secret, and not show it", err)
		}
	}
	// An older secret in the list is held to the same bar.
	h := &Handler{Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, CookieSecrets: []string{randomString(32), "hunter2"}}
	if err := h.Provision(testCaddyContext(t)); err == nil {
		t.Error("a short older cookie_secret was accepted")
	}
}

// TestSessionKeysBoundToApplication: beyond the ID token's iss and aud,
// the cookie keys themselves are derived for one issuer and app_id, so a
// value sealed for one application does not even decrypt in another that
// shares cookie_secret.
func TestSessionKeysBoundToApplication(t *testing.T) {
	secret := randomString(32)
	idp := newFakeIdP(t)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	sealed := a.h.client.sessions.Seal(sessionAAD, []byte("payload"))
	for name, configure := range map[string]func(h *Handler){
		"another app_id": func(h *Handler) { h.AppID = idp.appID + "-b" },
		"another tenant": func(h *Handler) { h.Endpoint = "https://other.logto.example" },
	} {
		b := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret}; configure(h) })
		if _, err := b.h.client.sessions.Open(sessionAAD, sealed); err == nil {
			t.Errorf("%s: a session value of one application opens in the other", name)
		}
		if _, err := b.h.client.attempts.Open(attemptAAD, a.h.client.attempts.Seal(attemptAAD, []byte("x"))); err == nil {
			t.Errorf("%s: a sign-in attempt of one application opens in the other", name)
		}
	}
}
