package logto

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// TestRefreshWhenIDTokenExpires: an expired ID token is renewed with the
// refresh token once; the new cookie carries it and the placeholders show
// the user's current claims.
func TestRefreshWhenIDTokenExpires(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	before := b.get(sessionCookie)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	if n := hx.idp.refreshGrants.Load(); n != 0 {
		t.Fatalf("%d refreshes of a fresh session", n)
	}

	hx.idp.mu.Lock()
	hx.idp.users["user-1"]["name"] = "Ada King"
	hx.idp.mu.Unlock()
	hx.clock.Advance(time.Hour)
	res := hx.serve(http.MethodGet, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if n := hx.idp.refreshGrants.Load(); n != 1 {
		t.Fatalf("refresh grants = %d, want 1", n)
	}
	if got := res.ph["http.auth.user.name"]; got != "Ada King" {
		t.Errorf("{http.auth.user.name} = %q after refresh, want the new claims", got)
	}
	if !res.newSession(t) || b.get(sessionCookie) == before {
		t.Fatal("no new session cookie after the refresh")
	}
	rq := hx.idp.refreshRequests()[0]
	if rq.Has("resource") || rq.Has("organization_id") {
		t.Errorf("session refresh sent %v", rq)
	}
	// The new cookie needs no refresh; nor does the old one, which the
	// instance knows is superseded.
	for _, br := range []*tbrowser{b, b.clone()} {
		mustPass(t, hx.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	}
	if n := hx.idp.refreshGrants.Load(); n != 1 {
		t.Errorf("refresh grants = %d after more requests, want 1", n)
	}
}

// TestRefreshSingleFlight: when a burst of requests arrives with the same
// expired session, the refresh token is redeemed once. Logto revokes the
// whole grant when a rotated refresh token is presented again, so a second
// redemption would sign the user out (logto-io/js #503, #1073).
func TestRefreshSingleFlight(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	idp.refreshDelay = 50 * time.Millisecond
	hx := newHarness(t, idp, nil)
	b := hx.signedIn()
	hx.clock.Advance(time.Hour)

	const n = 50
	var wg sync.WaitGroup
	results := make([]*result, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, repl, w := newRequest(http.MethodGet, "/", nil, b.send, fetchAPI())
			<-start
			results[i] = hx.serveRequest(r, repl, w, nil)
		}()
	}
	close(start)
	wg.Wait()
	for i, res := range results {
		if res.err != nil || !res.next || res.ph["http.auth.user.id"] != "user-1" {
			t.Errorf("request %d: err=%v next=%v", i, res.err, res.next)
		}
	}
	idp.mustRefreshCleanly(t, 1, " (one refresh shared by all)")
}

// TestRefreshRotationOldCookie: after Logto rotated the refresh token,
// requests still carrying the old cookie (other tabs, requests in flight)
// pass and get the new cookie; the old token is never presented again,
// which would make Logto revoke the grant.
func TestRefreshRotationOldCookie(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	hx := newHarness(t, idp, nil)
	b := hx.signedIn()
	old := b.clone()
	hx.clock.Advance(time.Hour)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")

	res := hx.serve(http.MethodGet, "/", old.clone(), fetchAPI())
	mustPass(t, res, "user-1")
	if c := res.setCookie(t, sessionCookie); c == nil || c.Value == "" || c.Value == old.get(sessionCookie) {
		t.Error("old cookie did not get the new session")
	}
	if n := idp.refreshGrants.Load(); n != 1 {
		t.Errorf("refresh grants = %d, want 1", n)
	}

	// An hour later the old cookie still leads to the newest token.
	hx.clock.Advance(time.Hour)
	mustPass(t, hx.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 2, "")
}

// TestRefreshInvalidGrantSignsOut: when Logto says the grant is gone
// (revoked in Console, expired, replayed), the user signs in again cleanly:
// a navigation is redirected, other requests get 401, never a 500.
func TestRefreshInvalidGrantSignsOut(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	hx.clock.Advance(time.Hour)
	hx.idp.revokeUser("user-1")
	res := hx.serve(http.MethodGet, "/page", b.clone(), navigation())
	hx.mustRedirectToAuth(t, res)
	mustClearSession(t, res)
	hx.serve(http.MethodGet, "/api", b.clone(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	// A new sign-in works.
	nb := newBrowser()
	hx.signIn(nb, "/", "user-1")
	mustPass(t, hx.serve(http.MethodGet, "/", nb, fetchAPI()), "user-1")
}

// TestRefreshInvalidGrantNotRetried: a client that keeps sending a session
// cookie Logto has already refused (a script ignoring Set-Cookie, an
// attacker replaying a dead cookie) must not make every request a call to
// Logto's token endpoint.
func TestRefreshInvalidGrantNotRetried(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	hx.clock.Advance(time.Hour)
	hx.idp.failMode.Store(idpInvalidGrant)
	for range 5 {
		hx.serve(http.MethodGet, "/api", b.clone(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	}
	if n := hx.idp.refreshGrants.Load(); n != 1 {
		t.Fatalf("regression: after invalid_grant the session is only forgotten, not recorded as ended, so each request with the dead cookie redeems its refresh token again (%d token calls for 5 requests, want 1)", n)
	}
}

// TestRefreshOutageKeepsSession: Logto down, slow or answering garbage
// must not sign users out: the request passes on the session it has, and
// failed refreshes are retried after a pause, not on every request (a
// refresh storm would keep Logto down).
func TestRefreshOutageKeepsSession(t *testing.T) {
	for _, c := range []struct {
		name string
		mode int32
	}{
		{"500", idp500},
		{"garbage", idpGarbage},
		{"timeout", idpSlow},
	} {
		t.Run(c.name, func(t *testing.T) {
			idp := newFakeIdP(t)
			hx := newHarness(t, idp, nil)
			hx.h.client.idp.http.Timeout = 200 * time.Millisecond
			idp.slowDelay = 2 * time.Second
			b := hx.signedIn()
			hx.clock.Advance(time.Hour)
			idp.failMode.Store(c.mode)
			for i := range 10 {
				res := hx.serve(http.MethodGet, "/", b, fetchAPI())
				mustPass(t, res, "user-1")
				if res.ph["http.auth.user.email"] != "ada@example.com" {
					t.Errorf("request %d: claims lost", i)
				}
				if c := res.setCookie(t, sessionCookie); c != nil && c.MaxAge < 0 {
					t.Fatalf("request %d cleared the session", i)
				}
			}
			if n := idp.refreshGrants.Load(); n != 1 {
				t.Errorf("refresh grants during the outage = %d, want 1 (backoff)", n)
			}
			hx.clock.Advance(time.Minute)
			mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
			if n := idp.refreshGrants.Load(); n != 2 {
				t.Errorf("refresh grants after the pause = %d, want 2", n)
			}
			idp.failMode.Store(idpOK)
			hx.clock.Advance(time.Minute)
			res := hx.serve(http.MethodGet, "/", b, fetchAPI())
			mustPass(t, res, "user-1")
			if !res.newSession(t) {
				t.Error("no refreshed session once Logto is back")
			}
		})
	}
}

// TestSignInWhileLogtoDown: a new sign-in when Logto cannot be reached is a
// clean 502, not a 500 or a hang; existing sessions are unaffected.
func TestSignInWhileLogtoDown(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, nil)
	b := hx.signedIn()
	idp.down.Store(true)
	// Discovery is cached: a sign-in can start, but the code exchange fails.
	nb := newBrowser()
	auth := hx.startSignIn(nb, "/")
	q := auth.Query()
	res := hx.serve(http.MethodGet, "/logto/sign-in-callback?code=c0de-c0de-c0de&state="+q.Get("state")+"&iss="+idp.issuer, nb)
	res.mustHandlerError(t, http.StatusBadGateway)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")

	// A fresh instance with no discovery cached answers 502 to navigation.
	cold := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{randomString(24)} })
	cold.serve(http.MethodGet, "/", newBrowser(), navigation()).mustHandlerError(t, http.StatusBadGateway)
}

// link is the network between hx's application and Logto, which a test
// can cut: connections are then refused before any reaches the fake.
type link struct {
	cut     atomic.Bool
	refused atomic.Int64 // connections refused while cut
}

func cutOff(hx *harness) *link {
	l := &link{}
	var d net.Dialer
	hx.h.client.idp.http.Transport = &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if l.cut.Load() {
				l.refused.Add(1)
				return nil, errors.New("connection refused (test outage)")
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	return l
}

// mustKeepSession checks a response leaves the session cookie alone: an
// outage never signs anyone out.
func mustKeepSession(t *testing.T, what string, res *result) {
	t.Helper()
	for _, c := range res.setCookies(t) {
		if strings.HasPrefix(c.Name, sessionCookie) && c.MaxAge < 0 {
			t.Errorf("%s: cleared the session cookie %s", what, c.Name)
		}
	}
}

// TestOutageGraceBoundsStaleSessions stops a Logto outage from turning
// into access without end: a session whose ID token expired while Logto
// could not be reached was served on what it held, the refresh retried
// every 30 s, for as long as the outage lasted, so a user revoked or
// locked out in Logto meanwhile (or whoever holds their cookie) kept
// access as long as Logto stayed down. Within outage_grace (default 5m)
// of the ID token's expiry the session is still served; past it a
// protected request gets 503 with Retry-After, navigation and API alike,
// and the cookie is kept, so once Logto answers the next refresh carries
// on without a new sign-in.
func TestOutageGraceBoundsStaleSessions(t *testing.T) {
	var l *link
	for _, c := range []struct {
		name       string
		fail, heal func(hx *harness)
	}{
		{"503", func(hx *harness) { hx.idp.down.Store(true) }, func(hx *harness) { hx.idp.down.Store(false) }},
		{"500 from the token endpoint", func(hx *harness) { hx.idp.failMode.Store(idp500) }, func(hx *harness) { hx.idp.failMode.Store(idpOK) }},
		{"unreachable", func(hx *harness) { l = cutOff(hx); l.cut.Store(true) }, func(hx *harness) { l.cut.Store(false) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx := newHarness(t, nil, nil)
			b := hx.signedIn()
			c.fail(hx)
			hx.clock.Advance(time.Hour + time.Minute) // the ID token expired a minute ago
			for _, opt := range []reqOpt{navigation(), fetchAPI()} {
				res := hx.serve(http.MethodGet, "/", b, opt)
				mustPass(t, res, "user-1")
				mustKeepSession(t, "within the grace", res)
			}
			if res := hx.serve(http.MethodGet, "/logto/user", b, fetchAPI()); res.err != nil || res.rec.Code != http.StatusOK {
				t.Errorf("/logto/user within the grace: err=%v code=%d, want 200", res.err, res.rec.Code)
			}

			hx.clock.Advance(4*time.Minute + time.Second) // past the default grace of 5m
			for name, opt := range map[string]reqOpt{"navigation": navigation(), "API": fetchAPI()} {
				res := hx.serve(http.MethodGet, "/", b, opt)
				res.mustHandlerError(t, http.StatusServiceUnavailable)
				if ra := res.rec.Header().Get("Retry-After"); ra != "30" {
					t.Errorf("%s past the grace: Retry-After %q, want 30 (the refresh is retried every 30 s)", name, ra)
				}
				if loc := res.rec.Header().Get("Location"); loc != "" {
					t.Errorf("%s past the grace: redirected to %q", name, loc)
				}
				mustKeepSession(t, name+" past the grace", res)
			}
			res := hx.serve(http.MethodGet, "/logto/user", b, fetchAPI())
			res.mustHandlerError(t, http.StatusServiceUnavailable)
			mustKeepSession(t, "/logto/user past the grace", res)

			codes := hx.idp.codeGrants.Load()
			c.heal(hx)
			hx.clock.Advance(refreshRetry)
			res = hx.serve(http.MethodGet, "/", b, navigation())
			mustPass(t, res, "user-1")
			if !res.newSession(t) {
				t.Error("the session was not refreshed once Logto answered")
			}
			if n := hx.idp.codeGrants.Load(); n != codes {
				t.Errorf("%d new sign-ins after the outage, want none", n-codes)
			}
		})
	}
}

// TestOutageGraceZero: with outage_grace 0 a session Logto cannot renew is
// served until its ID token expires and not a second after (503, cookie
// kept); a pass block then lets the request through as anonymous, the
// identity neither in placeholders nor in headers, the cookie still kept.
func TestOutageGraceZero(t *testing.T) {
	zero := caddy.Duration(0)
	hx := newHarness(t, nil, func(h *Handler) { h.OutageGrace = &zero })
	b := hx.signedIn()
	hx.idp.down.Store(true)
	hx.clock.Advance(time.Hour - 30*time.Second) // the refresh is due and fails
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	hx.clock.Advance(31 * time.Second) // the ID token expired a second ago
	res := hx.serve(http.MethodGet, "/", b, navigation())
	res.mustHandlerError(t, http.StatusServiceUnavailable)
	mustKeepSession(t, "protected", res)

	pass := newHarness(t, hx.idp, func(h *Handler) {
		h.OutageGrace, h.Pass = &zero, true
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	res = pass.serve(http.MethodGet, "/", b, navigation())
	if res.err != nil || !res.next {
		t.Fatalf("pass block past the grace: err=%v, want the request to go on anonymous", res.err)
	}
	if id := res.ph["http.auth.user.id"]; id != "" || res.nextReq.Header.Get("X-User-Id") != "" {
		t.Errorf("pass block past the grace named the user: {http.auth.user.id} %q, X-User-Id %q", id, res.nextReq.Header.Get("X-User-Id"))
	}
	mustKeepSession(t, "pass", res)
}

// TestSignInWhileLogtoKnownDown: with discovery cached, a sign-in started
// while Logto could not be reached sent the browser on to a Logto that
// would not answer it either (a browser error page, or a hang) rather than
// a clear error. Once a call to Logto got no answer, and none has been
// answered since, a new sign-in gets 502 at once and sets no cookie;
// Logto is asked again at most every few seconds, and once it answers,
// sign-ins go through. Logto answering with an error (a 500, garbage)
// still answers: that sign-in goes ahead, as the browser would reach it.
func TestSignInWhileLogtoKnownDown(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	l := cutOff(hx)
	l.cut.Store(true)
	hx.clock.Advance(time.Hour)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1") // its refresh gets no answer
	tries := l.refused.Load()
	for range 5 {
		res := hx.serve(http.MethodGet, "/private", newBrowser(), navigation())
		res.mustHandlerError(t, http.StatusBadGateway)
		if sc := res.rec.Header().Values("Set-Cookie"); len(sc) != 0 {
			t.Fatalf("a sign-in refused for the outage set cookies %q", sc)
		}
	}
	if n := l.refused.Load() - tries; n != 0 {
		t.Errorf("5 sign-ins right after Logto did not answer tried to reach it %d times, want 0", n)
	}
	hx.clock.Advance(discoveryRetry)
	for range 5 {
		hx.serve(http.MethodGet, "/private", newBrowser(), navigation()).mustHandlerError(t, http.StatusBadGateway)
	}
	if n := l.refused.Load() - tries; n != 1 {
		t.Errorf("5 sign-ins a while after Logto did not answer tried to reach it %d times, want 1", n)
	}
	l.cut.Store(false)
	hx.clock.Advance(discoveryRetry)
	hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/private", newBrowser(), navigation()))
	hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/private", newBrowser(), navigation()))

	hx.clock.Advance(refreshRetry)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1") // refreshed
	// Logto answers, if with 503s.
	hx.idp.down.Store(true)
	hx.clock.Advance(time.Hour)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1") // its refresh gets a 503
	hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/private", newBrowser(), navigation()))
}

// TestResourceToken: token_resource puts an access token for the API in a
// placeholder; it is the one Logto issued for that resource, and it is
// reused until it nears expiry rather than fetched per request.
func TestResourceToken(t *testing.T) {
	const api = "https://api.example.com"
	idp := newFakeIdP(t)
	idp.permissions[api] = []string{"read:docs", "write:docs"}
	hx := newHarness(t, idp, func(h *Handler) {
		h.TokenResource = api
		h.Scopes = []string{"read:docs"}
		h.Headers = map[string]string{"Authorization": "Bearer {http.auth.logto.access_token}"}
	})
	b := newBrowser()
	auth := hx.startSignIn(b, "/")
	if !slices.Contains(auth.Query()["resource"], api) {
		t.Fatalf("token_resource not requested at sign-in: %v", auth.Query()["resource"])
	}
	code := idp.issueCode(auth, "user-1")
	hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)

	res := hx.serve(http.MethodGet, "/", b, fetchAPI(), withHeader("Authorization", "Bearer forged"))
	mustPass(t, res, "user-1")
	tok := res.ph["http.auth.logto.access_token"]
	if !slices.Contains(idp.issued(), tok) {
		t.Fatalf("{http.auth.logto.access_token} = %q, not a token the IdP issued", tok)
	}
	claims, err := jwtClaims(tok)
	if err != nil || claims["aud"] != api || claims["scope"] != "read:docs" {
		t.Errorf("access token claims %v (%v), want aud %s scope read:docs", claims, err, api)
	}
	if got := res.nextReq.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+tok {
		t.Errorf("Authorization upstream = %q", got)
	}
	reqs := idp.refreshRequests()
	if len(reqs) != 1 || reqs[0].Get("resource") != api {
		t.Fatalf("refresh requests %v, want one for the resource", reqs)
	}

	res = hx.serve(http.MethodGet, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if res.ph["http.auth.logto.access_token"] != tok {
		t.Error("second request got another token")
	}
	if n := idp.refreshGrants.Load(); n != 1 {
		t.Errorf("refresh grants = %d, want 1 (cached)", n)
	}
	// Within tokenMargin of its expiry the token is replaced, so it does
	// not expire on its way upstream.
	hx.clock.Advance(time.Hour - 15*time.Second)
	res = hx.serve(http.MethodGet, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if res.ph["http.auth.logto.access_token"] == tok {
		t.Error("regression: a cached access token is used until its last second: liveSession.token shrinks the margin to half the time left, so tokenMargin never applies (token 15 s from expiry reused)")
	}
}

// TestResourceTokenDenied: Logto refusing a token for the route's resource
// (invalid_target) sends a navigation through sign-in once, since a new
// sign-in may get the resource, and after that it is a 403 for the user:
// not a 500, nor a sign-in loop.
func TestResourceTokenDenied(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
	b := newBrowser()
	// The user signed in before the resource was configured: Logto does
	// not know it for this grant.
	auth := hx.startSignIn(b, "/")
	q := auth.Query()
	q.Del("resource")
	auth.RawQuery = q.Encode()
	code := idp.issueCode(auth, "user-1")
	hx.serve(http.MethodGet, hx.callbackURL(auth, code), b)
	hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/", b, navigation()))
	res := hx.serve(http.MethodGet, "/", b, navigation())
	res.mustHandlerError(t, http.StatusForbidden)
	if res.rec.Header().Get("Location") != "" {
		t.Error("a denied token redirected twice")
	}
}

// TestTokensLogNoSecrets: refresh failures of every kind are logged
// without the refresh token, codes, cookies or the app secret (the
// leak check runs at every harness's cleanup; this makes sure the failure
// paths were logged at all).
func TestTokensLogNoSecrets(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
	b := hx.signedIn()
	mark := len(capturedLogs.String())
	for _, mode := range []int32{idp500, idpGarbage, idpInvalidGrant} {
		idp.failMode.Store(mode)
		hx.clock.Advance(2 * time.Hour)
		hx.serve(http.MethodGet, "/", b.clone(), fetchAPI())
	}
	idp.failMode.Store(idpOK)
	// A refused code and a bad ID token.
	nb := newBrowser()
	auth := hx.startSignIn(nb, "/")
	code := idp.issueCodeWith(auth, "user-1", idp.tokenEditedClaims(func(c map[string]any) { c["aud"] = "x" }))
	hx.serve(http.MethodGet, hx.callbackURL(auth, code), nb)
	hx.serve(http.MethodGet, hx.callbackURL(auth, code), nb)

	logs := capturedLogs.String()[mark:]
	for _, want := range []string{"refresh", "ID token failed verification"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line about %q; captured:\n%s", want, logs)
		}
	}
	if leaks := leakedSecrets(); len(leaks) > 0 {
		t.Errorf("secrets in the logs:\n%s", strings.Join(leaks, "\n"))
	}
}

// TestRotationHandoffAcrossInstances: two instances share Caddy's storage
// (a cluster behind a load balancer). When one rotates the refresh token,
// the other, still handed the pre-rotation cookie, adopts the new state
// instead of presenting the old token, which would make Logto revoke the
// whole grant.
func TestRotationHandoffAcrossInstances(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	secret := randomString(24)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	bInst := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	bInst.h.client = freshClient(t, bInst.h)

	br := a.signedIn()
	old := br.clone()
	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	res := bInst.serve(http.MethodGet, "/", old.clone(), fetchAPI())
	mustPass(t, res, "user-1")
	if n := idp.refreshGrants.Load(); n != 1 {
		t.Errorf("refresh grants = %d, want 1 (the second instance adopts the rotation)", n)
	}
	if !res.newSession(t) {
		t.Error("the second instance did not hand out the rotated session")
	}

	// An hour later the second instance rotates; the first adopts that.
	a.clock.Advance(time.Hour)
	mustPass(t, bInst.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	if n := idp.refreshGrants.Load(); n != 2 {
		t.Errorf("refresh grants = %d, want 2", n)
	}
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Fatalf("Logto refused (a rotated token presented again?): %v", r)
	}
}

// TestDiscoveryOutageNoStorm: with Logto down and nothing cached, new
// sign-ins get a clean 502, and discovery is retried after a pause rather
// than on every request (which would pile onto a struggling Logto).
func TestDiscoveryOutageNoStorm(t *testing.T) {
	idp := newFakeIdP(t)
	idp.down.Store(true)
	hx := newHarness(t, idp, nil)
	for range 10 {
		res := hx.serve(http.MethodGet, "/", newBrowser(), navigation())
		res.mustHandlerError(t, http.StatusBadGateway)
		if len(res.rec.Header().Values("Set-Cookie")) != 0 {
			t.Fatal("a failed sign-in set cookies")
		}
	}
	if n := idp.requests.Load(); n != 1 {
		t.Errorf("%d requests to Logto for 10 sign-ins during the outage, want 1", n)
	}
	idp.down.Store(false)
	hx.clock.Advance(10 * time.Second)
	hx.signedIn()
}

// TestTokenSingleFlight: a burst of requests needing the route's tokens
// (two organizations at once, with Logto rotating the refresh token on
// every use) makes one grant per token and never presents a used refresh
// token.
func TestTokenSingleFlight(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	idp.refreshDelay = 20 * time.Millisecond
	hx := newHarness(t, idp, orgRoute)
	b := hx.signedIn()
	const n = 40
	var wg sync.WaitGroup
	results := make([]*result, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			org := []string{"org1", "org2"}[i%2]
			r, repl, w := newRequest(http.MethodGet, "/", nil, b.send, fetchAPI(), withHeader("X-Org", org))
			<-start
			results[i] = hx.serveRequest(r, repl, w, nil)
		}()
	}
	close(start)
	wg.Wait()
	for i, res := range results {
		if res.err != nil || !res.next {
			t.Errorf("request %d: err=%v", i, res.err)
		}
	}
	if got := idp.refreshGrants.Load(); got != 2 {
		t.Errorf("refresh grants = %d, want 2 (one per organization)", got)
	}
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Errorf("Logto refused: %v", r)
	}
}

// TestRouteTokenGrantRevoked: the session's grant was revoked at Logto
// while its ID token is still fresh, so only the route's token request
// learns it (invalid_grant). The user is signed out cleanly: a navigation
// is redirected to sign in, other requests get 401, and the protected
// handler never runs for them (its content must not end up in the body of
// the redirect).
func TestRouteTokenGrantRevoked(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []reqOpt
	}{
		{"navigation", []reqOpt{navigation()}},
		{"fetch", []reqOpt{fetchAPI()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx := newHarness(t, nil, func(h *Handler) { h.TokenResource = testAPI })
			b := hx.signedIn()
			hx.idp.revokeUser("user-1")
			r, repl, w := newRequest(http.MethodGet, "/", nil, append([]reqOpt{b.send}, c.opts...)...)
			res, p := hx.serveCatching(r, repl, w, b)
			if p != nil {
				t.Fatalf("regression: authorize returns (nil, nil) after redirecting on invalid_grant for the route token, and the gate then dereferences the nil result: panic %v", p)
			}
			if res.next {
				t.Fatal("regression: the protected handler ran for a signed-out user")
			}
			mustClearSession(t, res)
			if c.name == "navigation" {
				hx.mustRedirectToAuth(t, res)
			} else {
				res.mustHandlerError(t, http.StatusUnauthorized)
			}
		})
	}
}

// TestRouteTokenUpstreamFailureIsNot403: when Logto refuses a route token
// for a reason that says nothing about the user (the app's credentials
// rejected, rate limiting, a malformed request), the user gets a 502 like
// any Logto failure, the log carries Logto's error, and the session backs
// off instead of sending every request to Logto again (which, under a 429,
// feeds the rate limit). A 403 would tell the user they lack a right they
// may well have.
func TestRouteTokenUpstreamFailureIsNot403(t *testing.T) {
	for _, ref := range []oauthRefusal{
		{http.StatusUnauthorized, "invalid_client", "client authentication failed"},
		{http.StatusTooManyRequests, "too_many_requests", "slow down"},
		{http.StatusBadRequest, "invalid_request", "something odd"},
		{http.StatusBadRequest, "unauthorized_client", "grant type not allowed"},
	} {
		t.Run(ref.code, func(t *testing.T) {
			idp := newFakeIdP(t)
			hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
			b := hx.signedIn()
			idp.refuseWith.Store(&ref)
			mark := len(capturedLogs.String())

			res := hx.serve(http.MethodGet, "/", b, fetchAPI())
			res.mustHandlerError(t, http.StatusBadGateway)
			logs := capturedLogs.String()[mark:]
			if !strings.Contains(logs, `"error":"`+ref.code+`"`) || !strings.Contains(logs, ref.desc) {
				t.Errorf("the log does not carry Logto's error and description; captured:\n%s", logs)
			}

			grants := idp.refreshGrants.Load()
			hx.serve(http.MethodGet, "/", b, fetchAPI()).mustHandlerError(t, http.StatusBadGateway)
			if n := idp.refreshGrants.Load(); n != grants {
				t.Errorf("%d more token requests right after Logto failed, want none (back off)", n-grants)
			}
		})
	}
}

// TestRouteTokenRefusalsAre403: Logto's refusals that do mean "this user
// may not have this token" stay a 403 (after the one step-up sign-in that
// invalid_target earns a navigation, see TestResourceTokenDenied).
func TestRouteTokenRefusalsAre403(t *testing.T) {
	for _, ref := range []oauthRefusal{
		{http.StatusBadRequest, "invalid_target", "resource not granted"},
		{http.StatusForbidden, "access_denied", "no"},
		{http.StatusBadRequest, "invalid_scope", "scope not granted"},
		// What Logto answers an organization token request whose grant
		// lacks the organizations scope.
		{http.StatusForbidden, "insufficient_scope", "Token missing scope `urn:logto:scope:organizations`."},
	} {
		t.Run(ref.code, func(t *testing.T) {
			idp := newFakeIdP(t)
			hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
			b := hx.signedIn()
			idp.refuseWith.Store(&ref)
			if ref.code == "invalid_target" {
				// A navigation is sent to sign in again once first.
				hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/", b, navigation()))
			}
			hx.serve(http.MethodGet, "/", b, navigation()).mustHandlerError(t, http.StatusForbidden)
		})
	}
}

// rolesOnlyInUserinfo is a tenant without extended ID token claims: user-1's
// roles (admin) come only from userinfo.
func rolesOnlyInUserinfo(t *testing.T) *fakeIdP {
	idp := newFakeIdP(t)
	idp.mu.Lock()
	idp.infoOnly["user-1"] = []string{"roles", "organizations", "organization_roles"}
	idp.mu.Unlock()
	return idp
}

var adminRule = []Rule{{Kind: "role", Values: []string{"admin"}}}

// TestUserinfoWithoutRefreshTokenOnEveryInstance: a session without a
// refresh token (prompt none) cannot get an access token for userinfo
// anywhere but from its code exchange. Kept only in the memory of the
// instance that signed the user in, it made every other instance (or the
// same one after a restart) send the user to sign in again, which in a
// round-robin cluster loops. The cookie carries it for such sessions, so
// every instance reads userinfo.
func TestUserinfoWithoutRefreshTokenOnEveryInstance(t *testing.T) {
	idp := rolesOnlyInUserinfo(t)
	secret := randomString(32)
	configure := func(h *Handler) {
		h.CookieSecrets, h.Prompt, h.Require = []string{secret}, "none", adminRule
	}
	a := newHarness(t, idp, configure)
	br := a.signedIn()
	mustPass(t, a.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")

	other := newHarness(t, idp, configure)
	other.h.client = freshClient(t, other.h)
	mustPass(t, other.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")
	mustPass(t, other.serve(http.MethodGet, "/", br.clone(), navigation()), "user-1")

	// On the instance that signed in, once its access token has expired
	// and the cached claims are gone.
	a.clock.Advance(2 * time.Hour)
	for _, ls := range a.h.client.live.m {
		ls.info = nil
	}
	a.serve(http.MethodGet, "/", br.clone(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
}

// TestUserinfoAfterAdoptedRotation: another instance rotated the session's
// refresh token (for a route's API token); this instance adopts that state
// from storage, which brings no access token. A rule reading userinfo used to
// answer 502 once before the next request recovered; it must redeem once more
// and pass.
func TestUserinfoAfterAdoptedRotation(t *testing.T) {
	idp := rolesOnlyInUserinfo(t)
	idp.rotate = true
	secret := randomString(32)
	a := newHarness(t, idp, func(h *Handler) {
		h.CookieSecrets, h.Require, h.TokenResource = []string{secret}, adminRule, bearerAPI
	})
	b := newHarness(t, idp, func(h *Handler) { h.CookieSecrets, h.Require = []string{secret}, adminRule })
	b.h.client = freshClient(t, b.h)

	br := a.signedIn()
	old := br.clone()
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1") // rotated for the API token
	mustPass(t, b.serve(http.MethodGet, "/", old, fetchAPI()), "user-1")
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Fatalf("Logto refused (a rotated token presented again): %v", r)
	}
}

// flakyStorage is Caddy's storage with an outage switch: down fails every
// read and write (a Redis restart), storeDown only writes.
type flakyStorage struct {
	certmagic.Storage
	down, storeDown atomic.Bool
}

var errTestOutage = errors.New("storage unreachable (test outage)")

func (f *flakyStorage) Store(ctx context.Context, key string, value []byte) error {
	if f.down.Load() || f.storeDown.Load() {
		return errTestOutage
	}
	return f.Storage.Store(ctx, key, value)
}

func (f *flakyStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if f.down.Load() {
		return nil, errTestOutage
	}
	return f.Storage.Load(ctx, key)
}

func (f *flakyStorage) Exists(ctx context.Context, key string) bool {
	return !f.down.Load() && f.Storage.Exists(ctx, key)
}

func (f *flakyStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	if f.down.Load() {
		return nil, errTestOutage
	}
	return f.Storage.List(ctx, path, recursive)
}

func (f *flakyStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if f.down.Load() {
		return certmagic.KeyInfo{}, errTestOutage
	}
	return f.Storage.Stat(ctx, key)
}

// Lock fails while storage is down. Unlock always reaches the storage
// below, as a lock in a storage that went down frees itself when it times
// out.
func (f *flakyStorage) Lock(ctx context.Context, name string) error {
	if f.down.Load() {
		return errTestOutage
	}
	return f.Storage.Lock(ctx, name)
}

// twoInstances is a cluster of two handlers sharing one flaky storage.
func twoInstances(t *testing.T, idp *fakeIdP) (a, b *harness, st *flakyStorage) {
	t.Helper()
	secret := randomString(24)
	a = newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b = newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret} })
	b.h.client = freshClient(t, b.h)
	st = &flakyStorage{Storage: a.h.client.revoked.storageBackend()}
	for _, c := range []*client{a.h.client, b.h.client} {
		old := c.revoked.store.Load()
		c.revoked.store.Store(&revStore{storage: st, base: old.base, prefix: old.prefix})
	}
	return a, b, st
}

// TestStorageOutageDoesNotBurnRefreshTokens: while storage is down, an
// instance cannot know whether another one already rotated the session's
// refresh token. Presenting it anyway is the attack on Logto's rotation
// the handoff exists to stop: one instance rotates (its handoff write
// fails), the other presents the dead token, and Logto revokes the
// user's whole grant. So nobody refreshes until storage answers; sessions
// go on with their claims meanwhile.
func TestStorageOutageDoesNotBurnRefreshTokens(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, st := twoInstances(t, idp)
	br := a.signedIn()
	old := br.clone()

	st.down.Store(true)
	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	if n := idp.refreshGrants.Load(); n != 0 {
		t.Errorf("%d refresh grants while storage was down, want 0", n)
	}

	st.down.Store(false)
	a.clock.Advance(refreshRetry + time.Second)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 1, " after the outage (the other instance adopts it)")
}

// TestStorageOutageRotationHandedOverLater: the rotation's handoff write
// fails; it must be retried until it lands, or the other instance later
// presents the dead token and Logto revokes the grant.
func TestStorageOutageRotationHandedOverLater(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, st := twoInstances(t, idp)
	br := a.signedIn()
	old := br.clone()

	st.storeDown.Store(true)
	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	st.storeDown.Store(false)
	a.h.client.revoked.load() // the next poll

	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 1, " (the other instance adopts the rotation)")
}

