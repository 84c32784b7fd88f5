package e2e

// Several Caddy instances sharing Caddy's storage on a real redis-server:
// the logout list and rotated refresh tokens reach every instance, and a
// Redis restart loses neither.

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-logto/caddy-logto/examples/e2e/redisstorage"
)

// TestClusterOnRedis runs Caddy instances A and B (and later C) with the
// same Caddyfile, `storage` on one redis-server (examples/e2e/redisstorage
// in the test binary examples/e2e/cmd/caddy-redis; users add a published
// plugin), revocation_poll 1s, and a dev IdP that rotates the refresh token
// on every use and revokes the grant when a used one comes back after
// Logto's 3 s grace.
//
//   - Logto sends a back-channel logout to A only: B must end the session
//     within revocation_poll.
//   - A refreshes a session (the refresh token rotates); the pre-rotation
//     cookie then reaches B after the grace: B must adopt A's state rather
//     than present the dead token, which would end the user's grant.
//   - Redis stops for longer than an ID token lives, while the sessions are
//     used on both instances and Logto logs one user out through A; then
//     Redis starts again on its data directory. No request may fail while
//     it is down, the logout must reach B once it is back, and an instance
//     C started afterwards must know every logout and every rotation.
func TestClusterOnRedis(t *testing.T) {
	t.Parallel()
	requireStack(t)
	bin := caddyRedisBinary(t)
	rdb := startRedis(t, t.TempDir(), 0)
	const ttl = 6 // ID token lifetime, seconds
	idp := startTestIdP(t, map[string]string{"DEVIDP_ID_TOKEN_TTL": strconv.Itoa(ttl), "DEVIDP_ROTATE": "always"})
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var sites, callbacks []string
	for _, p := range ports {
		u := fmt.Sprintf("http://localhost:%d", p)
		sites, callbacks = append(sites, u), append(callbacks, u+"/logto/sign-in-callback")
	}
	urlA, urlB, urlC := sites[0], sites[1], sites[2]
	app := registerApp(t, idp, logtoApp{}, callbacks, nil, urlA+"/logto/backchannel-logout")
	caddyfile := redisGlobals(rdb.Addr) + gatedCaddyfile("\t\tcookie_secret {env.COOKIE_SECRET}\n\t\trevocation_poll 1s")
	secret := "cookie-" + randomHex(16)
	run := func(name string, port int, siteURL string) *caddyInstance {
		return runCaddyBinary(t, bin, name, port, caddyfile, caddyVars(idp, app, "SITE_ADDRESS", siteURL, "COOKIE_SECRET", secret))
	}
	run("A", ports[0], urlA)
	run("B", ports[1], urlB)

	status := func(siteURL, cookie string) int {
		return requestWithCookie(t, http.MethodGet, siteURL+"/", cookie).StatusCode
	}
	want := func(what string, code int, cookie string, siteURLs ...string) {
		t.Helper()
		for _, u := range siteURLs {
			if s := status(u, cookie); s != code {
				t.Errorf("%s on %s: %d, want %d", what, u, s, code)
			}
		}
	}
	signIn := func(siteURL, username string) string {
		t.Helper()
		v := newVisitor(t)
		signInAs(t, v, siteURL, idp.base, "/", username)
		return sessionCookieHeader(t, v)
	}
	logout := func(username string) {
		t.Helper()
		idp.admin(t, http.MethodPost, "/__dev/logout?sub="+url.QueryEscape(idp.userID(t, username)), nil, nil)
	}
	s0 := idp.tokenStats(t)

	// Back-channel logout received by A, honoured by B.
	bob := signIn(urlA, "bob")
	want("bob's session", http.StatusOK, bob, urlA, urlB)
	logout("bob")
	took := eventually(t, 5*time.Second, "B ends bob's session", func() bool { return status(urlB, bob) == http.StatusUnauthorized })
	t.Logf("back-channel logout delivered to A; B ended the session %v later (revocation_poll 1s)", took.Round(10*time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("B took %v to honour the logout, want about revocation_poll (1 s)", took)
	}
	want("bob's session after the logout", http.StatusUnauthorized, bob, urlA)

	// A refresh on A rotates the refresh token; the old cookie keeps working
	// on B, which adopts A's state instead of redeeming the dead token.
	alice := signIn(urlA, "alice")
	signedIn := time.Now()
	time.Sleep(time.Until(signedIn.Add(ttl*time.Second + 1500*time.Millisecond)))
	before := idp.tokenStats(t)
	r := requestWithCookie(t, http.MethodGet, urlA+"/", alice)
	aliceNew := cookieHeader(sessionSetCookies(r))
	afterA := idp.tokenStats(t)
	if r.StatusCode != http.StatusOK || aliceNew == "" || afterA.RefreshTokenGrants-before.RefreshTokenGrants != 1 {
		t.Fatalf("expired session on A: %s, new cookie %v, refresh grants %d; want 200, a new cookie, 1 refresh",
			r.Status, aliceNew != "", afterA.RefreshTokenGrants-before.RefreshTokenGrants)
	}
	time.Sleep(3500 * time.Millisecond) // past Logto's reuse grace for the old token
	want("pre-rotation cookie after the grace", http.StatusOK, alice, urlB)
	want("refreshed cookie", http.StatusOK, aliceNew, urlA, urlB)
	afterB := idp.tokenStats(t)
	t.Logf("refresh on A: 1 refresh grant; pre-rotation cookie on B %v later: 200 with %d more refresh grants and %d invalid_grant",
		3500*time.Millisecond, afterB.RefreshTokenGrants-afterA.RefreshTokenGrants, afterB.InvalidGrants-before.InvalidGrants)
	if afterB.RefreshTokenGrants != afterA.RefreshTokenGrants || afterB.InvalidGrants != before.InvalidGrants {
		t.Errorf("B redeemed the refresh token itself (%d grants, %d invalid_grant) instead of adopting A's rotation",
			afterB.RefreshTokenGrants-afterA.RefreshTokenGrants, afterB.InvalidGrants-before.InvalidGrants)
	}

	// Redis goes down for longer than an ID token lives.
	carol := signIn(urlB, "carol")
	want("carol's session", http.StatusOK, carol, urlA, urlB)
	rdb.Stop()
	down := time.Now()
	var failed []string
	var slowest time.Duration
	use := func() {
		for _, c := range []struct{ who, cookie string }{{"alice (pre-rotation)", alice}, {"alice", aliceNew}} {
			for _, u := range []string{urlA, urlB} {
				start := time.Now()
				s := status(u, c.cookie)
				slowest = max(slowest, time.Since(start))
				if s != http.StatusOK {
					failed = append(failed, fmt.Sprintf("%s on %s at +%v: %d", c.who, u, time.Since(down).Round(100*time.Millisecond), s))
				}
			}
		}
	}
	for time.Since(down) < 2*time.Second {
		use()
		time.Sleep(300 * time.Millisecond)
	}
	logout("carol") // delivered to A while Redis is down
	want("carol's session right after the logout", http.StatusUnauthorized, carol, urlA)
	for time.Since(down) < (ttl+2)*time.Second {
		use()
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("while Redis was down: %d requests of signed-in sessions failed; the slowest took %v", len(failed), slowest.Round(time.Millisecond))
	if len(failed) > 0 {
		t.Errorf("%d requests of signed-in sessions failed while Redis was down:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	t.Logf("carol's session on B while Redis is down: %d (B cannot know of the logout yet)", status(urlB, carol))
	outage := time.Since(down)
	startRedis(t, rdb.Dir, addrPort(t, rdb.Addr))
	back := time.Now()
	took = eventually(t, 10*time.Second, "B ends carol's session once Redis is back", func() bool { return status(urlB, carol) == http.StatusUnauthorized })
	t.Logf("Redis down %v; the logout A received meanwhile reached B %v after Redis came back", outage.Round(100*time.Millisecond), took.Round(10*time.Millisecond))

	// A new instance knows every logout and rotation made before the restart.
	// C must end bob's and carol's sessions from the logout list alone: had
	// the restart lost it, C would ask Logto (whose refusal would end them
	// too, but only once their ID tokens expired, and at Logto's cost).
	run("C", ports[2], urlC)
	time.Sleep(1500 * time.Millisecond) // C's first read of the logout list
	beforeC := idp.tokenStats(t)
	want("bob's session (logged out before the restart)", http.StatusUnauthorized, bob, urlC, urlA, urlB)
	want("carol's session (logged out during the outage)", http.StatusUnauthorized, carol, urlC, urlA, urlB)
	if afterC := idp.tokenStats(t); afterC.RefreshTokenGrants != beforeC.RefreshTokenGrants || afterC.InvalidGrants != beforeC.InvalidGrants {
		t.Errorf("C asked Logto about sessions on the logout list (%d refresh grants, %d invalid_grant): the list did not survive the restart",
			afterC.RefreshTokenGrants-beforeC.RefreshTokenGrants, afterC.InvalidGrants-beforeC.InvalidGrants)
	}
	// The pre-rotation cookie first, on C, which never saw alice: only the
	// handoff A stored before the restart maps it to a live token.
	want("alice's pre-rotation cookie", http.StatusOK, alice, urlC, urlA, urlB)
	want("alice's session", http.StatusOK, aliceNew, urlC, urlA, urlB)
	end := idp.tokenStats(t)
	t.Logf("after the restart (+%v): IdP refresh grants %d in all, invalid_grant %d",
		time.Since(back).Round(100*time.Millisecond), end.RefreshTokenGrants-s0.RefreshTokenGrants, end.InvalidGrants-s0.InvalidGrants)
	if end.InvalidGrants != s0.InvalidGrants {
		t.Errorf("the IdP answered %d invalid_grant: an instance presented a refresh token Logto had rotated or revoked", end.InvalidGrants-s0.InvalidGrants)
	}
}

// TestClusterRefreshOnceOnRedis: a page load and its API calls of one user,
// round-robined to instances A and B on one redis-server, all arrive with
// an expired session at once. Each instance refreshes a session once, but
// without a lock shared through storage both would redeem the same refresh
// token: a soak against Logto saw 37-45 such double redemptions in ten
// minutes, forgiven only by Logto's 3 s reuse grace (a stricter Logto
// revokes the grant). With the dev IdP rotating the token on every use, it
// must count one refresh grant per expiry and no reuse; with Logto's own
// rotation (the same token back until 70 % of its lifetime), one refresh
// grant too: the instance that waited takes the other's result.
func TestClusterRefreshOnceOnRedis(t *testing.T) {
	t.Parallel()
	requireStack(t)
	bin := caddyRedisBinary(t)
	rdb := startRedis(t, t.TempDir(), 0)
	for _, rotate := range []string{"always", "logto"} {
		t.Run("rotate="+rotate, func(t *testing.T) {
			const ttl, rounds, perInstance = 4, 3, 6
			idp := startTestIdP(t, map[string]string{"DEVIDP_ID_TOKEN_TTL": strconv.Itoa(ttl), "DEVIDP_ROTATE": rotate})
			ports := []int{freePort(t), freePort(t)}
			var sites, callbacks []string
			for _, p := range ports {
				u := fmt.Sprintf("http://localhost:%d", p)
				sites, callbacks = append(sites, u), append(callbacks, u+"/logto/sign-in-callback")
			}
			app := registerApp(t, idp, logtoApp{}, callbacks, nil, "")
			caddyfile := redisGlobals(rdb.Addr) + gatedCaddyfile("\t\tcookie_secret {env.COOKIE_SECRET}")
			secret := "cookie-" + randomHex(16)
			for i, name := range []string{"A", "B"} {
				runCaddyBinary(t, bin, name, ports[i], caddyfile, caddyVars(idp, app, "SITE_ADDRESS", sites[i], "COOKIE_SECRET", secret))
			}
			v := newVisitor(t)
			signInAs(t, v, sites[0], idp.base, "/", "alice")
			cookie := sessionCookieHeader(t, v)
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dialLoopback, MaxIdleConnsPerHost: 64}}

			for round := range rounds {
				time.Sleep((ttl + 1) * time.Second) // the ID token expires
				before := refreshReuse(t, idp)
				type answer struct {
					status int
					cookie string
					took   time.Duration
					err    error
				}
				answers := make([]answer, 2*perInstance)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range answers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						req, _ := http.NewRequest(http.MethodGet, sites[i%2]+"/api/items?i="+strconv.Itoa(i), nil)
						req.Header.Set("Accept", "application/json")
						req.Header.Set("Sec-Fetch-Mode", "cors")
						req.Header.Set("Cookie", cookie)
						<-start
						t0 := time.Now()
						resp, err := hc.Do(req)
						if err != nil {
							answers[i].err = err
							return
						}
						resp.Body.Close()
						answers[i] = answer{status: resp.StatusCode, cookie: cookieHeader(sessionSetCookies(&response{Response: resp})), took: time.Since(t0)}
					}()
				}
				close(start)
				wg.Wait()
				var slowest time.Duration
				for i, a := range answers {
					if a.err != nil || a.status != http.StatusOK {
						t.Errorf("round %d, request %d to %s: %v %d", round, i, sites[i%2], a.err, a.status)
					}
					if a.cookie != "" {
						cookie = a.cookie
					}
					slowest = max(slowest, a.took)
				}
				after := refreshReuse(t, idp)
				t.Logf("round %d: %d concurrent requests with one expired session to A and B; %d refresh grants, %d double redemptions; the slowest answered in %v",
					round, len(answers), after.RefreshTokenGrants-before.RefreshTokenGrants, after.DoubleRedemptions-before.DoubleRedemptions, slowest.Round(time.Millisecond))
				if n := after.RefreshTokenGrants - before.RefreshTokenGrants; n != 1 {
					t.Errorf("round %d: %d refresh grants for one expired session, want 1", round, n)
				}
				if n := after.DoubleRedemptions - before.DoubleRedemptions; n != 0 {
					t.Errorf("round %d: the IdP saw %d double redemptions (%d within the grace, %d refused)", round, n,
						after.ReusedWithinGrace-before.ReusedWithinGrace, after.ReusedRefused-before.ReusedRefused)
				}
			}
		})
	}
}

