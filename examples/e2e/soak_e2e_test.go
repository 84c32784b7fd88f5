package e2e

// The soak (issue 15): a small cluster under steady use while what it
// depends on goes away and comes back, and a count of everything a user
// would have noticed. `make test` runs its short form; `make soak`
// (.ci/soak) the long one.
//
//   - Caddy instances A and B with the module, the same logto blocks, and
//     Caddy's storage on one real redis-server; a third Caddy in front of
//     them (reverse_proxy, lb_policy round_robin, the Host header passed
//     through), which is the only address users know.
//   - A dev IdP of the soak's own, on a fixed port, with short ID tokens
//     and refresh tokens that rotate during the run (Logto's rule: the same
//     token until 70 % of its lifetime), its state kept in a file
//     (DEVIDP_STORE) so a kill -9 and a restart lose no grant, as a real
//     Logto restart loses none. Its public address is a proxy of the
//     soak's (tokenWatch) that sees every refresh grant go through: how
//     many rotated, and whether a rotated token was presented again.
//   - SOAK_USERS users sign in through the real flow (plain HTTP, the IdP's
//     login form) and then act every 1–2 s for SOAK_DURATION: a page
//     navigation, a fetch, a call to an API route whose token the module
//     gets from Logto (token_resource), or a page with two or three of
//     those at once (which is what makes two instances refresh one session
//     at the same moment).
//   - Meanwhile the IdP is killed and restarted (SOAK_IDP_RESTARTS times,
//     down SOAK_IDP_DOWN), redis-server restarted (SOAK_REDIS_RESTARTS,
//     down SOAK_REDIS_DOWN), and instance A reloaded through its admin
//     endpoint (SOAK_RELOADS), on a schedule spread over the run.
//
// A request is classified by the window it overlapped: idp_up (all up),
// idp_down, idp_recovery (SOAK_RECOVERY after the IdP answered again: a
// session that failed against a Logto that answered errors waits 30 s
// before asking again), redis_down, redis_recovery. It fails on a lost
// session (a 401 or a redirect to sign in for a user who never signed out,
// in any window), an answer while the IdP was down other than 200 or 503
// with Retry-After, a 5xx in idp_up, a
// refresh token Logto refused (invalid_grant: the grant was revoked), a
// refresh token redeemed again after it rotated (as the dev IdP counts
// them, when it does, and as tokenWatch sees them), a run in which no
// refresh token rotated, a client error (timeout, reset), an answer a
// signed-in user should never get (403, 404, ...), an API call whose
// upstream got no bearer token, or a sign-in attempted during an outage
// that hung instead of failing cleanly.
// It prints a report and writes it as JSON to SOAK_REPORT
// (.ci/tmp/soak.json). Knobs: soakConfigFromEnv.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-logto/caddy-logto/examples/e2e/redisstorage"
)

// --- configuration -----------------------------------------------------------------

type soakConfig struct {
	Users         int     `json:"users"`
	Duration      float64 `json:"duration_s"`
	IdPRestarts   int     `json:"idp_restarts"`
	IdPDown       float64 `json:"idp_down_s"`
	RedisRestarts int     `json:"redis_restarts"`
	RedisDown     float64 `json:"redis_down_s"`
	Reloads       int     `json:"reloads"`
	Recovery      float64 `json:"recovery_s"`
	IDTokenTTL    int     `json:"id_token_ttl_s"`
	RefreshTTL    int     `json:"refresh_token_ttl_s"`
	AccessTTL     int     `json:"access_token_ttl_s"`
	Concurrency   int     `json:"concurrency"`
	Timeout       float64 `json:"client_timeout_s"`
	Report        string  `json:"-"`
}

func (c soakConfig) dur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// soakConfigFromEnv reads the knobs. The defaults are the short form that
// `make test` runs (about two minutes); `make soak` sets the long one.
//
//	SOAK_USERS           20     users signed in and active the whole run
//	SOAK_DURATION        90s    how long they act
//	SOAK_IDP_RESTARTS    1      IdP kills (SIGKILL) and restarts
//	SOAK_IDP_DOWN        20s    how long the IdP stays down each time
//	SOAK_REDIS_RESTARTS  0      redis-server stops and starts
//	SOAK_REDIS_DOWN      10s    how long Redis stays down each time
//	SOAK_RELOADS         1      `caddy reload` of instance A
//	SOAK_RECOVERY        35s    window after a restart still counted apart
//	SOAK_ID_TOKEN_TTL    20s    ID token lifetime (refresh at 3/4 of it)
//	SOAK_REFRESH_TTL     100s up to 2 minutes, else 300s: refresh-token
//	                            lifetime; it rotates after 70 % of it
//	SOAK_ACCESS_TTL      60s    API access token lifetime
//	SOAK_CONCURRENCY     64     requests in flight at most
//	SOAK_TIMEOUT         10s    client timeout of one request
//	SOAK_REPORT          .ci/tmp/soak.json
//
// Durations are Go durations (90s, 10m) or whole seconds.
func soakConfigFromEnv(root string) (soakConfig, error) {
	var errs []error
	num := func(name string, def int) int {
		raw := strings.TrimSpace(os.Getenv(name))
		if raw == "" {
			return def
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s must be a whole number ≥ 0, got %q", name, raw))
			return def
		}
		return n
	}
	secs := func(name string, def time.Duration) float64 {
		raw := strings.TrimSpace(os.Getenv(name))
		if raw == "" {
			return def.Seconds()
		}
		if n, err := strconv.Atoi(raw); err == nil && n > 0 {
			return float64(n)
		}
		d, err := time.ParseDuration(raw)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be a duration such as 90s or 10m, got %q", name, raw))
			return def.Seconds()
		}
		return d.Seconds()
	}
	c := soakConfig{
		Users:         num("SOAK_USERS", 20),
		Duration:      secs("SOAK_DURATION", 90*time.Second),
		IdPRestarts:   num("SOAK_IDP_RESTARTS", 1),
		IdPDown:       secs("SOAK_IDP_DOWN", 20*time.Second),
		RedisRestarts: num("SOAK_REDIS_RESTARTS", 0),
		RedisDown:     secs("SOAK_REDIS_DOWN", 10*time.Second),
		Reloads:       num("SOAK_RELOADS", 1),
		Recovery:      secs("SOAK_RECOVERY", 35*time.Second),
		Concurrency:   num("SOAK_CONCURRENCY", 64),
		Timeout:       secs("SOAK_TIMEOUT", 10*time.Second),
	}
	c.IDTokenTTL = int(secs("SOAK_ID_TOKEN_TTL", 20*time.Second))
	defRefresh := 300 * time.Second
	if c.Duration <= 120 {
		// Short enough to rotate within the short run, long enough to
		// outlive one outage (down + the module's 30 s back-off) placed
		// early: see soakSchedule.
		defRefresh = 100 * time.Second
	}
	c.RefreshTTL = int(secs("SOAK_REFRESH_TTL", defRefresh))
	c.AccessTTL = int(secs("SOAK_ACCESS_TTL", 60*time.Second))
	c.Report = os.Getenv("SOAK_REPORT")
	if c.Report == "" {
		c.Report = filepath.Join(root, ".ci/tmp/soak.json")
	}
	if c.Users < 1 {
		errs = append(errs, errors.New("SOAK_USERS must be at least 1"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("SOAK_CONCURRENCY must be at least 1"))
	}
	return c, errors.Join(errs...)
}

// --- the schedule ------------------------------------------------------------------

type soakEvent struct {
	Kind string  `json:"kind"` // idp, redis, reload
	At   float64 `json:"at_s"` // planned start, seconds into the load
	Span float64 `json:"-"`    // how long it keeps the run out of idp_up
}