// TestStorageOutageLogoutReachesOthersLater: a back-channel logout that
// arrives while storage is down ends the session on the instance Logto
// called at once, and on the others once storage is back, rather than
// never (the user would stay signed in on every other instance).
func TestStorageOutageLogoutReachesOthersLater(t *testing.T) {
	idp := newFakeIdP(t)
	a, b, st := twoInstances(t, idp)
	br := a.signedIn()
	mustPass(t, b.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")

	st.down.Store(true)
	mustAccept(t, a.postLogout(idp.logoutToken("user-1", nil)))
	a.mustBeSignedOut(t, br)
	a.h.client.revoked.load()
	b.h.client.revoked.load()
	mustPass(t, b.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1") // b cannot know yet

	st.down.Store(false)
	a.h.client.revoked.load() // a's next poll writes what failed
	b.h.client.revoked.load()
	b.mustBeSignedOut(t, br)
}

// TestRotationHandoffFollowsChain: a cookie that missed two rotations made
// by another instance (a tab left open) is mapped to the newest state. The
// state after the first rotation carries a token rotated away since:
// redeeming it would make Logto revoke the grant.
func TestRotationHandoffFollowsChain(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, b, _ := twoInstances(t, idp)
	br := a.signedIn()
	old := br.clone()
	for range 2 {
		a.clock.Advance(time.Hour)
		mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	}
	mustPass(t, b.serve(http.MethodGet, "/", old.clone(), fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 2, " (both made by the first instance)")
}

// TestStorageOutageRouteTokenWaits: a route whose API token must be
// renewed while storage is down answers 503 rather than present a refresh
// token another instance may have rotated; once storage is back it works.
func TestStorageOutageRouteTokenWaits(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	secret := randomString(24)
	a := newHarness(t, idp, func(h *Handler) { h.CookieSecrets = []string{secret}; h.TokenResource = testAPI })
	st := &flakyStorage{Storage: a.h.client.revoked.storageBackend()}
	old := a.h.client.revoked.store.Load()
	a.h.client.revoked.store.Store(&revStore{storage: st, base: old.base, prefix: old.prefix})
	br := a.signedIn()
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	grants := idp.refreshGrants.Load()

	st.down.Store(true)
	// Both tokens expired, the ID token a minute ago: within outage_grace,
	// past which the session itself would be refused (503).
	a.clock.Advance(time.Hour + time.Minute)
	res := a.serve(http.MethodGet, "/", br, fetchAPI())
	res.mustHandlerError(t, http.StatusServiceUnavailable)
	if ra := res.rec.Header().Get("Retry-After"); ra != "30" {
		t.Errorf("route token while storage is down: Retry-After %q, want 30", ra)
	}
	if n := idp.refreshGrants.Load(); n != grants {
		t.Errorf("%d refresh grants while storage was down, want 0", n-grants)
	}

	st.down.Store(false)
	a.clock.Advance(refreshRetry + time.Second)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	if r := idp.tokenRefusals(); len(r) != 0 {
		t.Fatalf("Logto refused: %v", r)
	}
}

// memStorage is Caddy's storage in memory, with locks, shared by the
// instances of a test cluster. Its locks are held until Unlock (a storage
// frees a dead holder's after a timeout; the tests release them).
type memStorage struct {
	mu    sync.Mutex
	m     map[string]memValue
	locks map[string]chan struct{}
	held  atomic.Int64    // locks taken, in all
	names map[string]bool // every lock name used
}

type memValue struct {
	b   []byte
	mod time.Time
}

func newMemStorage() *memStorage {
	return &memStorage{m: map[string]memValue{}, locks: map[string]chan struct{}{}, names: map[string]bool{}}
}

func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = memValue{slices.Clone(value), time.Now()}
	return nil
}

func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return slices.Clone(v.b), nil
}

func (s *memStorage) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.m {
		if k == key || strings.HasPrefix(k, key+"/") {
			delete(s.m, k)
		}
	}
	return nil
}

