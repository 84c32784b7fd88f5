package logto

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// benchRequest is a browser request as Caddy hands it to the handler,
// with realistic headers and a few cookies of the site besides ours.
func benchRequest(b *testing.B, cookie string) *http.Request {
	b.Helper()
	r := httptest.NewRequest(http.MethodGet, testSite+"/docs/getting-started?tab=2", nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36")
	r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8")
	r.Header.Set("Accept-Language", "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	r.Header.Set("Sec-Fetch-Mode", "navigate")
	r.Header.Set("Sec-Fetch-Dest", "document")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Header.Set("Referer", testSite+"/docs/")
	c := "_ga=GA1.1.123456789.1700000000; theme=dark; consent=analytics%3D0%26ads%3D0"
	if cookie != "" {
		c += "; " + cookie
	}
	r.Header.Set("Cookie", c)
	return r
}

// benchContext is what Caddy gives each request: a fresh replacer and a
// fresh map of request variables (reusing either would carry one
// iteration's state, the signed-in user included, into the next), shaped as
// Caddy's PrepareRequest makes them: the replacer has its http.* provider
// mapped and the variables hold the client IP and trusted-proxy flag, so
// that whether the handler's own Map and SetVar grow them is as in Caddy.
func benchContext(base *http.Request) *http.Request {
	repl := caddy.NewReplacer()
	repl.Map(benchHTTPVars)
	ctx := context.WithValue(base.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false,
		caddyhttp.ClientIPVarKey:     "192.0.2.1",
	})
	return base.WithContext(ctx)
}

// benchHTTPVars stands for Caddy's {http.*} provider.
func benchHTTPVars(string) (any, bool) { return nil, false }

// serveBench runs the handler as Caddy does per request; the request's
// Cookie header is restored first, since the handler strips our cookies
// from it.
func serveBench(b *testing.B, h *Handler, base *http.Request, cookies []string, w http.ResponseWriter, next caddyhttp.Handler) {
	r := benchContext(base)
	r.Header["Cookie"] = cookies
	if err := h.ServeHTTP(w, r, next); err != nil {
		b.Fatal(err)
	}
}

var nopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// BenchmarkGateSignedIn is the hot path: a signed-in user's request with a
// session cookie this instance has already seen.
func BenchmarkGateSignedIn(b *testing.B) {
	hx := newHarness(b, nil, func(h *Handler) {
		h.Headers = map[string]string{"X-Auth-User": "{http.auth.user.id}"}
	})
	br := newBrowser()
	hx.signIn(br, "/", "user-1")
	base := benchRequest(b, sessionCookie+"="+br.get(sessionCookie))
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	cookies := base.Header["Cookie"]
	w := discardWriter{h: http.Header{}}
	serveBench(b, hx.h, base, cookies, w, nopNext) // warm the caches
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		serveBench(b, hx.h, base, cookies, w, nopNext)
	}
}

// BenchmarkGateRedirect is an anonymous navigation, sent to sign in, with
// Logto's discovery already cached.
func BenchmarkGateRedirect(b *testing.B) {
	hx := newHarness(b, nil, nil)
	hx.startSignIn(newBrowser(), "/") // caches discovery
	base := benchRequest(b, "")
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	cookies := base.Header["Cookie"]
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		w := discardWriter{h: http.Header{}}
		serveBench(b, hx.h, base, cookies, w, nopNext)
	}
}

// BenchmarkGateRequestSetup is what the two benchmarks above spend outside
// the handler (replacer, variables, request copy), to subtract.
func BenchmarkGateRequestSetup(b *testing.B) {
	base := benchRequest(b, "")
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = benchContext(base)
	}
}

// discardWriter is a ResponseWriter that keeps headers and drops the body.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// BenchmarkGateBearerCached is an API client's request with a Logto
// access token this instance has verified before: a hash, a cache hit,
// the audience and a scope rule, the placeholders and one header.
func BenchmarkGateBearerCached(b *testing.B) {
	hx := newHarness(b, nil, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.BearerOnly = true
		h.Require = []Rule{{Kind: "scope", Values: []string{"read:data"}}}
		h.Headers = map[string]string{"X-Auth-User": "{http.auth.user.id}"}
	})
	tok := hx.idp.m2mToken("read:data write:data")
	base := httptest.NewRequest(http.MethodGet, testSite+"/api/v1/items?page=2", nil)
	base.Header.Set("User-Agent", "okhttp/4.12.0")
	base.Header.Set("Accept", "application/json")
	base.Header.Set("Accept-Encoding", "gzip")
	base.Header.Set("Authorization", "Bearer "+tok)
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	w := discardWriter{h: http.Header{}}
	serveBench(b, hx.h, base, nil, w, nopNext) // verifies and caches the token
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		serveBench(b, hx.h, base, nil, w, nopNext)
	}
}