// soakSchedule spreads the events over the run, kinds interleaved (IdP
// first), with equal gaps between them and at both ends; each event's
// span is its down time plus the recovery window (a reload: 10 s). When
// the spans do not fit, events follow each other with no gap and the load
// runs until the last one's span ends.
func soakSchedule(c soakConfig) (events []soakEvent, loadFor float64) {
	left := map[string]int{"idp": c.IdPRestarts, "reload": c.Reloads, "redis": c.RedisRestarts}
	span := map[string]float64{"idp": c.IdPDown + c.Recovery, "reload": 10, "redis": c.RedisDown + c.Recovery}
	total := 0.0
	for more := true; more; {
		more = false
		for _, k := range []string{"idp", "reload", "redis"} {
			if left[k] > 0 {
				left[k]--
				events = append(events, soakEvent{Kind: k, Span: span[k]})
				total += span[k]
				more = true
			}
		}
	}
	gap := (c.Duration - total) / float64(len(events)+1)
	gap = max(gap, 0)
	at := gap
	for i := range events {
		events[i].At = at
		at += events[i].Span + gap
	}
	return events, max(c.Duration, at-gap)
}

// --- what the run saw ----------------------------------------------------------------

const (
	kindNav = iota
	kindFetch
	kindAPI
)

var soakKinds = []string{"navigate", "fetch", "api"}
var soakPaths = []string{"/", "/data.json", "/api/echo"}

// soakReq is one request of the load, kept small: there are ~100k of them
// in the long run.
type soakReq struct {
	start, end int64 // ms since the load started
	status     int16 // 0: client error
	kind       uint8
	inst       uint8 // 0 none, 1 a, 2 b
	retryAfter bool
}

// soakEventLog is one notable answer: a lost session, a 5xx, a client
// error, an unexpected status.
type soakEventLog struct {
	User     string  `json:"user"`
	At       float64 `json:"at_s"`
	Kind     string  `json:"kind"`
	Status   int     `json:"status,omitempty"`
	Instance string  `json:"instance,omitempty"`
	Window   string  `json:"window,omitempty"`
	Detail   string  `json:"detail,omitempty"`
	start    int64   // ms since the load started
	end      int64
}

type soakWindow struct {
	kind       string // idp_down, idp_recovery, redis_down, redis_recovery
	start, end int64  // ms since the load started; end 0 while open
}

// windowRank: a request overlapping several windows counts in the first.
var windowRank = []string{"idp_down", "redis_down", "idp_recovery", "redis_recovery"}

type soakUser struct {
	n    int
	name string // demo user (password = name)
	jar  *cookieJar
	mu   sync.Mutex
	// renewed are the times (ms since the load started) the module set a
	// new session cookie: a refresh, mostly.
	renewed []int64
	lost    atomic.Bool
}

func (u *soakUser) label() string { return fmt.Sprintf("u%03d(%s)", u.n, u.name) }

type soakRun struct {
	t       *testing.T
	cfg     soakConfig
	front   string // http://localhost:<front port>
	idpBase string
	hc      *http.Client
	sem     chan struct{}
	t0      time.Time
	idpUp   atomic.Bool

	mu          sync.Mutex
	reqs        []soakReq
	lost        []soakEventLog
	fiveXX      []soakEventLog // every 5xx, classified later
	clientErrs  []soakEventLog
	unexpected  []soakEventLog
	noBearer    int
	windows     []soakWindow
	signIns     int
	reSignIns   int
	signInFails []string
}

func (s *soakRun) ms(t time.Time) int64 { return t.Sub(s.t0).Milliseconds() }

func (s *soakRun) openWindow(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.windows = append(s.windows, soakWindow{kind: kind, start: s.ms(time.Now())})
	return len(s.windows) - 1
}

func (s *soakRun) closeWindow(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.windows[i].end = s.ms(time.Now())
}

func (s *soakRun) addWindow(kind string, start, end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.windows = append(s.windows, soakWindow{kind: kind, start: start, end: end})
}

// window names the window a request from start to end (ms) overlapped.
// The caller holds s.mu.
func (s *soakRun) window(start, end int64) string {
	best := len(windowRank)
	for _, w := range s.windows {
		wend := w.end
		if wend == 0 {
			wend = 1 << 62
		}
		if start < wend && end >= w.start {
			if i := slices.Index(windowRank, w.kind); i < best {
				best = i
			}
		}
	}
	if best == len(windowRank) {
		return "idp_up"
	}
	return windowRank[best]
}

// --- HTTP ------------------------------------------------------------------------------

// soakResp is an answer, or the client error in its place.
type soakResp struct {
	status   int
	header   http.Header
	body     string
	location string
	err      error
}

// send sends req with the user's cookies and keeps the cookies of the
// answer; it never fails the test (the caller records what it got).
func (s *soakRun) send(u *soakUser, req *http.Request) soakResp {
	if c := u.jar.header(req.URL.Path); c != "" {
		req.Header.Set("Cookie", c)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return soakResp{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return soakResp{err: fmt.Errorf("reading the body: %w", err)}
	}
	u.jar.store(resp)
	if len(sessionSetCookiesOf(resp.Header)) > 0 {
		u.mu.Lock()
		u.renewed = append(u.renewed, s.ms(time.Now()))
		u.mu.Unlock()
	}
	r := soakResp{status: resp.StatusCode, header: resp.Header, body: string(b), location: resp.Header.Get("Location")}
	if r.location != "" {
		r.location = resolve(resp.Request.URL, r.location)
	}
	return r
}

func sessionSetCookiesOf(h http.Header) []string {
	return sessionSetCookies(&response{Response: &http.Response{Header: h}})
}

func soakRequest(kind int, u string) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	switch kind {
	case kindNav:
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-Dest", "document")
	default:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Sec-Fetch-Mode", "cors")
		req.Header.Set("Sec-Fetch-Dest", "empty")
	}
	return req
}

// signIn walks the real flow through the front proxy: the site sends the
// user to the IdP, the user fills the login form, the IdP sends them back
// to the callback, the module sets the session cookie.
func (s *soakRun) signIn(u *soakUser) error {
	callback, err := s.toCallback(u)
	if err != nil {
		return err
	}
	r := s.send(u, soakRequest(kindNav, callback))
	if r.err != nil {
		return fmt.Errorf("callback: %w", r.err)
	}
	if r.status != http.StatusFound && r.status != http.StatusSeeOther {
		return fmt.Errorf("callback: %d %s", r.status, tail(r.body, 200))
	}
	if _, ok := u.jar.get(sessionCookie); !ok {
		return fmt.Errorf("no session cookie after the callback (%d)", r.status)
	}
	return nil
}