func (s *memStorage) Exists(_ context.Context, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[key]
	return ok
}

func (s *memStorage) List(_ context.Context, path string, recursive bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for k := range s.m {
		rest, ok := strings.CutPrefix(k, path+"/")
		if !ok {
			continue
		}
		if first, _, deeper := strings.Cut(rest, "/"); deeper && !recursive {
			k = path + "/" + first
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fs.ErrNotExist
	}
	return out, nil
}

func (s *memStorage) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return certmagic.KeyInfo{}, fs.ErrNotExist
	}
	return certmagic.KeyInfo{Key: key, Modified: v.mod, Size: int64(len(v.b)), IsTerminal: true}, nil
}

func (s *memStorage) Lock(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		s.names[name] = true
		held, ok := s.locks[name]
		if !ok {
			s.locks[name] = make(chan struct{})
			s.mu.Unlock()
			s.held.Add(1)
			return nil
		}
		s.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *memStorage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.locks[name]
	if !ok {
		return errors.New("memStorage: unlock of a lock not held")
	}
	delete(s.locks, name)
	close(held)
	return nil
}

// shareStorage makes the instances use st.
func shareStorage(st certmagic.Storage, hs ...*harness) {
	for _, hx := range hs {
		old := hx.h.client.revoked.store.Load()
		hx.h.client.revoked.store.Store(&revStore{storage: st, base: old.base, prefix: old.prefix})
	}
}