// soak drives many signed-in users through one handler, each with its own
// browser cookie, the way a soak test against Logto does: every round
// advances the clock past the ID tokens' lifetime and sends one request
// per user, which refreshes the session and re-issues its cookie.
type soak struct {
	tb      testing.TB
	hx      *harness
	cookies []string // each user's session cookie, as the browser holds it
}

// newSoak signs in users distinct users (user-0, user-1, ...) on a handler
// whose ID tokens live idTTL.
func newSoak(tb testing.TB, users int, idTTL time.Duration, configure func(h *Handler)) *soak {
	tb.Helper()
	idp := newFakeIdP(tb)
	idp.rotate = true
	idp.idTTL = idTTL
	for i := range users {
		idp.addUser(fmt.Sprintf("user-%d", i), map[string]any{
			"name": fmt.Sprintf("User %d", i), "username": fmt.Sprintf("user%d", i),
			"email": fmt.Sprintf("user%d@example.com", i), "email_verified": true,
			"roles": []any{"editor"}, "organizations": []any{"org1"},
			"created_at": json.Number("1700000000000"),
		})
	}
	hx := newHarness(tb, idp, configure)
	s := &soak{tb: tb, hx: hx, cookies: make([]string, users)}
	for i := range users {
		br := newBrowser()
		hx.signIn(br, "/", fmt.Sprintf("user-%d", i))
		s.cookies[i] = br.get(sessionCookie)
	}
	return s
}

// request sends user i's cookie (or, with cookie set, that one) and keeps
// the cookie the response sets; it reports whether the request passed.
func (s *soak) request(i int, cookie string) bool {
	if cookie == "" {
		cookie = s.cookies[i]
	}
	r, _, w := newRequest(http.MethodGet, "/", nil, fetchAPI(), withHeader("Cookie", sessionCookie+"="+cookie))
	passed := false
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { passed = true; return nil })
	if err := s.hx.h.ServeHTTP(w, r, next); err != nil {
		return false
	}
	for _, line := range w.Header().Values("Set-Cookie") {
		if v, ok := strings.CutPrefix(line, sessionCookie+"="); ok {
			v, _, _ = strings.Cut(v, ";")
			if v != "" {
				s.cookies[i] = v
			}
		}
	}
	return passed
}

// round advances the clock by d and sends one request per user; with
// inFlight, each user's pre-refresh cookie is sent once more afterwards
// (a request the browser sent before the new cookie arrived).
func (s *soak) round(d time.Duration, inFlight bool) {
	s.tb.Helper()
	s.hx.clock.Advance(d)
	for i := range s.cookies {
		old := s.cookies[i]
		if !s.request(i, "") {
			s.tb.Fatalf("user %d was signed out", i)
		}
		if inFlight && !s.request(i, old) {
			s.tb.Fatalf("user %d: the pre-refresh cookie was refused", i)
		}
	}
}

// retained is the heap the client's per-session state holds: the live
// heap with it, less the live heap once it is dropped. It drops that state
// for good, and stops the logout list's polling of storage: call it last.
// It waits for the goroutines that keep file storage locks fresh (each
// lives 5 s past its lock) to end, or their buffers blur the measure.
func (s *soak) retained() uint64 {
	c := s.hx.h.client
	c.revoked.stop()
	time.Sleep(6 * time.Second)
	with := liveHeap()
	c.users, c.live, c.verified = newUserCache(maxCachedUsers), newLiveSessions(), newVerifiedTokens(maxVerifiedTokens)
	without := liveHeap()
	if with < without {
		return 0
	}
	return with - without
}