// reuseCounts is the dev IdP's count of refresh tokens redeemed twice.
type reuseCounts struct {
	RefreshTokenGrants int `json:"refresh_token_grants"`
	ReusedWithinGrace  int `json:"reused_within_grace"`
	ReusedRefused      int `json:"reused_refused"`
	DoubleRedemptions  int `json:"double_redemptions"`
}

func refreshReuse(t testing.TB, idp *devIdP) reuseCounts {
	t.Helper()
	var c reuseCounts
	idp.admin(t, http.MethodGet, "/__dev/refresh-reuse", nil, &c)
	return c
}

// redisGlobals is caddyGlobals with Caddy's storage on Redis.
func redisGlobals(addr string) string {
	return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n\tstorage e2e_redis {\n\t\taddress %s\n\t\tprefix caddy-e2e\n\t}\n}\n\n", addr)
}

// cookieHeader turns Set-Cookie lines into a Cookie header.
func cookieHeader(setCookies []string) string {
	var parts []string
	for _, line := range setCookies {
		parts = append(parts, strings.SplitN(line, ";", 2)[0])
	}
	return strings.Join(parts, "; ")
}

// startRedis starts redis-server with its data in dir (port 0: a free one),
// or skips the test without it (fails when CI is set: .ci/test installs it).
func startRedis(t *testing.T, dir string, port int) *redisstorage.Server {
	t.Helper()
	srv, err := redisstorage.StartServer(dir, port)
	if errors.Is(err, redisstorage.ErrNoServer) {
		missing(t, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func addrPort(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

var caddyRedis struct {
	once sync.Once
	path string
	err  error
}

// caddyRedisBinary builds examples/e2e/cmd/caddy-redis once per run.
func caddyRedisBinary(t *testing.T) string {
	t.Helper()
	caddyRedis.once.Do(func() {
		caddyRedis.path = filepath.Join(env.tmp, "caddy-redis")
		build := exec.Command("go", "build", "-o", caddyRedis.path, "./examples/e2e/cmd/caddy-redis")
		build.Dir = env.root
		if out, err := build.CombinedOutput(); err != nil {
			caddyRedis.err = fmt.Errorf("go build ./examples/e2e/cmd/caddy-redis: %v\n%s", err, out)
		}
	})
	if caddyRedis.err != nil {
		t.Fatal(caddyRedis.err)
	}
	return caddyRedis.path
}

// runCaddyBinary is runCaddy with another Caddy binary.
func runCaddyBinary(t *testing.T, bin, name string, port int, caddyfile string, vars map[string]string) *caddyInstance {
	t.Helper()
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	over := map[string]string{"HOME": home, "XDG_DATA_HOME": filepath.Join(home, "data"), "XDG_CONFIG_HOME": filepath.Join(home, "config")}
	for k, v := range vars {
		over[k] = v
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startProc(dir, environ(over), bin, "run", "--config", file, "--adapter", "caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- caddy %s output ---\n%s", name, tail(p.out.String(), 6000))
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			conn.Close()
			return &caddyInstance{t: t, name: name, port: port, URL: fmt.Sprintf("http://localhost:%d", port), p: p}
		}
		if p.exited() || time.Now().After(deadline) {
			p.stop()
			t.Fatalf("caddy %s did not come up on port %d\n%s", name, port, p.out.String())
		}
	}
}