// TestRefreshOnceAcrossInstances: a page load and its API calls, sent
// round-robin to two instances, all arrive with one expired session.
// Each instance refreshes it once (ls.mu), but without a lock shared by
// the cluster both would present the same refresh token to Logto: past
// Logto's 3 s reuse grace, or at a stricter Logto, the second
// presentation of a rotated token revokes the user's whole grant. Through
// the lock in storage, one instance redeems and the other takes its
// result, whether Logto rotated the token or (a confidential client
// before 70 % of the token's lifetime) gave the same one back.
func TestRefreshOnceAcrossInstances(t *testing.T) {
	for _, rotate := range []bool{true, false} {
		t.Run(map[bool]string{true: "rotated", false: "kept"}[rotate], func(t *testing.T) {
			idp := newFakeIdP(t)
			idp.rotate = rotate
			idp.refreshDelay = 30 * time.Millisecond // both are in flight at once
			a, b, _ := twoInstances(t, idp)
			st := newMemStorage()
			shareStorage(st, a, b)
			br := a.signedIn()
			a.clock.Advance(time.Hour)

			const n = 8
			var wg sync.WaitGroup
			results := make([]*result, 2*n)
			start := make(chan struct{})
			for i := range 2 * n {
				hx := []*harness{a, b}[i%2]
				r, repl, w := newRequest(http.MethodGet, "/", nil, br.send, fetchAPI())
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					results[i] = hx.serveRequest(r, repl, w, nil)
				}()
			}
			close(start)
			wg.Wait()
			for i, res := range results {
				if res.err != nil || !res.next || res.ph["http.auth.user.id"] != "user-1" {
					t.Errorf("request %d did not pass: err=%v", i, res.err)
				}
			}
			idp.mustRefreshCleanly(t, 1, " (one redemption for the cluster)")
			if n := st.held.Load(); n != 2 {
				t.Errorf("the refresh lock was taken %d times, want 2 (once per instance)", n)
			}
			// Both instances now hold the new state: no more redemptions.
			mustPass(t, a.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")
			mustPass(t, b.serve(http.MethodGet, "/", br.clone(), fetchAPI()), "user-1")
			idp.mustRefreshCleanly(t, 1, "")
		})
	}
}