func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkSessionMemory is the memory a signed-in user costs an
// instance, after a number of refreshes: users sign in, then every round
// each one's ID token expires and its next request refreshes it (Logto's
// rotation on, 20 s ID tokens as in the soak test). B/user is what the
// client's per-session state (decoded-session cache, live sessions,
// verified ID tokens) retains per user; it must not grow with refreshes.
// Run with -benchtime 1x; add -memprofile to see where it goes.
func BenchmarkSessionMemory(b *testing.B) {
	for _, c := range []struct{ users, refreshes int }{{200, 0}, {200, 10}, {200, 30}} {
		b.Run(fmt.Sprintf("users=%d/refreshes=%d", c.users, c.refreshes), func(b *testing.B) {
			for range b.N {
				s := newSoak(b, c.users, 20*time.Second, nil)
				for range c.refreshes {
					s.round(20*time.Second, true)
				}
				// The values the last refreshes replaced go after
				// supersededGrace.
				s.hx.clock.Advance(supersededGrace)
				s.hx.h.client.sweep()
				b.ReportMetric(float64(s.hx.h.client.users.len()), "cached")
				b.ReportMetric(float64(s.retained())/float64(c.users), "B/user")
			}
		})
	}
}

// mintSessions makes n session cookies as sign-ins on this instance would
// have left them, without a round trip to the IdP for each: ID tokens of
// distinct users signed by the fake IdP (at most users of them, expiring
// at idExp; sessions past that share them, as one user's devices do),
// verified on this instance, and refresh tokens the fake knows.
func mintSessions(tb testing.TB, hx *harness, n, users int, idExp time.Time) []string {
	tb.Helper()
	idp, c := hx.idp, hx.h.client
	now := hx.clock.Now()
	type minted struct{ sub, idToken string }
	ids := make([]minted, min(n, users))
	for i := range ids {
		sub := fmt.Sprintf("user-m%d", i)
		idp.addUser(sub, map[string]any{
			"name": fmt.Sprintf("User %d", i), "username": fmt.Sprintf("user%d", i),
			"email": fmt.Sprintf("user%d@example.com", i), "email_verified": true,
			"roles": []any{"editor"}, "organizations": []any{"org1"},
			"created_at": json.Number("1700000000000"),
		})
		claims := idp.idClaims(sub, "")
		claims["exp"] = idExp.Unix()
		ids[i] = minted{sub, idp.sign(claims)}
		c.verified.add(ids[i].idToken)
	}
	cookies := make([]string, n)
	for i := range n {
		m := ids[i%len(ids)]
		rt := randomString(32)
		idp.mu.Lock()
		idp.refresh[rt] = &fakeRefresh{grant: &fakeGrant{id: randomString(8), sub: m.sub,
			scopes: []string{"openid", "offline_access", "profile", "email"}}}
		idp.mu.Unlock()
		u, err := newUser(session{
			ID: randomString(16), IDToken: m.idToken, Refresh: rt,
			Created: now.UnixMilli(), Seen: now.Unix(), Expires: now.Add(14 * 24 * time.Hour).Unix(),
		})
		if err != nil {
			tb.Fatal(err)
		}
		cookies[i] = c.sessions.Seal(sessionAAD, u.encode())
	}
	return cookies
}

// benchCookies is one request per cookie, as Caddy would hand it over.
type benchCookies struct {
	base    []*http.Request
	cookies [][]string
}

func newBenchCookies(b *testing.B, values []string) *benchCookies {
	bc := &benchCookies{}
	for _, v := range values {
		base := caddyhttp.PrepareRequest(benchRequest(b, sessionCookie+"="+v), caddy.NewReplacer(), httptest.NewRecorder(), nil)
		bc.base = append(bc.base, base)
		bc.cookies = append(bc.cookies, base.Header["Cookie"])
	}
	return bc
}

// BenchmarkSessionsInRotation is a signed-in request when many distinct
// sessions take turns, more than the decoded-session cache holds past 10k:
// a cookie not in the cache costs one decryption and a lookup of its
// (already verified) ID token. miss/op is the share of requests that
// decrypted a cookie; B/session what the instance retains per session
// once each was seen (decoded sessions, live state, verified ID tokens).
// Sessions past 1000 share the ID tokens of 1000 users (signing 100k
// tokens would take minutes), so each still decodes on its own.
func BenchmarkSessionsInRotation(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		var (
			once     sync.Once
			hx       *harness
			reqs     *benchCookies
			retained float64
		)
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			once.Do(func() {
				hx = newHarness(b, nil, nil)
				hx.startSignIn(newBrowser(), "/") // caches discovery
				reqs = newBenchCookies(b, mintSessions(b, hx, n, 1000, hx.clock.Now().Add(time.Hour)))
				before := liveHeap()
				w := discardWriter{h: http.Header{}}
				for i := range reqs.base {
					serveBench(b, hx.h, reqs.base[i], reqs.cookies[i], w, nopNext)
				}
				retained = float64(liveHeap()-min(before, liveHeap())) / float64(n)
			})
			w := discardWriter{h: http.Header{}}
			opens := sessionOpens.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				k := i % n
				serveBench(b, hx.h, reqs.base[k], reqs.cookies[k], w, nopNext)
			}
			b.StopTimer()
			b.ReportMetric(float64(sessionOpens.Load()-opens)/float64(b.N), "miss/op")
			b.ReportMetric(float64(hx.h.client.users.len()), "cached")
			b.ReportMetric(retained, "B/session")
		})
	}
}

