package logto

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// postLogout delivers a logout token as Logto does: a form POST.
func (hx *harness) postLogout(token string) *result {
	body := url.Values{"logout_token": {token}}.Encode()
	return hx.serveBody(http.MethodPost, "/logto/backchannel-logout", strings.NewReader(body), nil,
		withHeader("Content-Type", "application/x-www-form-urlencoded"))
}

func mustAccept(t *testing.T, res *result) {
	t.Helper()
	if res.err != nil || res.rec.Code != http.StatusOK {
		t.Fatalf("logout token refused: err=%v code=%d", res.err, res.rec.Code)
	}
	if cc := res.rec.Header().Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Errorf("Cache-Control %q", cc)
	}
}

// TestBackchannelLogoutBySub: a logout token naming a user ends every
// session of that user that exists, and only those: other users stay, and
// the user can sign in again.
func TestBackchannelLogoutBySub(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.idp.addUser("user-2", map[string]any{"name": "Grace"})
	laptop, phone := hx.signedIn(), hx.signedIn()
	other := newBrowser()
	hx.signIn(other, "/", "user-2")

	mustAccept(t, hx.postLogout(hx.idp.logoutToken("user-1", nil)))
	hx.mustBeSignedOut(t, laptop)
	hx.mustBeSignedOut(t, phone)
	mustPass(t, hx.serve(http.MethodGet, "/", other, fetchAPI()), "user-2")

	hx.clock.Advance(2 * time.Second)
	again := hx.signedIn()
	mustPass(t, hx.serve(http.MethodGet, "/", again, fetchAPI()), "user-1")
}

// TestBackchannelLogoutBySID: with "session required" Logto names its
// session (sid); only the sessions bound to it end.
func TestBackchannelLogoutBySID(t *testing.T) {
	hx := newHarness(t, nil, nil)
	setSID := func(sid string) {
		hx.idp.mu.Lock()
		hx.idp.users["user-1"]["sid"] = sid
		hx.idp.mu.Unlock()
	}
	setSID("logto-session-1")
	first := hx.signedIn()
	setSID("logto-session-2")
	second := hx.signedIn()
	mustAccept(t, hx.postLogout(hx.idp.logoutToken("", func(c map[string]any) {
		delete(c, "sub")
		c["sid"] = "logto-session-1"
	})))
	hx.mustBeSignedOut(t, first)
	mustPass(t, hx.serve(http.MethodGet, "/", second, fetchAPI()), "user-1")
}

// TestBackchannelLogoutRejectsHostileTokens: the endpoint is reachable by
// anyone, so every logout token that is not genuinely Logto's, for this
// application, fresh and for logout, is refused and ends nothing
// (otherwise anyone could sign any user out).
func TestBackchannelLogoutRejectsHostileTokens(t *testing.T) {
	hx := newHarness(t, nil, nil)
	idp := hx.idp
	b := hx.signedIn()
	edit := func(f func(map[string]any)) string { return idp.logoutToken("user-1", f) }
	for _, c := range []struct {
		name, attack, token string
	}{
		{"forged signature", "a token signed with the attacker's key under Logto's kid",
			tokenSignedByUnknownKey(idp.kid())(idp.logoutClaims("user-1"))},
		{"unknown key", "a token signed with an unknown kid",
			tokenSignedByUnknownKey("attacker")(idp.logoutClaims("user-1"))},
		{"alg none", "an unsigned token", tokenAlgNone(idp.logoutClaims("user-1"))},
		{"HS256", "algorithm confusion with the client secret", idp.tokenHS256(idp.logoutClaims("user-1"))},
		{"wrong aud", "a logout meant for another application",
			edit(func(c map[string]any) { c["aud"] = "another-app" })},
		{"wrong iss", "a logout from another tenant",
			edit(func(c map[string]any) { c["iss"] = "https://evil.example/oidc" })},
		{"missing events", "an ID token (or other JWT) passed off as a logout token",
			edit(func(c map[string]any) { delete(c, "events") })},
		{"other event", "a token for another event",
			edit(func(c map[string]any) {
				c["events"] = map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}
			})},
		{"with nonce", "an ID token passed off as a logout token",
			edit(func(c map[string]any) { c["nonce"] = "n" })},
		{"iat too old", "an old logout token replayed",
			edit(func(c map[string]any) { c["iat"] = idp.now().Add(-10 * time.Minute).Unix() })},
		{"iat in the future", "a token minted to stay valid",
			edit(func(c map[string]any) { c["iat"] = idp.now().Add(10 * time.Minute).Unix() })},
		{"no iat", "a token without age",
			edit(func(c map[string]any) { delete(c, "iat") })},
		{"no jti", "a token that cannot be checked for replay",
			edit(func(c map[string]any) { delete(c, "jti") })},
		{"neither sub nor sid", "a token naming nobody",
			edit(func(c map[string]any) { delete(c, "sub") })},
		{"not a JWT", "garbage", "not-a-token"},
		{"empty", "no token", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := hx.postLogout(c.token)
			res.mustHandlerError(t, http.StatusBadRequest)
			if leaked := res.err.Error(); strings.Contains(leaked, c.token) && c.token != "" {
				t.Errorf("error echoes the token")
			}
			mustPass(t, hx.serve(http.MethodGet, "/", b.clone(), fetchAPI()), "user-1")
		})
	}
}

