package logto

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// mustNotBeShared checks a response that sets a cookie cannot be stored by
// a shared cache.
func mustNotBeShared(t *testing.T, what string, h http.Header) {
	t.Helper()
	if len(h.Values("Set-Cookie")) == 0 {
		t.Fatalf("%s: no cookie set; the test does not test anything", what)
	}
	cc := strings.ToLower(strings.Join(h.Values("Cache-Control"), ", "))
	if !strings.Contains(cc, "private") && !strings.Contains(cc, "no-store") {
		t.Errorf("%s: Cache-Control %q lets a shared cache store a response that sets the session cookie", what, cc)
	}
	if strings.Contains(cc, "public") || strings.Contains(cc, "s-maxage") {
		t.Errorf("%s: Cache-Control %q", what, cc)
	}
}

// publicNext is content that asks to be cached by everyone, as a static
// file behind `header Cache-Control "public, max-age=3600"` or an upstream
// might.
var publicNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "public, max-age=3600, s-maxage=3600")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte("page"))
	return err
})

func (hx *harness) servePublic(target string, b *tbrowser, opts ...reqOpt) *result {
	r, _, w := newRequest(http.MethodGet, target, nil, append([]reqOpt{b.send}, opts...)...)
	err := hx.h.ServeHTTP(w, r, publicNext)
	res := &result{rec: w, err: err}
	b.absorb(hx.t, res)
	return res
}

// TestSessionCookieResponsesAreNotShared stops a CDN or shared proxy in
// front of Caddy from handing one user's session cookie to another: every
// response through the gate that sets, refreshes or clears the session
// cookie is marked private, whatever the content behind it asked for; the
// callback and the refresh paths included.
func TestSessionCookieResponsesAreNotShared(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.IdleTimeout = caddy.Duration(2 * time.Hour) })
	b := newBrowser()
	cb := hx.signIn(b, "/", "user-1")
	mustNotBeShared(t, "callback", cb.rec.Header())

	hx.clock.Advance(61 * time.Minute) // refresh
	res := hx.servePublic("/", b, navigation())
	if res.err != nil || res.rec.Code != http.StatusOK {
		t.Fatalf("refresh: %v %d", res.err, res.rec.Code)
	}
	mustNotBeShared(t, "refresh", res.rec.Header())

	hx.clock.Advance(15 * time.Minute) // idle tracking re-seals
	res = hx.servePublic("/", b, fetchAPI())
	mustNotBeShared(t, "idle re-seal", res.rec.Header())

	// A plain signed-in request sets nothing and keeps the content's own
	// caching.
	res = hx.servePublic("/", b, fetchAPI())
	if n := len(res.rec.Header().Values("Set-Cookie")); n != 0 {
		t.Fatalf("an unchanged session set %d cookies", n)
	}

	hx.clock.Advance(3 * time.Hour) // idle: the cookie is cleared
	pass := newHarness(t, hx.idp, func(h *Handler) { h.Pass = true; h.IdleTimeout = caddy.Duration(2 * time.Hour) })
	res = pass.servePublic("/", b, fetchAPI())
	mustNotBeShared(t, "cleared session", res.rec.Header())
}

// TestRefreshedCookieOnErrorIsNotShared: a refresh can happen on a request
// that then fails (a rule says 403); the error goes to handle_errors with
// the new session cookie set, and must be private too.
func TestRefreshedCookieOnErrorIsNotShared(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"owner"}}} })
	b := hx.signedIn()
	hx.clock.Advance(61 * time.Minute)
	r, _, w := newRequest(http.MethodGet, "/", nil, b.send, fetchAPI())
	err := hx.h.ServeHTTP(w, r, publicNext)
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden {
		t.Fatalf("want 403, got %v", err)
	}
	mustNotBeShared(t, "403 after a refresh", w.Header())
}

// TestStepUpRefusalWithCookieIsNotShared stops a shared cache from storing
// a step-up 403 that carries the user's re-sealed session cookie and
// handing it to others: the request that is refused may be the one on which
// the session's activity was recorded (or the session refreshed), and
// every answer of the gate that does not let the request through is
// marked private when it sets a cookie, not only a rule's 403.
func TestStepUpRefusalWithCookieIsNotShared(t *testing.T) {
	// The stepped-up session still lacks something: 403, not another trip.
	idp, _, strict, b := steppedUpStillLacking(t, func(h *Handler) { h.IdleTimeout = caddy.Duration(time.Hour) })
	idp.clock.Advance(7 * time.Minute) // activity is recorded: the cookie is re-sealed
	res := strict.serve(http.MethodGet, "/admin", b, navigation())
	res.mustHandlerError(t, http.StatusForbidden)
	mustNotBeShared(t, "step-up 403", res.rec.Header())
}