// BenchmarkLogoutList is what a logout costs with 1k and 100k entries on
// the logout list: adding one (in memory), a sign-out, a back-channel
// logout, and a refresh (which must not wait on the list). Sign-out and
// back-channel logout include their writes to Caddy's storage (the file
// system here) and, for sign-out, the revocation call to the fake IdP; a
// back-channel logout includes checking the token's signature.
func BenchmarkLogoutList(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		var once sync.Once
		hx := newHarness(b, nil, nil) // shared by the sub-benchmarks
		setup := func(b *testing.B) {
			once.Do(func() {
				hx.startSignIn(newBrowser(), "/")
				until := hx.clock.Now().Add(24 * time.Hour).Unix()
				entries := make([]revocation, n)
				for i := range entries {
					entries[i] = revocation{Kind: revokeSession, Value: randomString(16), At: time.Now().UnixMilli(), Until: until}
				}
				hx.h.client.revoked.merge(entries...)
			})
		}
		b.Run(fmt.Sprintf("entries=%d/add", n), func(b *testing.B) {
			setup(b)
			rv, until := hx.h.client.revoked, hx.clock.Now().Add(24*time.Hour).Unix()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				rv.merge(revocation{Kind: revokeSession, Value: randomString(16), At: time.Now().UnixMilli(), Until: until})
			}
		})
		b.Run(fmt.Sprintf("entries=%d/sign-out", n), func(b *testing.B) {
			setup(b)
			reqs := newBenchCookies(b, mintSessions(b, hx, b.N, 100, hx.clock.Now().Add(time.Hour)))
			for i, r := range reqs.base {
				u := *r.URL
				u.Path = "/logto/sign-out"
				reqs.base[i] = r.WithContext(r.Context())
				reqs.base[i].URL = &u
			}
			w := discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				serveBench(b, hx.h, reqs.base[i], reqs.cookies[i], w, nopNext)
			}
		})
		b.Run(fmt.Sprintf("entries=%d/back-channel", n), func(b *testing.B) {
			setup(b)
			bodies := make([]string, b.N)
			for i := range bodies {
				tok := hx.idp.logoutToken(fmt.Sprintf("gone-%d-%s", i, randomString(4)), nil)
				bodies[i] = url.Values{"logout_token": {tok}}.Encode()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				r := httptest.NewRequest(http.MethodPost, testSite+"/logto/backchannel-logout", strings.NewReader(bodies[i]))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), httptest.NewRecorder(), nil)
				w := httptest.NewRecorder()
				if err := hx.h.ServeHTTP(w, r, nopNext); err != nil || w.Code != http.StatusOK {
					b.Fatalf("back-channel logout: %v %d", err, w.Code)
				}
			}
		})
		b.Run(fmt.Sprintf("entries=%d/refresh", n), func(b *testing.B) {
			setup(b)
			// ID tokens that have expired: each request refreshes.
			reqs := newBenchCookies(b, mintSessions(b, hx, b.N, 100, hx.clock.Now().Add(-time.Minute)))
			w := discardWriter{h: http.Header{}}
			grants := hx.idp.refreshGrants.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				serveBench(b, hx.h, reqs.base[i], reqs.cookies[i], w, nopNext)
			}
			b.StopTimer()
			if got := hx.idp.refreshGrants.Load() - grants; got != int64(b.N) {
				b.Fatalf("%d refreshes for %d requests", got, b.N)
			}
		})
	}
}

