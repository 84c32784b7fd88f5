package logto

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

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