// TestForgedLogoutTokensDoNotHammerLogto: anyone can post logout tokens,
// and a signature that does not verify makes the module fetch Logto's keys
// again (they may have rotated). A flood of forged tokens must not become a
// flood of requests to Logto.
func TestForgedLogoutTokensDoNotHammerLogto(t *testing.T) {
	hx := newHarness(t, nil, nil)
	idp := hx.idp
	b := hx.signedIn()
	before := idp.jwksHits.Load()
	for range 30 {
		res := hx.postLogout(tokenSignedByUnknownKey(idp.kid())(idp.logoutClaims("user-1")))
		res.mustHandlerError(t, http.StatusBadRequest)
	}
	if n := idp.jwksHits.Load() - before; n > refetchBurst {
		t.Errorf("30 forged logout tokens cost Logto %d key fetches, want at most %d", n, refetchBurst)
	}
	// A genuine token still works once the window has passed.
	hx.clock.Advance(refetchWindow)
	mustAccept(t, hx.postLogout(idp.logoutToken("user-1", nil)))
	hx.mustBeSignedOut(t, b)
}

// TestBackchannelLogoutReplay: a logout token is good once (by jti); a
// replay, after the user signed in again, must not sign them out again.
func TestBackchannelLogoutReplay(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.signedIn()
	token := hx.idp.logoutToken("user-1", nil)
	mustAccept(t, hx.postLogout(token))
	hx.clock.Advance(2 * time.Second)
	b := hx.signedIn()
	hx.postLogout(token).mustHandlerError(t, http.StatusBadRequest)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
}

// TestBackchannelLogoutRequest: only a form POST of bounded size is read.
func TestBackchannelLogoutRequest(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	token := hx.idp.logoutToken("user-1", nil)

	res := hx.serve(http.MethodGet, "/logto/backchannel-logout?logout_token="+url.QueryEscape(token), nil)
	res.mustHandlerError(t, http.StatusMethodNotAllowed)
	if res.rec.Header().Get("Allow") != http.MethodPost {
		t.Errorf("Allow %q", res.rec.Header().Get("Allow"))
	}

	huge := "logout_token=" + url.QueryEscape(token) + "&pad=" + strings.Repeat("a", 1<<20)
	res = hx.serveBody(http.MethodPost, "/logto/backchannel-logout", strings.NewReader(huge), nil,
		withHeader("Content-Type", "application/x-www-form-urlencoded"))
	if st := res.status(); st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge {
		t.Errorf("huge body: %d", st)
	}

	res = hx.serveBody(http.MethodPost, "/logto/backchannel-logout", strings.NewReader(`{"logout_token":"`+token+`"}`), nil,
		withHeader("Content-Type", "application/json"))
	res.mustHandlerError(t, http.StatusBadRequest)

	// The token in the query string of a POST is not the form.
	res = hx.serveBody(http.MethodPost, "/logto/backchannel-logout?logout_token="+url.QueryEscape(token), strings.NewReader(""), nil,
		withHeader("Content-Type", "application/x-www-form-urlencoded"))
	res.mustHandlerError(t, http.StatusBadRequest)

	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
}

// TestBackchannelLogoutReachesOtherInstances: Logto calls one instance;
// the logout list in Caddy's storage ends the session on every instance
// sharing it.
func TestBackchannelLogoutReachesOtherInstances(t *testing.T) {
	idp := newFakeIdP(t)
	secret := randomString(24)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	other := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	other.h.client = freshClient(t, other.h)
	b := a.signedIn()
	mustPass(t, other.serve(http.MethodGet, "/", b.clone(), fetchAPI()), "user-1")
	mustAccept(t, a.postLogout(idp.logoutToken("user-1", nil)))
	waitFor(t, "the other instance to load the logout", func() bool { return !other.h.client.revoked.set.empty() })
	other.mustBeSignedOut(t, b)
}