// BenchmarkRefreshCoordination is what Caddy's storage adds to each
// refresh so that instances sharing it redeem a refresh token once: the
// lock (take and release), and the handoff (look for another instance's,
// write this one's). On the file system storage of the tests; with
// Redis, see BenchmarkRefreshCoordination in examples/e2e/redisstorage.
func BenchmarkRefreshCoordination(b *testing.B) {
	hx := newHarness(b, nil, nil)
	c := hx.h.client
	if c.revoked.storageBackend() == nil {
		b.Fatal("no storage")
	}
	hx.startSignIn(newBrowser(), "/")
	v := mintSessions(b, hx, 1, 1, hx.clock.Now().Add(time.Hour))[0]
	u := hx.h.openSession(context.Background(), v)
	ctx := context.Background()
	b.Run("lock", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			unlock, err := c.lockRedeem(ctx, u)
			if err != nil {
				b.Fatal(err)
			}
			unlock()
		}
	})
	b.Run("lock+handoff", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			unlock, err := c.lockRedeem(ctx, u)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.adoptRotated(ctx, u); err != nil {
				b.Fatal(err)
			}
			c.publishRotated(ctx, randomString(32), u)
			unlock()
		}
	})
}

// BenchmarkBearerFlood is an instance whose verified-token cache is full
// of 20 000 distinct genuine access tokens (its bound), under a flood of
// distinct forged ones: forged/op is what each costs (a signature check:
// they name the tenant's kid), valid/op a genuine one afterwards. The
// genuine tokens are put in the cache as a verification leaves them
// (signing and checking 20 000 takes minutes here), so one that dropped
// out would fail its request: valid-miss counts them, and grown is the
// live heap the flood left behind. Both must stay 0. B/token is the heap
// a cached token holds.
func BenchmarkBearerFlood(b *testing.B) {
	hx := newHarness(b, nil, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.BearerOnly = true
	})
	c, idp := hx.h.client, hx.idp
	m2m := idp.m2mToken("read:data") // discovery and keys
	bearerBench := func(tok string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, testSite+"/api/v1/items", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	}
	serve := func(r *http.Request) error {
		return hx.h.ServeHTTP(discardWriter{h: http.Header{}}, r.WithContext(r.Context()), nopNext)
	}
	if err := serve(bearerBench(m2m)); err != nil {
		b.Fatal(err)
	}
	const valid = maxCachedBearer
	now := idp.now().Unix()
	raws := make([]string, valid-1)
	start := liveHeap()
	for i := range raws {
		raw := signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": idp.kid()}, map[string]any{
			"jti": randomString(12), "sub": fmt.Sprintf("client-%d", i), "iat": now, "exp": now + 3600,
			"scope": "read:data", "client_id": "spa-app", "iss": idp.issuer, "aud": bearerAPI,
		}, func([]byte) []byte { return []byte(randomString(72)) })
		j, err := parseJWS(raw)
		if err != nil {
			b.Fatal(err)
		}
		t, err := newBearerToken(j.claims)
		if err != nil {
			b.Fatal(err)
		}
		t.raw = raw
		c.bearer.put(c.bearer.key(raw), t, now)
		raws[i] = raw
	}
	if n := c.bearer.len(); n != valid {
		b.Fatalf("cache holds %d tokens, want %d", n, valid)
	}
	perToken := float64(liveHeap()-min(start, liveHeap())) / valid
	genuine := make([]*http.Request, len(raws))
	for i, raw := range raws {
		genuine[i] = bearerBench(raw)
	}
	b.Run("forged", func(b *testing.B) {
		forged := make([]*http.Request, b.N)
		for i := range forged {
			forged[i] = bearerBench(signJWT(map[string]any{"alg": "ES384", "typ": "at+jwt", "kid": idp.kid()}, map[string]any{
				"sub": randomString(8), "client_id": "x", "iss": idp.issuer, "aud": bearerAPI, "exp": now + 60,
			}, func([]byte) []byte { return []byte(randomString(72)) })) // 96 bytes: checked, and fails
		}
		before := liveHeap()
		b.ReportAllocs()
		b.ResetTimer()
		for _, r := range forged {
			if serve(r) == nil {
				b.Fatal("a forged token passed")
			}
		}
		b.StopTimer()
		forged = nil
		b.ReportMetric(float64(max(liveHeap(), before)-before), "grown")
		b.ReportMetric(float64(c.bearer.len()), "cached")
		b.ReportMetric(perToken, "B/token")
	})
	b.Run("valid", func(b *testing.B) {
		misses := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if serve(genuine[i%len(genuine)]) != nil {
				misses++
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(misses), "valid-miss")
	})
}