// toCallback walks the flow up to the callback URL, without visiting it.
func (s *soakRun) toCallback(u *soakUser) (string, error) {
	r := s.send(u, soakRequest(kindNav, s.front+"/"))
	if r.err != nil {
		return "", fmt.Errorf("GET /: %w", r.err)
	}
	if !strings.HasPrefix(r.location, s.idpBase+"/oidc/auth") {
		return "", fmt.Errorf("GET /: %d Location %q, want a redirect to the IdP", r.status, r.location)
	}
	next := r.location
	for range 20 {
		if strings.HasPrefix(next, s.front+"/logto/sign-in-callback") {
			return next, nil
		}
		r := s.send(u, soakRequest(kindNav, next))
		switch {
		case r.err != nil:
			return "", fmt.Errorf("at the IdP: %w", r.err)
		case r.location != "" && r.status >= 300 && r.status < 400:
			next = r.location
		case r.status == http.StatusOK && formAction.MatchString(r.body):
			action := formAction.FindStringSubmatch(r.body)[1]
			base, _ := url.Parse(next)
			form := url.Values{"username": {u.name}, "password": {u.name}}
			req, _ := http.NewRequest(http.MethodPost, resolve(base, action), strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Accept", "text/html")
			req.Header.Set("Sec-Fetch-Mode", "navigate")
			p := s.send(u, req)
			if p.err != nil || p.location == "" {
				return "", fmt.Errorf("IdP login as %s: %d %v", u.name, p.status, p.err)
			}
			next = p.location
		default:
			return "", fmt.Errorf("unexpected IdP answer at %s: %d %s", next, r.status, tail(r.body, 200))
		}
	}
	return "", errors.New("no way back from the IdP after 20 hops")
}

// --- the load --------------------------------------------------------------------------

// act is one request of a user's, recorded. It reports whether the session
// is still there.
func (s *soakRun) act(u *soakUser, kind int) bool {
	select {
	case s.sem <- struct{}{}:
	case <-time.After(s.cfg.dur(s.cfg.Timeout)):
		// Every slot was taken for a whole client timeout: the load is
		// more than this machine serves; say so rather than pile up.
		s.record(u, kind, time.Now(), time.Now(), soakResp{err: errors.New("no free request slot for a whole client timeout (SOAK_CONCURRENCY)")})
		return true
	}
	start := time.Now()
	r := s.send(u, soakRequest(kind, s.front+soakPaths[kind]))
	end := time.Now()
	<-s.sem
	return s.record(u, kind, start, end, r)
}

func (s *soakRun) record(u *soakUser, kind int, start, end time.Time, r soakResp) bool {
	q := soakReq{start: s.ms(start), end: s.ms(end), status: int16(r.status), kind: uint8(kind)}
	inst := ""
	if r.header != nil {
		inst = r.header.Get("X-Instance")
		q.retryAfter = r.header.Get("Retry-After") != ""
	}
	switch inst {
	case "a":
		q.inst = 1
	case "b":
		q.inst = 2
	}
	ev := soakEventLog{User: u.label(), At: float64(q.start) / 1000, Kind: soakKinds[kind], Status: r.status, Instance: inst, start: q.start, end: q.end}
	alive := true
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, q)
	switch {
	case r.err != nil:
		ev.Detail = r.err.Error()
		s.clientErrs = append(s.clientErrs, ev)
	case r.status == http.StatusOK:
		if kind == kindAPI {
			var echo struct {
				Bearer bool `json:"bearer"`
			}
			if json.Unmarshal([]byte(r.body), &echo) != nil || !echo.Bearer {
				s.noBearer++
				ev.Detail = "the API upstream got no bearer token: " + tail(r.body, 120)
				s.unexpected = append(s.unexpected, ev)
			}
		}
	case r.status == http.StatusUnauthorized,
		r.status >= 300 && r.status < 400 && (strings.HasPrefix(r.location, s.idpBase+"/oidc/auth") || strings.Contains(r.location, "/logto/sign-in")):
		ev.Detail = "Location " + tail(r.location, 80)
		if r.status == http.StatusUnauthorized {
			ev.Detail = "WWW-Authenticate " + r.header.Get("WWW-Authenticate")
		}
		s.lost = append(s.lost, ev)
		alive = false
	case r.status >= 500:
		ev.Detail = tail(strings.TrimSpace(r.body), 160)
		if q.retryAfter {
			ev.Detail = "Retry-After " + r.header.Get("Retry-After") + "; " + ev.Detail
		}
		s.fiveXX = append(s.fiveXX, ev)
	default:
		ev.Detail = tail(strings.TrimSpace(r.location+" "+r.body), 160)
		s.unexpected = append(s.unexpected, ev)
	}
	return alive
}

// user is one user's loop: act every 1–2 s until the deadline; a lost
// session signs in again (once the IdP is up) and carries on.
func (s *soakRun) user(ctx context.Context, u *soakUser) {
	rng := rand.New(rand.NewPCG(uint64(u.n), uint64(s.t0.UnixNano())))
	// Users start spread over the first two seconds.
	if !sleepCtx(ctx, time.Duration(rng.Int64N(int64(2*time.Second)))) {
		return
	}
	for ctx.Err() == nil {
		next := time.Now().Add(time.Second + time.Duration(rng.Int64N(int64(time.Second))))
		if u.lost.Load() {
			s.reSignIn(ctx, u)
		} else {
			var alive bool
			switch p := rng.IntN(100); {
			case p < 40:
				alive = s.act(u, kindNav)
			case p < 60:
				alive = s.act(u, kindFetch)
			case p < 75:
				alive = s.act(u, kindAPI)
			default:
				// A page that fires two or three requests at once: with
				// round robin they land on both instances, with the same
				// cookie.
				kinds := []int{kindNav, kindFetch, kindAPI}[:2+rng.IntN(2)]
				rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
				var wg sync.WaitGroup
				var lostOne atomic.Bool
				for _, k := range kinds {
					wg.Go(func() {
						if !s.act(u, k) {
							lostOne.Store(true)
						}
					})
				}
				wg.Wait()
				alive = !lostOne.Load()
			}
			if !alive {
				u.lost.Store(true)
			}
		}
		if !sleepCtx(ctx, time.Until(next)) {
			return
		}
	}
}

// reSignIn signs a user whose session was lost in again, waiting for the
// IdP when it is down.
func (s *soakRun) reSignIn(ctx context.Context, u *soakUser) {
	for !s.idpUp.Load() {
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return
		}
	}
	u.jar.mu.Lock()
	clear(u.jar.cookies)
	u.jar.mu.Unlock()
	err := s.signIn(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.signInFails = append(s.signInFails, fmt.Sprintf("%s again at +%.1fs: %v", u.label(), time.Since(s.t0).Seconds(), err))
		return
	}
	s.reSignIns++
	u.lost.Store(false)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// --- the IdP of the soak -------------------------------------------------------------

// soakIdP is the soak's dev IdP. Its public address (the issuer, in every
// session) is a proxy of the soak's own that watches the token endpoint
// (tokenWatch); node listens behind it. Both go away together and come
// back on the same ports, the IdP's state kept in DEVIDP_STORE.
type soakIdP struct {
	port  int    // node's port (DEVIDP_PORT)
	base  string // the public address (DEVIDP_BASE): the watch
	env   map[string]string
	cur   *devIdP
	watch *tokenWatch
	logs  logBuffer // every run's output
}

func (d *soakIdP) start() error {
	var last error
	for range 2 {
		p, err := startProc(env.root, environ(d.env), "node", "examples/devidp/server.js")
		if err != nil {
			return err
		}
		idp := &devIdP{base: d.base, port: d.port, p: p}
		if last = idp.waitReady(30 * time.Second); last == nil {
			d.cur = idp
			return d.watch.open()
		}
		// node-oidc-provider hangs at start-up now and then: once more.
		d.kill(idp)
		last = fmt.Errorf("%w\n%s", last, tail(p.out.String(), 2000))
	}
	return last
}

// down takes the IdP away as a crash would: its address refuses
// connections at once, and node is killed (SIGKILL to its process group),
// so no shutdown handler runs and only what it wrote as it went survives.
func (d *soakIdP) down() {
	d.watch.close()
	d.kill(d.cur)
}

func (d *soakIdP) kill(idp *devIdP) {
	if idp == nil || idp.p.exited() {
		return
	}
	_ = syscall.Kill(-idp.p.cmd.Process.Pid, syscall.SIGKILL)
	<-idp.p.done
	_, _ = d.logs.Write([]byte(idp.p.out.String()))
}

// tokenWatch is the IdP's public address: a reverse proxy to node that
// reads every refresh grant going through, so the soak sees for itself how
// often refresh tokens rotate and whether one was redeemed again after
// it rotated (what Logto punishes), besides what the IdP counts.
type tokenWatch struct {
	port   int
	target *url.URL
	proxy  *httputil.ReverseProxy
	srvMu  sync.Mutex
	srv    *http.Server

	mu        sync.Mutex
	rotatedAt map[[32]byte]time.Time // a token → when an answer replaced it
	refreshes int                    // refresh grants answered 200
	refused   int                    // refresh grants answered 4xx
	rotations int                    // 200s that brought a new refresh token
	within    int                    // a rotated token accepted again (inside the grace)
	after     int                    // a rotated token refused
	reuses    []tokenReuse
}

// tokenReuse is a rotated refresh token presented again.
type tokenReuse struct {
	rotated  time.Time // when the answer that rotated it came back
	sent     time.Time // when the second request came in
	answered time.Time
	status   int
}

type presentedKey struct{}

type presented struct {
	hash [32]byte
	at   time.Time
}

func newTokenWatch(port int, target *url.URL) *tokenWatch {
	w := &tokenWatch{port: port, target: target, rotatedAt: map[[32]byte]time.Time{}}
	w.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(w.target)
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: w.observe,
	}
	return w
}

func (w *tokenWatch) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/oidc/token" {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("grant_type") == "refresh_token" {
			p := presented{hash: sha256.Sum256([]byte(form.Get("refresh_token"))), at: time.Now()}
			r = r.WithContext(context.WithValue(r.Context(), presentedKey{}, p))
		}
	}
	w.proxy.ServeHTTP(rw, r)
}