// TestRefreshLockHeldElsewhere: another instance holds the session's
// refresh lock and does not let go (it is slow, or died holding it, and
// storage has not timed the lock out yet). The refresh waits a bounded
// time, then the session goes on with what it has, as in a storage
// outage, rather than redeem a token the other may be rotating; once the
// lock is free it refreshes.
func TestRefreshLockHeldElsewhere(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, _, _ := twoInstances(t, idp)
	st := newMemStorage()
	shareStorage(st, a)
	a.h.client.lockWaitFor = 20 * time.Millisecond
	br := a.signedIn()
	u := a.h.client.users.get(br.get(sessionCookie))
	name := a.h.client.refreshLockName(u.s.ID)
	if err := st.Lock(context.Background(), name); err != nil {
		t.Fatal(err)
	}

	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	if n := idp.refreshGrants.Load(); n != 0 {
		t.Fatalf("%d refresh grants while another instance held the lock, want 0", n)
	}

	if err := st.Unlock(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(refreshRetry + time.Second)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	idp.mustRefreshCleanly(t, 1, " once the lock was free")
}

// TestRefreshLockKeysHoldNoToken: nothing the cluster coordination puts
// in storage names a token in clear: not the lock, not the handoff.
func TestRefreshLockKeysHoldNoToken(t *testing.T) {
	idp := newFakeIdP(t)
	idp.rotate = true
	a, _, _ := twoInstances(t, idp)
	st := newMemStorage()
	shareStorage(st, a)
	br := a.signedIn()
	a.clock.Advance(time.Hour)
	mustPass(t, a.serve(http.MethodGet, "/", br, fetchAPI()), "user-1")
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, v := range st.m {
		for _, secret := range idp.issued() {
			if strings.Contains(k, secret) || strings.Contains(string(v.b), secret) {
				t.Errorf("storage key %q or its value holds a token in clear", k)
			}
		}
	}
	for name := range st.names {
		for _, secret := range append(idp.issued(), br.get(sessionCookie)) {
			if strings.Contains(name, secret) {
				t.Errorf("lock name %q holds a token or cookie in clear", name)
			}
		}
	}
	if len(st.m) == 0 || len(st.names) == 0 {
		t.Error("no handoff or no lock in storage")
	}
}

// TestRouteTokenWhileLogtoDownIs503 stops an outage of Logto from reading
// as a broken gateway: a route that needs a new access token while Logto
// does not answer gets 503 with Retry-After, the session kept, as a
// session past outage_grace does; and once Logto answers again the route
// works at the next request after Logto's probe (a few seconds), not after
// every session has waited out its 30 s back-off (a soak with Logto
// restarting saw API routes fail that long after it was up).
func TestRouteTokenWhileLogtoDownIs503(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.TokenResource = testAPI })
	b := hx.signedIn()
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	l := cutOff(hx)
	l.cut.Store(true)
	hx.clock.Advance(time.Hour + time.Second) // the route's token expired

	res := hx.serve(http.MethodGet, "/", b, fetchAPI())
	res.mustHandlerError(t, http.StatusServiceUnavailable)
	if ra := res.rec.Header().Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	mustKeepSession(t, "route token while Logto is down", res)
	refused := l.refused.Load()
	hx.serve(http.MethodGet, "/", b, fetchAPI()).mustHandlerError(t, http.StatusServiceUnavailable)
	if n := l.refused.Load(); n != refused {
		t.Errorf("%d more connection attempts right after Logto failed, want none (back off)", n-refused)
	}

	l.cut.Store(false)
	hx.clock.Advance(discoveryRetry + time.Second) // well inside the 30 s back-off
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
}

// TestBackoffHoldsWhileLogtoAnswersErrors: the back-off that ends when a
// silent Logto answers again must not end for a Logto that answers with
// errors, or every request would ask it again.
func TestBackoffHoldsWhileLogtoAnswersErrors(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.TokenResource = testAPI })
	b := hx.signedIn()
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	hx.idp.failMode.Store(idp500)
	hx.clock.Advance(time.Hour + time.Second)
	hx.serve(http.MethodGet, "/", b, fetchAPI()).mustHandlerError(t, http.StatusServiceUnavailable)
	grants := hx.idp.refreshGrants.Load()
	hx.clock.Advance(discoveryRetry + time.Second)
	hx.serve(http.MethodGet, "/", b, fetchAPI()).mustHandlerError(t, http.StatusServiceUnavailable)
	if n := hx.idp.refreshGrants.Load(); n != grants {
		t.Errorf("%d token requests to a Logto answering 500 within the back-off, want none", n-grants)
	}
	hx.idp.failMode.Store(idpOK)
	hx.clock.Advance(refreshRetry)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
}