// TestBackchannelLogoutBySIDAndSubEndsSessionsWithoutSID stops a session
// from outliving Logto's logout because its ID token carries no sid: a
// logout token naming both sid and sub used to end only the sessions bound
// to that sid. Sessions of that user without a sid are ended by sub; those
// bound to another sid of the user are not.
func TestBackchannelLogoutBySIDAndSubEndsSessionsWithoutSID(t *testing.T) {
	hx := newHarness(t, nil, nil)
	noSID := hx.signedIn()
	hx.idp.mu.Lock()
	hx.idp.users["user-1"]["sid"] = "logto-session-2"
	hx.idp.mu.Unlock()
	otherSID := hx.signedIn()

	mustAccept(t, hx.postLogout(hx.idp.logoutToken("user-1", func(c map[string]any) { c["sid"] = "logto-session-1" })))
	hx.mustBeSignedOut(t, noSID)
	mustPass(t, hx.serve(http.MethodGet, "/", otherSID, fetchAPI()), "user-1")
}

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
	slots := logoutPool(hx)
	for range cap(slots) {
		slots <- struct{}{}
	}
	defer func() {
		for range cap(slots) {
			<-slots
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

// TestLogoutListAddDoesNotCopy: adding an entry to a long logout list
// costs what it costs on a short one. It used to copy the whole list
// (13 MB and a fifth of a second at 100 000 entries, under the lock every
// other logout waits for), so each sign-out cost more than the last.
func TestLogoutListAddDoesNotCopy(t *testing.T) {
	rv := newRevocations(zap.NewNop())
	until := time.Now().Add(time.Hour).Unix()
	entries := make([]revocation, 50000)
	for i := range entries {
		entries[i] = revocation{Kind: revokeSession, Value: randomString(16), At: 1, Until: until}
	}
	rv.merge(entries...)
	allocs := testing.AllocsPerRun(100, func() {
		rv.merge(revocation{Kind: revokeSub, Value: randomString(16), At: 1, Until: until})
	})
	if allocs > 10 {
		t.Errorf("adding to a list of 50 000 entries made %.0f allocations", allocs)
	}
	if n := rv.set.len(); n != 50000+101 {
		t.Errorf("list holds %d entries, want %d", n, 50000+101)
	}
}

// TestLogoutListSweep: entries past their time leave memory, and the
// count the gate reads stays right.
func TestLogoutListSweep(t *testing.T) {
	rv := newRevocations(zap.NewNop())
	now := time.Now().Unix()
	rv.merge(
		revocation{Kind: revokeSession, Value: "gone", At: 1, Until: now - 1},
		revocation{Kind: revokeSub, Value: "gone", At: 1, Until: now - 1},
		revocation{Kind: revokeSID, Value: "kept", At: 1, Until: now + 60},
	)
	rv.sweep(now)
	if n := rv.set.len(); n != 1 {
		t.Fatalf("%d entries after the sweep, want 1", n)
	}
	if !rv.has(&user{s: session{ID: "x", Created: 1}, sub: "u", sid: "kept"}) {
		t.Error("the live entry was swept")
	}
	rv.sweep(now + 61)
	if !rv.set.empty() {
		t.Errorf("%d entries left, want none", rv.set.len())
	}
}

// logoutPool is the pool of slots that bounds how many logout tokens hx's
// application verifies at once.
func logoutPool(hx *harness) chan struct{} { return hx.h.client.logoutSlots }

// TestLogoutFloodOfOneApplicationSparesOthers stops a flood of forged
// logout tokens aimed at one application from holding up the real
// logouts of another: the slots that bound how many logout tokens are
// verified at once (two) were one pool for the whole process, so
// forgeries posted to application A's back-channel endpoint while A's
// Logto was slow to answer left application B's genuine logout waiting
// behind them, and B's user signed in. Each application has its own
// slots.
func TestLogoutFloodOfOneApplicationSparesOthers(t *testing.T) {
	a := newHarness(t, nil, nil)
	b := newHarness(t, nil, nil)
	signedIn := b.signedIn()

	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	a.idp.hold.Store(&release) // A's Logto hangs: each forgery keeps its slot
	forged := tokenSignedByUnknownKey("kid-unknown")(a.idp.logoutClaims("user-1"))
	pool := logoutPool(a)
	var flood sync.WaitGroup
	var answered atomic.Int64
	for range cap(pool) + 2 {
		flood.Add(1)
		go func() {
			defer flood.Done()
			a.postLogout(forged)
			answered.Add(1)
		}()
	}
	waitFor(t, "the flood to take every slot of application A", func() bool { return len(pool) == cap(pool) })

	done := make(chan *result, 1)
	go func() { done <- b.postLogout(b.idp.logoutToken("user-1", nil)) }()
	select {
	case res := <-done:
		mustAccept(t, res)
	case <-time.After(30 * time.Second): // a deadlock detector, not a bound on speed
		t.Fatal("application B's logout waited for the slots of application A's flood")
	}
	if n := answered.Load(); n != 0 {
		t.Fatalf("application B's logout went through only once application A's flood gave up its slots (%d forgeries answered first, when A's Logto timed out)", n)
	}
	b.mustBeSignedOut(t, signedIn)

	once.Do(func() { close(release) })
	flood.Wait()
	if len(pool) != 0 {
		t.Errorf("%d slots of application A still taken after its flood was answered", len(pool))
	}
}