// observe counts a refresh grant's answer.
func (w *tokenWatch) observe(resp *http.Response) error {
	pr, ok := resp.Request.Context().Value(presentedKey{}).(presented)
	if !ok {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	var tr struct {
		RefreshToken string `json:"refresh_token"`
	}
	_ = json.Unmarshal(body, &tr)
	w.mu.Lock()
	defer w.mu.Unlock()
	rotatedAt, wasRotated := w.rotatedAt[pr.hash]
	if wasRotated && resp.StatusCode != http.StatusOK || wasRotated && tr.RefreshToken != "" {
		w.reuses = append(w.reuses, tokenReuse{rotated: rotatedAt, sent: pr.at, answered: time.Now(), status: resp.StatusCode})
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		w.refreshes++
		if tr.RefreshToken == "" || sha256.Sum256([]byte(tr.RefreshToken)) == pr.hash {
			break
		}
		w.rotations++
		if wasRotated {
			w.within++
		} else {
			w.rotatedAt[pr.hash] = time.Now()
		}
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		w.refused++
		if wasRotated {
			w.after++
		}
	}
	return nil
}

// open starts listening on the public port (again), retrying for a few
// seconds if the port is not free yet.
func (w *tokenWatch) open() error {
	var l net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if l, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", w.port)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the IdP's address: %w", err)
		}
	}
	srv := &http.Server{Handler: w, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	w.srvMu.Lock()
	w.srv = srv
	w.srvMu.Unlock()
	return nil
}

// close stops listening and drops every connection.
func (w *tokenWatch) close() {
	w.srvMu.Lock()
	defer w.srvMu.Unlock()
	if w.srv != nil {
		_ = w.srv.Close()
		w.srv = nil
	}
}

type soakWatched struct {
	Refreshes   int         `json:"refresh_grants"`
	Refused     int         `json:"refused"`
	Rotations   int         `json:"rotations"`
	ReusedGrace int         `json:"reused_within_grace"`
	ReusedAfter int         `json:"reused_refused"`
	Reuses      []soakReuse `json:"reuses,omitempty"` // the first 50
}

// soakReuse is a rotated refresh token presented again. Racing: the second
// request came in before the answer that rotated the token went out (two
// redemptions at once: what a lock across instances prevents); otherwise
// the token was presented after its rotation was known (a stale cookie
// whose rotation the instance did not adopt).
type soakReuse struct {
	At      float64 `json:"at_s"`
	Racing  bool    `json:"racing"`
	AfterMS int64   `json:"after_rotation_ms"` // second request's arrival minus the rotation's answer
	Status  int     `json:"status"`
}

func (w *tokenWatch) counts(t0 time.Time) soakWatched {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := soakWatched{Refreshes: w.refreshes, Refused: w.refused, Rotations: w.rotations, ReusedGrace: w.within, ReusedAfter: w.after}
	for _, r := range w.reuses[:min(50, len(w.reuses))] {
		c.Reuses = append(c.Reuses, soakReuse{At: r.sent.Sub(t0).Seconds(), Racing: r.sent.Before(r.rotated), AfterMS: r.sent.Sub(r.rotated).Milliseconds(), Status: r.status})
	}
	return c
}

func (d *soakIdP) output() string {
	out := d.logs.String()
	if d.cur != nil && !d.cur.p.exited() {
		out += d.cur.p.out.String()
	}
	return out
}

// get reads a /__dev/ hook of the running IdP into out.
func (d *soakIdP) get(path string, out any) error {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", d.port, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, tail(string(b), 200))
	}
	return json.Unmarshal(b, out)
}

// persistent reports whether the IdP keeps its state across restarts
// (GET /__dev/store names its DEVIDP_STORE persistence).
func (d *soakIdP) persistent() bool {
	var info struct {
		Persistence any `json:"persistence"`
	}
	return d.get("/__dev/store", &info) == nil && info.Persistence != nil
}

// The dev IdP counts rotated refresh tokens presented again: inside
// Logto's 3 s grace (accepted, and a double redemption all the same) and
// after it (refused, and the grant revoked). Also GET /__dev/refresh-reuse.
const (
	reuseWithinGraceKey = "refresh_token_reuse_within_grace"
	reuseRefusedKey     = "refresh_token_reuse_refused"
)

// counters is /__dev/stats with every numeric counter, nested ones flattened.
func (d *soakIdP) counters() (map[string]float64, error) {
	var raw map[string]any
	if err := d.get("/__dev/stats", &raw); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case float64:
			out[prefix] = v
		case map[string]any:
			for k, x := range v {
				walk(prefix+"."+k, x)
			}
		}
	}
	for k, v := range raw {
		walk(k, v)
	}
	return out, nil
}

// --- the test ------------------------------------------------------------------------

