package logto

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestForgedLogoutTokenDoesNotWaitForKeyFetch stops anonymous callers from
// tying up the back-channel endpoint: a token with an unknown kid, once the
// refetch allowance is spent, used to queue behind the lock of a key fetch
// in progress (up to its 10 s timeout) after an ECDSA verification per key.
// It is rejected at once.
func TestForgedLogoutTokenDoesNotWaitForKeyFetch(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.signedIn()
	forge := tokenSignedByUnknownKey("kid-unknown")
	for range refetchBurst + 1 {
		hx.postLogout(forge(hx.idp.logoutClaims("user-1"))).mustHandlerError(t, http.StatusBadRequest)
	}
	_, _, err := hx.h.client.idp.discover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ks := hx.h.client.idp.keys
	ks.fetching.Lock() // a slow key fetch is in progress
	done := make(chan *result, 1)
	go func() { done <- hx.postLogout(forge(hx.idp.logoutClaims("user-1"))) }()
	select {
	case res := <-done:
		ks.fetching.Unlock()
		res.mustHandlerError(t, http.StatusBadRequest)
	case <-time.After(20 * time.Second):
		ks.fetching.Unlock()
		<-done
		t.Fatal("a forged logout token waited for a key fetch")
	}
}

// TestLogoutEndpointBoundsItsInput: a logout token is a few hundred bytes;
// bodies and tokens far beyond that are refused before any parsing of the
// token or signature check.
func TestLogoutEndpointBoundsItsInput(t *testing.T) {
	hx := newHarness(t, nil, nil)
	before := hx.idp.jwksHits.Load() + hx.idp.discoveryHits.Load()
	big := hx.idp.logoutToken("user-1", func(c map[string]any) { c["pad"] = strings.Repeat("x", maxLogoutToken) })
	hx.postLogout(big).mustHandlerError(t, http.StatusBadRequest)
	body := url.Values{"logout_token": {"x"}, "pad": {strings.Repeat("x", maxLogoutBody)}}.Encode()
	res := hx.serveBody(http.MethodPost, "/logto/backchannel-logout", strings.NewReader(body), nil,
		withHeader("Content-Type", "application/x-www-form-urlencoded"))
	if st := res.status(); st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", st)
	}
	if n := hx.idp.jwksHits.Load() + hx.idp.discoveryHits.Load() - before; n != 0 {
		t.Errorf("oversized input cost Logto %d requests", n)
	}
}

// BenchmarkForgedLogoutToken is what an anonymous caller costs the
// back-channel endpoint with a token that has the right iss and aud but is
// signed by a key of its own, under a kid the tenant does not have or under
// the tenant's kid. Keys are cached and the refetch allowance spent, as
// under a flood.
func BenchmarkForgedLogoutToken(b *testing.B) {
	for _, c := range []struct{ name, kid string }{{"unknown kid", "kid-unknown"}, {"tenant kid", ""}} {
		b.Run(c.name, func(b *testing.B) {
			hx := newHarness(b, nil, nil)
			hx.signIn(newBrowser(), "/", "user-1")
			kid := c.kid
			if kid == "" {
				kid = hx.idp.kid()
			}
			token := tokenSignedByUnknownKey(kid)(hx.idp.logoutClaims("user-1"))
			body := url.Values{"logout_token": {token}}.Encode()
			for range refetchBurst + 1 {
				hx.postLogout(token)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r, _, w := newRequest(http.MethodPost, "/logto/backchannel-logout", strings.NewReader(body),
					withHeader("Content-Type", "application/x-www-form-urlencoded"))
				if err := hx.h.ServeHTTP(w, r, nopNext); err == nil {
					b.Fatal("forged token accepted")
				}
			}
		})
	}
}

// TestLogoutEndpointBoundsConcurrency: while as many logout tokens as the
// endpoint verifies at once are in progress, another waits (it does no
// work) and gives up cleanly when its client goes away.
func TestLogoutEndpointBoundsConcurrency(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for range cap(logoutSlots) {
		logoutSlots <- struct{}{}
	}
	defer func() {
		for range cap(logoutSlots) {
			<-logoutSlots
		}
	}()
	before := hx.idp.requests.Load()
	body := url.Values{"logout_token": {hx.idp.logoutToken("user-1", nil)}}.Encode()
	r, _, w := newRequest(http.MethodPost, "/logto/backchannel-logout", strings.NewReader(body),
		withHeader("Content-Type", "application/x-www-form-urlencoded"))
	ctx, cancel := context.WithCancel(r.Context())
	cancel()
	res, _ := hx.serveCatching(r.WithContext(ctx), nil, w, nil)
	if st := res.status(); st != http.StatusServiceUnavailable {
		t.Errorf("a token over the concurrency bound answered %d, want 503", st)
	}
	if n := hx.idp.requests.Load() - before; n != 0 {
		t.Errorf("a token over the concurrency bound cost Logto %d requests", n)
	}
}