// TestSoak is the soak; see the top of this file. It does not run in
// parallel with the other tests: its windows are measured in seconds and
// its users would compete with theirs for the machine's two cores.
func TestSoak(t *testing.T) {
	requireStack(t)
	cfg, err := soakConfigFromEnv(env.root)
	if err != nil {
		t.Fatal(err)
	}
	bin := caddyRedisBinary(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "redis"), 0o700); err != nil {
		t.Fatal(err)
	}
	rdb := startRedis(t, filepath.Join(dir, "redis"), 0)
	events, loadFor := soakSchedule(cfg)

	// The IdP: the application's redirect URI is the front's.
	frontPort, aPort, bPort, adminPort := freePort(t), freePort(t), freePort(t), freePort(t)
	front := fmt.Sprintf("http://localhost:%d", frontPort)
	idpPort, watchPort := freePort(t), freePort(t)
	app := logtoApp{id: "soak-" + randomHex(6), secret: randomHex(24)}
	idp := &soakIdP{port: idpPort, base: fmt.Sprintf("http://localhost:%d", watchPort),
		watch: newTokenWatch(watchPort, &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", idpPort)})}
	idp.env = map[string]string{
		"DEVIDP_PORT":                      strconv.Itoa(idpPort),
		"DEVIDP_BASE":                      idp.base,
		"DEVIDP_STORE":                     filepath.Join(dir, "idp-store.json"),
		"DEVIDP_ID_TOKEN_TTL":              strconv.Itoa(cfg.IDTokenTTL),
		"DEVIDP_REFRESH_TOKEN_TTL":         strconv.Itoa(cfg.RefreshTTL),
		"DEVIDP_ACCESS_TOKEN_TTL":          strconv.Itoa(cfg.AccessTTL),
		"DEVIDP_ROTATE":                    "logto",
		"DEVIDP_CLIENT_ID":                 app.id,
		"DEVIDP_CLIENT_SECRET":             app.secret,
		"DEVIDP_REDIRECT_URIS":             front + "/logto/sign-in-callback",
		"DEVIDP_POST_LOGOUT_REDIRECT_URIS": front + "/",
	}
	if err := idp.start(); err != nil {
		t.Fatalf("the soak's dev IdP: %v", err)
	}
	t.Cleanup(func() {
		idp.down()
		if t.Failed() {
			t.Logf("--- soak devidp output ---\n%s", tail(idp.output(), 4000))
		}
	})

	// The API behind the token_resource route: it says whether a bearer
	// token came with the request.
	var apiCalls, apiBearer atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		apiCalls.Add(1)
		if ok && strings.Count(tok, ".") == 2 {
			apiBearer.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]bool{"bearer": ok && strings.Count(tok, ".") == 2})
	}))
	t.Cleanup(api.Close)

	vars := map[string]string{"LOGTO_ENDPOINT": idp.base, "LOGTO_APP_ID": app.id, "LOGTO_APP_SECRET": app.secret}
	aFile := filepath.Join(dir, "a.Caddyfile")
	aConf := soakInstanceCaddyfile("a", aPort, fmt.Sprintf("127.0.0.1:%d", adminPort), rdb.Addr, strings.TrimPrefix(api.URL, "http://"))
	if err := os.WriteFile(aFile, []byte(aConf), 0o600); err != nil {
		t.Fatal(err)
	}
	instA := runCaddyBinary(t, bin, "A", aPort, aConf, vars)
	instB := runCaddyBinary(t, bin, "B", bPort, soakInstanceCaddyfile("b", bPort, "off", rdb.Addr, strings.TrimPrefix(api.URL, "http://")), vars)
	frontConf := fmt.Sprintf(`{
	admin off
	persist_config off
	default_bind 127.0.0.1
	storage file_system %s
}

%s {
	reverse_proxy 127.0.0.1:%d 127.0.0.1:%d {
		lb_policy round_robin
		# Caddy passes the Host header through unchanged by default; said
		# here because the instances build redirect URIs from it.
		header_up Host {hostport}
	}
}
`, filepath.Join(dir, "front-storage"), front, aPort, bPort)
	instFront := runCaddyBinary(t, bin, "front", frontPort, frontConf, nil)

	run := &soakRun{
		t: t, cfg: cfg, front: front, idpBase: idp.base,
		sem: make(chan struct{}, cfg.Concurrency),
		hc: &http.Client{
			Timeout:       cfg.dur(cfg.Timeout),
			Transport:     &http.Transport{DialContext: dialLoopback, MaxIdleConnsPerHost: cfg.Concurrency + 16, IdleConnTimeout: 30 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	run.idpUp.Store(true)
	defer run.hc.CloseIdleConnections()

	// Everyone signs in, eight at a time.
	demo := []string{"alice", "bob", "carol", "many"}
	users := make([]*soakUser, cfg.Users)
	signStart := time.Now()
	var signErrs []string
	{
		var mu sync.Mutex
		work := make(chan *soakUser)
		var wg sync.WaitGroup
		for range min(8, cfg.Users) {
			wg.Go(func() {
				for u := range work {
					if err := run.signIn(u); err != nil {
						mu.Lock()
						signErrs = append(signErrs, fmt.Sprintf("%s: %v", u.label(), err))
						mu.Unlock()
					}
				}
			})
		}
		for i := range users {
			users[i] = &soakUser{n: i, name: demo[i%len(demo)], jar: &cookieJar{cookies: map[[2]string]*http.Cookie{}}}
			work <- users[i]
		}
		close(work)
		wg.Wait()
	}
	if len(signErrs) > 0 {
		t.Fatalf("%d of %d sign-ins failed before the soak began:\n%s", len(signErrs), cfg.Users, strings.Join(signErrs[:min(10, len(signErrs))], "\n"))
	}
	run.signIns = cfg.Users
	signTook := time.Since(signStart)
	// The user's request must reach the instances with the front's Host:
	// the sign-ins above came back to the front's callback, so it did.
	first, err := idp.counters()
	if err != nil {
		t.Fatalf("dev IdP counters: %v", err)
	}
	persistent := idp.persistent()
	t.Logf("soak: %d users signed in through %s in %v; the load runs %v with %d events; dev IdP persistence: %v",
		cfg.Users, front, signTook.Round(100*time.Millisecond), time.Duration(loadFor*float64(time.Second)), len(events), persistent)
	for _, e := range events {
		t.Logf("soak: planned %s at +%.0fs", e.Kind, e.At)
	}

	// Memory of every Caddy, sampled every 3 s.
	type memStat struct {
		First, Max, Last int64
		Series           [][2]float64 // seconds into the load, MB
	}
	mem := map[string]*memStat{}
	procs := map[string]*proc{"a": instA.p, "b": instB.p, "front": instFront.p}
	sample := func() {
		for name, p := range procs {
			kb := vmRSS(p.cmd.Process.Pid)
			if kb <= 0 {
				continue
			}
			m := mem[name]
			if m == nil {
				m = &memStat{First: kb}
				mem[name] = m
			}
			m.Max, m.Last = max(m.Max, kb), kb
			if !run.t0.IsZero() {
				m.Series = append(m.Series, [2]float64{math.Round(time.Since(run.t0).Seconds()), math.Round(float64(kb)/102.4) / 10})
			}
		}
	}

	// The load. Times are counted from here on.
	run.t0 = time.Now()
	for _, u := range users {
		u.renewed = nil // the sign-in's own cookie
	}
	loadCtx, stopLoad := context.WithTimeout(context.Background(), time.Duration(loadFor*float64(time.Second)))
	defer stopLoad()
	var load sync.WaitGroup
	for _, u := range users {
		load.Go(func() { run.user(loadCtx, u) })
	}
	memDone := make(chan struct{})
	var memWG sync.WaitGroup
	memWG.Go(func() {
		tk := time.NewTicker(3 * time.Second)
		defer tk.Stop()
		for {
			sample()
			select {
			case <-memDone:
				return
			case <-tk.C:
			}
		}
	})
	stopAll := func() {
		stopLoad()
		load.Wait()
		select {
		case <-memDone:
		default:
			close(memDone)
		}
		memWG.Wait()
	}
	defer stopAll()

	// The churn, in this goroutine.
	rep := soakReport{Config: cfg, Schedule: events}
	var failures []string
	var restarts []time.Time // when the IdP answered again
	var probes []soakProbe
	for _, e := range events {
		if !sleepCtx(loadCtx, time.Until(run.t0.Add(time.Duration(e.At*float64(time.Second))))) {
			break
		}
		switch e.Kind {
		case "idp":
			// A sign-in that reached the IdP before the outage and comes
			// back to the callback during it.
			probe := &soakUser{n: -1, name: "alice", jar: &cookieJar{cookies: map[[2]string]*http.Cookie{}}}
			callback, cbErr := run.toCallback(probe)
			// The window opens first: a request answered while the IdP
			// goes away is in it.
			w := run.openWindow("idp_down")
			killed := time.Now()
			idp.down()
			run.idpUp.Store(false)
			var pwg sync.WaitGroup
			var pmu sync.Mutex
			pwg.Go(func() {
				sleepCtx(loadCtx, 3*time.Second)
				p := run.probeSignIn(callback, cbErr, probe)
				pmu.Lock()
				probes = append(probes, p...)
				pmu.Unlock()
			})
			sleepCtx(context.Background(), time.Until(killed.Add(cfg.dur(cfg.IdPDown))))
			err := idp.start()
			pwg.Wait()
			if err != nil {
				// Without the IdP the rest of the soak means nothing.
				failures = append(failures, fmt.Sprintf("the dev IdP did not start again: %v", err))
				run.closeWindow(w)
				stopLoad()
				break
			}
			run.closeWindow(w)
			run.idpUp.Store(true)
			back := time.Now()
			restarts = append(restarts, back)
			run.addWindow("idp_recovery", run.ms(back), run.ms(back.Add(cfg.dur(cfg.Recovery))))
			rep.IdPRestarts = append(rep.IdPRestarts, soakRestart{Down: float64(run.ms(killed)) / 1000, Back: float64(run.ms(back)) / 1000, Persistent: idp.persistent()})
			t.Logf("soak: +%.0fs IdP killed, +%.0fs back (persistence %v)", float64(run.ms(killed))/1000, float64(run.ms(back))/1000, rep.IdPRestarts[len(rep.IdPRestarts)-1].Persistent)
		case "redis":
			w := run.openWindow("redis_down")
			stopped := time.Now()
			rdb.Stop()
			sleepCtx(context.Background(), time.Until(stopped.Add(cfg.dur(cfg.RedisDown))))
			srv, err := redisstorage.StartServer(rdb.Dir, addrPort(t, rdb.Addr))
			run.closeWindow(w)
			if err != nil {
				failures = append(failures, fmt.Sprintf("redis-server did not start again: %v", err))
				stopLoad()
				break
			}
			rdb = srv
			t.Cleanup(srv.Stop)
			back := time.Now()
			run.addWindow("redis_recovery", run.ms(back), run.ms(back.Add(cfg.dur(cfg.Recovery))))
			rep.RedisRestarts = append(rep.RedisRestarts, soakRestart{Down: float64(run.ms(stopped)) / 1000, Back: float64(run.ms(back)) / 1000, Persistent: true})
			t.Logf("soak: +%.0fs Redis stopped, +%.0fs back", float64(run.ms(stopped))/1000, float64(run.ms(back))/1000)
		case "reload":
			at := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			cmd := exec.CommandContext(ctx, bin, "reload", "--config", aFile, "--adapter", "caddyfile",
				"--address", fmt.Sprintf("127.0.0.1:%d", adminPort), "--force")
			cmd.Env = environ(vars)
			out, err := cmd.CombinedOutput()
			cancel()
			rl := soakReload{At: float64(run.ms(at)) / 1000, Took: time.Since(at).Seconds(), OK: err == nil}
			if err != nil {
				rl.Output = tail(string(out), 500)
				failures = append(failures, fmt.Sprintf("caddy reload of A failed: %v: %s", err, tail(string(out), 300)))
			}
			rep.Reloads = append(rep.Reloads, rl)
			t.Logf("soak: +%.0fs instance A reloaded (%v, %.1fs)", rl.At, err == nil, rl.Took)
		}
	}
	<-loadCtx.Done()
	stopAll()
	loadEnded := time.Now()

	// Every session must still be there: one navigation each, all up.
	var fwg sync.WaitGroup
	for _, u := range users {
		if u.lost.Load() {
			continue // counted already, and not signed in again
		}
		fwg.Go(func() { run.act(u, kindNav) })
	}
	fwg.Wait()
	sample()
	last, err := idp.counters()
	if err != nil {
		failures = append(failures, fmt.Sprintf("dev IdP counters at the end: %v", err))
	}

	rep.fill(run, users, restarts, first, last, persistent, loadEnded)
	rep.SignIns.Initial, rep.SignIns.InitialSeconds = cfg.Users, signTook.Seconds()
	rep.OutageSignIns = probes
	rep.Memory = map[string]soakMem{}
	for name, m := range mem {
		rep.Memory[name] = soakMem{FirstKB: m.First, MaxKB: m.Max, LastKB: m.Last, Series: m.Series}
	}
	rep.API = soakAPI{Calls: apiCalls.Load(), WithBearer: apiBearer.Load()}
	rep.IdP.Watched = idp.watch.counts(run.t0)
	rep.Failures = append(failures, rep.judge()...)
	rep.Pass = len(rep.Failures) == 0

	t.Log("\n" + rep.text())
	if err := os.MkdirAll(filepath.Dir(cfg.Report), 0o755); err == nil {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(cfg.Report, append(b, '\n'), 0o644); err != nil {
			t.Logf("cannot write %s: %v", cfg.Report, err)
		} else {
			t.Logf("soak report written to %s", cfg.Report)
		}
	}
	for _, f := range rep.Failures {
		t.Error(f)
	}
}

// soakInstanceCaddyfile is instance a's or b's Caddyfile: the same logto
// blocks, Caddy's storage on Redis, and a header naming the instance.
func soakInstanceCaddyfile(name string, port int, admin, redisAddr, apiAddr string) string {
	return fmt.Sprintf(`{
	admin %s
	persist_config off
	default_bind 127.0.0.1
	storage e2e_redis {
		address %s
		prefix caddy-soak
	}
}

(logto_app) {
	endpoint {env.LOGTO_ENDPOINT}
	app_id {env.LOGTO_APP_ID}
	app_secret {env.LOGTO_APP_SECRET}
}

http://localhost:%d {
	header X-Instance %s
	logto {
		import logto_app
	}
	logto /api/* {
		import logto_app
		token_resource https://api.example.com
	}
	handle /api/* {
		reverse_proxy %s {
			header_up Authorization "Bearer {http.auth.logto.access_token}"
		}
	}
	handle /data.json {
		header Content-Type application/json
		respond `+"`"+`["{http.auth.user.id}"]`+"`"+`
	}
	handle {
		header Content-Type "text/html; charset=utf-8"
		respond "<!doctype html><title>soak</title><p id=user-id>{http.auth.user.id}</p>"
	}
}
`, admin, redisAddr, port, name, apiAddr)
}

// vmRSS is a process's resident memory in kB (0 if unreadable).
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// --- sign-ins during an outage --------------------------------------------------------

type soakProbe struct {
	Kind   string  `json:"kind"` // fresh: a new visitor; callback: back from the IdP during the outage
	At     float64 `json:"at_s"`
	Status int     `json:"status,omitempty"`
	TookMS int64   `json:"took_ms"`
	Detail string  `json:"detail"`
	Clear  bool    `json:"clear"` // a prompt error, not a hang, not a 500
}

// probeSignIn tries two sign-ins while the IdP is down: a new visitor (the
// module may still send it to the IdP from its cached discovery, where the
// browser then fails to connect at once, or answer 502 itself), and a
// visitor coming back to the callback whose code the module cannot redeem
// (502). Either must answer promptly, never hang.
func (s *soakRun) probeSignIn(callback string, cbErr error, cbUser *soakUser) []soakProbe {
	var out []soakProbe
	clearStatus := func(st int) bool {
		return st == http.StatusBadGateway || st == http.StatusServiceUnavailable || st == http.StatusGatewayTimeout
	}
	// A new visitor.
	u := &soakUser{n: -2, name: "bob", jar: &cookieJar{cookies: map[[2]string]*http.Cookie{}}}
	start := time.Now()
	p := soakProbe{Kind: "fresh", At: float64(s.ms(start)) / 1000}
	r := s.send(u, soakRequest(kindNav, s.front+"/"))
	switch {
	case r.err != nil:
		p.Detail = "the site: " + r.err.Error()
	case strings.HasPrefix(r.location, s.idpBase):
		p.Status = r.status
		r2 := s.send(u, soakRequest(kindNav, r.location))
		if r2.err != nil {
			p.Detail = "sent to the IdP, which is unreachable: " + shortErr(r2.err)
			p.Clear = !isTimeout(r2.err)
		} else {
			p.Detail = fmt.Sprintf("sent to the IdP, which answered %d", r2.status)
		}
	default:
		p.Status = r.status
		p.Detail = fmt.Sprintf("the site answered %d %s", r.status, tail(strings.TrimSpace(r.body), 100))
		p.Clear = clearStatus(r.status)
	}
	p.TookMS = time.Since(start).Milliseconds()
	out = append(out, p)

	// Back to the callback.
	start = time.Now()
	p = soakProbe{Kind: "callback", At: float64(s.ms(start)) / 1000}
	if cbErr != nil {
		p.Detail = "could not reach the callback before the outage: " + cbErr.Error()
	} else {
		r := s.send(cbUser, soakRequest(kindNav, callback))
		if r.err != nil {
			p.Detail = r.err.Error()
		} else {
			p.Status = r.status
			p.Detail = tail(strings.TrimSpace(r.body), 100)
			p.Clear = clearStatus(r.status)
		}
	}
	p.TookMS = time.Since(start).Milliseconds()
	out = append(out, p)
	return out
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		return s[i+2:]
	}
	return s
}

// --- the report ------------------------------------------------------------------------

type soakRestart struct {
	Down       float64 `json:"down_at_s"`
	Back       float64 `json:"back_at_s"`
	Persistent bool    `json:"persistent"`
}

type soakReload struct {
	At     float64 `json:"at_s"`
	Took   float64 `json:"took_s"`
	OK     bool    `json:"ok"`
	Output string  `json:"output,omitempty"`
}

type soakMem struct {
	FirstKB int64        `json:"first_kb"`
	MaxKB   int64        `json:"max_kb"`
	LastKB  int64        `json:"last_kb"`
	Series  [][2]float64 `json:"series_s_mb"` // every 3 s: seconds into the load, MB
}

type soakAPI struct {
	Calls      int64 `json:"upstream_calls"`
	WithBearer int64 `json:"with_bearer"`
}

type soakLatency struct {
	P50 int64 `json:"p50_ms"`
	P99 int64 `json:"p99_ms"`
	Max int64 `json:"max_ms"`
}

type soakEvents struct {
	Count  int            `json:"count"`
	Events []soakEventLog `json:"events,omitempty"` // the first 50
}

func newSoakEvents(evs []soakEventLog) soakEvents {
	return soakEvents{Count: len(evs), Events: evs[:min(50, len(evs))]}
}

type soakRefreshed struct {
	Restart  int     `json:"restart"`
	Users    int     `json:"users_refreshed"`
	Of       int     `json:"of"`
	MedianS  float64 `json:"median_s"`
	SlowestS float64 `json:"slowest_s"`
}

type soakReport struct {
	Config   soakConfig  `json:"config"`
	Schedule []soakEvent `json:"schedule"`
	LoadS    float64     `json:"load_s"`
	SignIns  struct {
		Initial        int      `json:"initial"`
		InitialSeconds float64  `json:"initial_s"`
		Again          int      `json:"again"`
		Failed         []string `json:"failed,omitempty"`
	} `json:"sign_ins"`
	Requests struct {
		Total    int                       `json:"total"`
		ByWindow map[string]map[string]int `json:"by_window"` // window → status → count
		ByKind   map[string]map[string]int `json:"by_kind"`
		Instance map[string]int            `json:"by_instance"`
	} `json:"requests"`
	// OutageOther counts answers in idp_down that were neither 200 nor
	// 503 with Retry-After, by kind of request.
	OutageOther   map[string]int         `json:"idp_down_not_200_or_503_retry_after"`
	Latency       soakLatency            `json:"latency"`
	LatencyWindow map[string]soakLatency `json:"latency_by_window"`
	Lost          soakEvents             `json:"lost_sessions"`
	FiveXXWhileUp soakEvents             `json:"server_errors_while_up"`
	FiveXXOutage  soakEvents             `json:"server_errors_in_outages"`
	ClientErrors  soakEvents             `json:"client_errors"`
	Unexpected    soakEvents             `json:"unexpected_answers"`
	API           soakAPI                `json:"api"`
	IdPRestarts   []soakRestart          `json:"idp_restarts"`
	RedisRestarts []soakRestart          `json:"redis_restarts"`
	Reloads       []soakReload           `json:"reloads"`
	OutageSignIns []soakProbe            `json:"outage_sign_ins"`
	Refreshed     []soakRefreshed        `json:"refreshed_after_idp_restart"`
	IdP           soakIdPCounts          `json:"idp"`
	Memory        map[string]soakMem     `json:"memory"`
	Failures      []string               `json:"failures"`
	Pass          bool                   `json:"pass"`
}

type soakIdPCounts struct {
	Persistent        bool               `json:"persistent"`
	Watched           soakWatched        `json:"token_endpoint"` // what the soak saw going through
	RefreshGrants     int                `json:"refresh_token_grants"`
	InvalidGrants     int                `json:"invalid_grants"`
	DoubleRedemptions *int               `json:"double_redemptions"` // nil: the IdP does not count them
	RevokedGrants     *int               `json:"grants_revoked"`     // nil: the IdP does not count them
	Counters          map[string]float64 `json:"counters"`           // every counter's change over the run
}

func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

func latencyOf(ms []int64) soakLatency {
	slices.Sort(ms)
	if len(ms) == 0 {
		return soakLatency{}
	}
	return soakLatency{P50: percentile(ms, 0.5), P99: percentile(ms, 0.99), Max: ms[len(ms)-1]}
}

func (rep *soakReport) fill(run *soakRun, users []*soakUser, restarts []time.Time, first, last map[string]float64, persistent bool, loadEnded time.Time) {
	run.mu.Lock()
	defer run.mu.Unlock()
	rep.LoadS = loadEnded.Sub(run.t0).Seconds()
	rep.SignIns.Again = run.reSignIns
	rep.SignIns.Failed = run.signInFails
	rep.Requests.Total = len(run.reqs)
	rep.Requests.ByWindow = map[string]map[string]int{}
	rep.Requests.ByKind = map[string]map[string]int{}
	rep.Requests.Instance = map[string]int{}
	var all []int64
	byWin := map[string][]int64{}
	rep.OutageOther = map[string]int{}
	for _, q := range run.reqs {
		w := run.window(q.start, q.end)
		if w == "idp_down" && q.status != http.StatusOK && (q.status != http.StatusServiceUnavailable || !q.retryAfter) {
			rep.OutageOther[soakKinds[q.kind]]++
		}
		st := strconv.Itoa(int(q.status))
		switch {
		case q.status == 0:
			st = "client_error"
		case q.status == http.StatusServiceUnavailable && q.retryAfter:
			st = "503+Retry-After"
		}
		if rep.Requests.ByWindow[w] == nil {
			rep.Requests.ByWindow[w] = map[string]int{}
		}
		rep.Requests.ByWindow[w][st]++
		k := soakKinds[q.kind]
		if rep.Requests.ByKind[k] == nil {
			rep.Requests.ByKind[k] = map[string]int{}
		}
		rep.Requests.ByKind[k][st]++
		rep.Requests.Instance[[]string{"none", "a", "b"}[q.inst]]++
		if q.status != 0 {
			all = append(all, q.end-q.start)
			byWin[w] = append(byWin[w], q.end-q.start)
		}
	}
	rep.Latency = latencyOf(all)
	rep.LatencyWindow = map[string]soakLatency{}
	for w, ms := range byWin {
		rep.LatencyWindow[w] = latencyOf(ms)
	}
	classify := func(evs []soakEventLog) []soakEventLog {
		out := slices.Clone(evs)
		for i := range out {
			out[i].Window = run.window(out[i].start, out[i].end)
		}
		return out
	}
	rep.Lost = newSoakEvents(classify(run.lost))
	var up, outage []soakEventLog
	for _, ev := range classify(run.fiveXX) {
		if ev.Window == "idp_up" {
			up = append(up, ev)
		} else {
			outage = append(outage, ev)
		}
	}
	rep.FiveXXWhileUp, rep.FiveXXOutage = newSoakEvents(up), newSoakEvents(outage)
	rep.ClientErrors = newSoakEvents(classify(run.clientErrs))
	rep.Unexpected = newSoakEvents(classify(run.unexpected))

	// The first refresh of each session after the IdP came back.
	for i, back := range restarts {
		b := run.ms(back)
		var delays []float64
		for _, u := range users {
			u.mu.Lock()
			for _, at := range u.renewed {
				if at >= b {
					delays = append(delays, float64(at-b)/1000)
					break
				}
			}
			u.mu.Unlock()
		}
		sort.Float64s(delays)
		r := soakRefreshed{Restart: i + 1, Users: len(delays), Of: len(users)}
		if len(delays) > 0 {
			r.MedianS, r.SlowestS = delays[len(delays)/2], delays[len(delays)-1]
		}
		rep.Refreshed = append(rep.Refreshed, r)
	}

	rep.IdP.Persistent = persistent
	rep.IdP.Counters = map[string]float64{}
	for k, v := range last {
		if d := v - first[k]; d != 0 {
			rep.IdP.Counters[k] = d
		}
	}
	rep.IdP.RefreshGrants = int(rep.IdP.Counters["refresh_token_grants"])
	rep.IdP.InvalidGrants = int(rep.IdP.Counters["invalid_grants"])
	_, hasWithin := last[reuseWithinGraceKey]
	_, hasRefused := last[reuseRefusedKey]
	if hasWithin || hasRefused {
		within := int(last[reuseWithinGraceKey] - first[reuseWithinGraceKey])
		refused := int(last[reuseRefusedKey] - first[reuseRefusedKey])
		double := within + refused
		rep.IdP.DoubleRedemptions, rep.IdP.RevokedGrants = &double, &refused
	}
}

// judge lists what makes the soak fail.
func (rep *soakReport) judge() []string {
	var f []string
	if n := rep.Lost.Count; n > 0 {
		f = append(f, fmt.Sprintf("%d lost sessions (401 or a redirect to sign in for a user who never signed out); first: %s", n, evString(rep.Lost.Events[0])))
	}
	if n := rep.FiveXXWhileUp.Count; n > 0 {
		f = append(f, fmt.Sprintf("%d 5xx while everything was up (outside outage and recovery windows); first: %s", n, evString(rep.FiveXXWhileUp.Events[0])))
	}
	var other []string
	for kind, n := range rep.OutageOther {
		if n > 0 {
			other = append(other, fmt.Sprintf("%s %d", kind, n))
		}
	}
	if len(other) > 0 {
		sort.Strings(other)
		f = append(f, "answers while the IdP was down that were neither 200 nor 503 with Retry-After: "+strings.Join(other, ", "))
	}
	if n := rep.ClientErrors.Count; n > 0 {
		f = append(f, fmt.Sprintf("%d requests got no answer (client timeout %gs, reset, refused); first: %s", n, rep.Config.Timeout, evString(rep.ClientErrors.Events[0])))
	}
	if n := rep.Unexpected.Count; n > 0 {
		f = append(f, fmt.Sprintf("%d answers a signed-in user should never get; first: %s", n, evString(rep.Unexpected.Events[0])))
	}
	if rep.IdP.InvalidGrants > 0 {
		f = append(f, fmt.Sprintf("the IdP refused %d refresh tokens (invalid_grant: a grant revoked, or a token it no longer knows)", rep.IdP.InvalidGrants))
	}
	if p := rep.IdP.DoubleRedemptions; p != nil && *p > 0 {
		f = append(f, fmt.Sprintf("the IdP counted %d refresh-token double redemptions", *p))
	}
	if p := rep.IdP.RevokedGrants; p != nil && *p > 0 {
		f = append(f, fmt.Sprintf("the IdP revoked %d grants", *p))
	}
	if w := rep.IdP.Watched; w.ReusedGrace+w.ReusedAfter > 0 {
		f = append(f, fmt.Sprintf("refresh tokens redeemed again after they rotated, seen at the token endpoint: %d inside Logto's 3 s grace, %d refused after it", w.ReusedGrace, w.ReusedAfter))
	}
	if rep.IdP.Watched.Rotations == 0 {
		f = append(f, fmt.Sprintf("no refresh token rotated during the run: it proves nothing about rotation (rotation starts %.0fs into a token's life; SOAK_REFRESH_TTL, SOAK_DURATION)", 0.7*float64(rep.Config.RefreshTTL)))
	}
	for _, p := range rep.OutageSignIns {
		if !p.Clear {
			f = append(f, fmt.Sprintf("a %s sign-in during the IdP outage got no clear error (%d after %d ms: %s)", p.Kind, p.Status, p.TookMS, p.Detail))
		}
	}
	if len(rep.SignIns.Failed) > 0 {
		f = append(f, fmt.Sprintf("%d sign-ins again after a lost session failed; first: %s", len(rep.SignIns.Failed), rep.SignIns.Failed[0]))
	}
	for _, r := range rep.IdPRestarts {
		if !r.Persistent {
			f = append(f, "the dev IdP kept nothing across its restart (DEVIDP_STORE unsupported?): the soak cannot tell a lost grant from a lost IdP")
			break
		}
	}
	return f
}

func evString(e soakEventLog) string {
	s := fmt.Sprintf("%s at +%.1fs, %s", e.User, e.At, e.Kind)
	if e.Status != 0 {
		s += fmt.Sprintf(" → %d", e.Status)
	}
	if e.Instance != "" {
		s += " from instance " + e.Instance
	}
	if e.Window != "" {
		s += " (" + e.Window + ")"
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func statusLine(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// text is the printed report.
func (rep *soakReport) text() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	c := rep.Config
	p("=== soak: %d users, %.0fs of load (%.0fs planned), IdP down %d× %.0fs, Redis down %d× %.0fs, %d reload(s) of A",
		c.Users, rep.LoadS, c.Duration, len(rep.IdPRestarts), c.IdPDown, len(rep.RedisRestarts), c.RedisDown, len(rep.Reloads))
	p("    ID tokens %ds, refresh tokens %ds (rotate after %.0fs), API tokens %ds; recovery window %.0fs; client timeout %.0fs",
		c.IDTokenTTL, c.RefreshTTL, 0.7*float64(c.RefreshTTL), c.AccessTTL, c.Recovery, c.Timeout)
	p("sign-ins: %d at the start (%.1fs), %d again after a lost session, %d failed", rep.SignIns.Initial, rep.SignIns.InitialSeconds, rep.SignIns.Again, len(rep.SignIns.Failed))
	p("requests: %d; by instance: %s", rep.Requests.Total, statusLine(rep.Requests.Instance))
	for _, w := range append([]string{"idp_up"}, windowRank...) {
		if m := rep.Requests.ByWindow[w]; m != nil {
			l := rep.LatencyWindow[w]
			p("  %-15s %s  (p50 %d ms, p99 %d ms)", w, statusLine(m), l.P50, l.P99)
		}
	}
	for _, k := range soakKinds {
		if m := rep.Requests.ByKind[k]; m != nil {
			p("  %-15s %s", k, statusLine(m))
		}
	}
	p("latency: p50 %d ms, p99 %d ms, max %d ms", rep.Latency.P50, rep.Latency.P99, rep.Latency.Max)
	p("API upstream: %d calls, %d with a bearer token", rep.API.Calls, rep.API.WithBearer)
	for _, r := range rep.IdPRestarts {
		p("IdP killed at +%.0fs, answering again at +%.0fs (state kept: %v)", r.Down, r.Back, r.Persistent)
	}
	for _, r := range rep.RedisRestarts {
		p("Redis stopped at +%.0fs, back at +%.0fs", r.Down, r.Back)
	}
	for _, r := range rep.Reloads {
		p("A reloaded at +%.0fs (ok %v, %.1fs)", r.At, r.OK, r.Took)
	}
	for _, r := range rep.Refreshed {
		p("after IdP restart %d: %d of %d sessions refreshed (first refresh: median %.1fs, slowest %.1fs after it was back)", r.Restart, r.Users, r.Of, r.MedianS, r.SlowestS)
	}
	for _, pr := range rep.OutageSignIns {
		p("sign-in during the outage (%s) at +%.0fs: %d in %d ms, %s (clear: %v)", pr.Kind, pr.At, pr.Status, pr.TookMS, pr.Detail, pr.Clear)
	}
	dr, rg := "not counted by this dev IdP", "not counted by this dev IdP"
	if rep.IdP.DoubleRedemptions != nil {
		dr = strconv.Itoa(*rep.IdP.DoubleRedemptions)
	}
	if rep.IdP.RevokedGrants != nil {
		rg = strconv.Itoa(*rep.IdP.RevokedGrants)
	}
	p("IdP: %d refresh grants, %d invalid_grant, double redemptions: %s, grants revoked: %s", rep.IdP.RefreshGrants, rep.IdP.InvalidGrants, dr, rg)
	w := rep.IdP.Watched
	p("token endpoint, as the soak saw it: %d refresh grants answered 200 (%d rotated the refresh token), %d refused; rotated tokens redeemed again: %d inside the grace, %d after it",
		w.Refreshes, w.Rotations, w.Refused, w.ReusedGrace, w.ReusedAfter)
	for _, r := range w.Reuses[:min(10, len(w.Reuses))] {
		how := "after its rotation was answered (a stale cookie not adopted)"
		if r.Racing {
			how = "while the request that rotated it was in flight (two redemptions at once)"
		}
		p("  at +%.1fs, %d ms from the rotation's answer, %s → %d", r.At, r.AfterMS, how, r.Status)
	}
	p("lost sessions: %d", rep.Lost.Count)
	for _, e := range rep.Lost.Events[:min(10, len(rep.Lost.Events))] {
		p("  %s", evString(e))
	}
	p("5xx while everything was up: %d", rep.FiveXXWhileUp.Count)
	for _, e := range rep.FiveXXWhileUp.Events[:min(10, len(rep.FiveXXWhileUp.Events))] {
		p("  %s", evString(e))
	}
	p("answers while the IdP was down that were neither 200 nor 503 with Retry-After: %s", statusLine(rep.OutageOther))
	p("5xx in outage and recovery windows: %d", rep.FiveXXOutage.Count)
	for _, e := range rep.FiveXXOutage.Events[:min(5, len(rep.FiveXXOutage.Events))] {
		p("  %s", evString(e))
	}
	p("client errors: %d; unexpected answers: %d", rep.ClientErrors.Count, rep.Unexpected.Count)
	for _, e := range append(rep.ClientErrors.Events[:min(5, len(rep.ClientErrors.Events))], rep.Unexpected.Events[:min(5, len(rep.Unexpected.Events))]...) {
		p("  %s", evString(e))
	}
	names := make([]string, 0, len(rep.Memory))
	for n := range rep.Memory {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := rep.Memory[n]
		var along []string
		for i := 1; i < 4 && len(m.Series) > 4; i++ {
			pt := m.Series[i*len(m.Series)/4]
			along = append(along, fmt.Sprintf("%.0f MB at +%.0fs", pt[1], pt[0]))
		}
		p("memory (VmRSS) %-5s first %.1f MB, highest %.1f MB, last %.1f MB (%s)", n, float64(m.FirstKB)/1024, float64(m.MaxKB)/1024, float64(m.LastKB)/1024, strings.Join(along, ", "))
	}
	if rep.Pass {
		p("PASS")
	} else {
		p("FAIL:")
		for _, f := range rep.Failures {
			p("  - %s", f)
		}
	}
	return b.String()
}
