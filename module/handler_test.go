package logto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // storage for the logout list
)

// The handler tests drive Handler.ServeHTTP the way Caddy's server does:
// a request prepared with a real caddy.Replacer and the original request
// in its context, a "next" handler that records what it saw, and a fake
// Logto (testidp_test.go) on loopback.

const testSite = "https://app.example.com"

// ---- Caddy context, storage and log capture ----

// logCapture receives every line the module logs: Caddy's default logger
// writes to it (see testCaddyContext), at debug level.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

var capturedLogs logCapture

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) Close() error { return nil }

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// captureWriter is a Caddy log writer module writing to capturedLogs.
type captureWriter struct{}

func (captureWriter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.writers.logto_test_capture",
		New: func() caddy.Module { return new(captureWriter) },
	}
}
func (captureWriter) String() string                      { return "logto test capture" }
func (captureWriter) WriterKey() string                   { return "logto_test_capture" }
func (captureWriter) OpenWriter() (io.WriteCloser, error) { return &capturedLogs, nil }

func init() { caddy.RegisterModule(captureWriter{}) }

// logSecrets are values that must never appear in a log line: every code
// and token the fakes issued, every app secret, every cookie value set.
var logSecrets struct {
	sync.Mutex
	m map[string]bool
}

func registerLogSecrets(values ...string) {
	logSecrets.Lock()
	defer logSecrets.Unlock()
	if logSecrets.m == nil {
		logSecrets.m = map[string]bool{}
	}
	for _, v := range values {
		if len(v) >= 12 { // shorter ones could match by chance
			logSecrets.m[v] = true
		}
	}
}

// leakedSecrets returns the log lines that contain a registered secret.
func leakedSecrets() []string {
	logs := capturedLogs.String()
	logSecrets.Lock()
	defer logSecrets.Unlock()
	var out []string
	for s := range logSecrets.m {
		i := strings.Index(logs, s)
		if i < 0 {
			continue
		}
		start := strings.LastIndexByte(logs[:i], '\n') + 1
		end := strings.IndexByte(logs[i:], '\n')
		if end < 0 {
			end = len(logs) - i
		}
		out = append(out, fmt.Sprintf("%.40q... in %.400s", s, logs[start:i+end]))
	}
	return out
}

var (
	caddyOnce sync.Once
	caddyErr  error
)

// testCaddyContext returns a Caddy context with a loaded (empty) config, so
// that ctx.Storage() and ctx.Logger() work: a file storage in a temporary
// directory and Caddy's default log captured at debug level. A bare
// caddy.NewContext(caddy.Context{Context: context.Background()}) has no
// config, and ctx.Storage() panics on it (see TestProvisionWithoutConfig).
func testCaddyContext(t testing.TB) caddy.Context {
	t.Helper()
	caddyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caddy-logto-test-")
		if err != nil {
			caddyErr = err
			return
		}
		cfg := map[string]any{
			"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
			"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")},
			"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
				"level":  "DEBUG",
				"writer": map[string]any{"output": "logto_test_capture"},
			}}},
		}
		b, _ := json.Marshal(cfg)
		caddyErr = caddy.Load(b, true)
	})
	if caddyErr != nil {
		t.Fatalf("loading the test Caddy config: %v", caddyErr)
	}
	ctx, cancel := caddy.NewContext(caddy.ActiveContext())
	t.Cleanup(cancel)
	return ctx
}

// ---- harness ----

// harness is one provisioned Handler against one fake IdP.
type harness struct {
	t     testing.TB
	idp   *fakeIdP
	h     *Handler
	clock *testClock
}

// newHarness provisions a Handler for idp (a new fake when nil), after
// configure has adjusted it. The handler's client and the fake share a
// clock the test can advance.
func newHarness(t testing.TB, idp *fakeIdP, configure func(h *Handler)) *harness {
	t.Helper()
	if idp == nil {
		idp = newFakeIdP(t)
	}
	h := &Handler{Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret}
	if configure != nil {
		configure(h)
	}
	if err := h.Provision(testCaddyContext(t)); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	hx := &harness{t: t, idp: idp, h: h, clock: idp.clock}
	h.client.now = hx.clock.Now
	h.client.idp.now = hx.clock.Now
	t.Cleanup(func() {
		if leaks := leakedSecrets(); len(leaks) > 0 {
			t.Errorf("secrets in the logs:\n%s", strings.Join(leaks, "\n"))
		}
	})
	return hx
}

// result is what one request through the handler produced.
type result struct {
	rec     *httptest.ResponseRecorder
	err     error
	next    bool
	nextReq *http.Request
	ph      map[string]string // placeholders as next saw them
	known   map[string]bool   // whether next's replacer knew them
}

// placeholders read by the recording next handler.
var testPlaceholders = []string{
	"http.auth.user.id", "http.auth.user.email", "http.auth.user.name", "http.auth.user.username",
	"http.auth.user.picture", "http.auth.user.roles", "http.auth.user.organizations",
	"http.auth.user.email_verified", "http.auth.user.created_at", "http.auth.user.nonexistent",
	"http.auth.logto.access_token", "http.auth.logto.organization_id", "http.auth.logto.id_token",
}

// status is the HTTP status the client would get: the HandlerError's when
// the handler returned one, the recorder's otherwise.
func (res *result) status() int {
	if res.err != nil {
		var he caddyhttp.HandlerError
		if errors.As(res.err, &he) {
			return he.StatusCode
		}
		return http.StatusInternalServerError
	}
	return res.rec.Code
}

func (res *result) location() *url.URL {
	loc := res.rec.Header().Get("Location")
	if loc == "" {
		return nil
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil
	}
	return u
}

// setCookies parses the response's Set-Cookie lines.
func (res *result) setCookies(t testing.TB) []*http.Cookie {
	t.Helper()
	var out []*http.Cookie
	for _, line := range res.rec.Header().Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatalf("unparsable Set-Cookie %q: %v", line, err)
		}
		out = append(out, c)
	}
	return out
}

// setCookie returns the last Set-Cookie for name, or nil.
func (res *result) setCookie(t testing.TB, name string) *http.Cookie {
	var found *http.Cookie
	for _, c := range res.setCookies(t) {
		if c.Name == name {
			found = c
		}
	}
	return found
}

// newSession reports whether the response sets a (non-empty) session
// cookie.
func (res *result) newSession(t testing.TB) bool {
	for _, c := range res.setCookies(t) {
		if (c.Name == "__Host-logto" || c.Name == "logto") && c.Value != "" && c.MaxAge >= 0 {
			return true
		}
	}
	return false
}

// mustHandlerError checks the request failed with a caddyhttp.HandlerError
// of the given status, and never a 500.
func (res *result) mustHandlerError(t testing.TB, status int) {
	t.Helper()
	var he caddyhttp.HandlerError
	if !errors.As(res.err, &he) {
		t.Fatalf("want caddyhttp.HandlerError %d, got err=%v, response %d (Location %q)", status, res.err, res.rec.Code, res.rec.Header().Get("Location"))
	}
	if he.StatusCode != status {
		t.Fatalf("want status %d, got %d: %v", status, he.StatusCode, he.Err)
	}
	if res.next {
		t.Fatal("next handler ran on a failed request")
	}
}

// mustRedirectToAuth checks the response sends the browser to the fake's
// authorization endpoint and returns that URL.
func (hx *harness) mustRedirectToAuth(t testing.TB, res *result) *url.URL {
	t.Helper()
	if res.err != nil {
		t.Fatalf("want a redirect to sign in, got %v", res.err)
	}
	loc := res.location()
	if res.rec.Code != http.StatusFound || loc == nil || loc.Scheme+"://"+loc.Host+loc.Path != hx.idp.srv.URL+"/oidc/auth" {
		t.Fatalf("want 302 to %s/oidc/auth, got %d Location %q", hx.idp.srv.URL, res.rec.Code, res.rec.Header().Get("Location"))
	}
	if res.next {
		t.Fatal("next handler ran on a redirected request")
	}
	return loc
}

// reqOpt adjusts a request before it is served.
type reqOpt func(r *http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Add(k, v) } }

// navigation is what a browser sends for a top-level navigation.
func navigation() reqOpt {
	return func(r *http.Request) {
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		r.Header.Set("Sec-Fetch-Dest", "document")
		r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	}
}

// fetchAPI is what fetch() sends.
func fetchAPI() reqOpt {
	return func(r *http.Request) {
		r.Header.Set("Sec-Fetch-Mode", "cors")
		r.Header.Set("Accept", "application/json")
	}
}

// newRequest builds a request as Caddy's server would hand it to the
// handler: replacer and original request in the context.
func newRequest(method, target string, body io.Reader, opts ...reqOpt) (*http.Request, *caddy.Replacer, *httptest.ResponseRecorder) {
	if strings.HasPrefix(target, "/") {
		target = testSite + target
	}
	r := httptest.NewRequest(method, target, body)
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	r = caddyhttp.PrepareRequest(r, repl, w, nil)
	return r, repl, w
}

// serve sends one request through the handler with a recording next.
func (hx *harness) serve(method, target string, b *tbrowser, opts ...reqOpt) *result {
	return hx.serveBody(method, target, nil, b, opts...)
}

func (hx *harness) serveBody(method, target string, body io.Reader, b *tbrowser, opts ...reqOpt) *result {
	if b != nil {
		opts = append([]reqOpt{b.send}, opts...)
	}
	r, repl, w := newRequest(method, target, body, opts...)
	return hx.serveRequest(r, repl, w, b)
}

func (hx *harness) serveRequest(r *http.Request, repl *caddy.Replacer, w *httptest.ResponseRecorder, b *tbrowser) *result {
	res, p := hx.serveCatching(r, repl, w, b)
	if p != nil {
		hx.t.Fatalf("handler panicked on %s %s: %v", r.Method, r.URL, p)
	}
	if res.status() == http.StatusInternalServerError {
		hx.t.Errorf("%s %.200s: 500 (%v)", r.Method, r.URL, res.err)
	}
	return res
}

// serveCatching is serveRequest returning a panic instead of failing.
func (hx *harness) serveCatching(r *http.Request, repl *caddy.Replacer, w *httptest.ResponseRecorder, b *tbrowser) (res *result, panicked any) {
	res = &result{rec: w, ph: map[string]string{}, known: map[string]bool{}}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.next = true
		res.nextReq = r
		rr := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		for _, k := range testPlaceholders {
			_, res.known[k] = rr.Get(k)
			res.ph[k] = rr.ReplaceAll("{"+k+"}", "")
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	func() {
		defer func() { panicked = recover() }()
		res.err = hx.h.ServeHTTP(w, r, next)
	}()
	if panicked != nil {
		return res, panicked
	}
	for _, c := range res.setCookies(hx.t) {
		registerLogSecrets(c.Value)
	}
	if b != nil {
		b.absorb(hx.t, res)
	}
	_ = repl
	return res, nil
}

// ---- a browser's cookie jar ----

// tbrowser keeps the cookies a browser would for testSite.
type tbrowser struct {
	mu      sync.Mutex
	cookies map[string]string
	order   []string
	extra   string // other cookies of the site, sent too
}

func newBrowser() *tbrowser { return &tbrowser{cookies: map[string]string{}} }

func (b *tbrowser) send(r *http.Request) {
	if h := b.header(); h != "" {
		r.Header.Set("Cookie", h)
	}
}

func (b *tbrowser) header() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var parts []string
	if b.extra != "" {
		parts = append(parts, b.extra)
	}
	for _, n := range b.order {
		parts = append(parts, n+"="+b.cookies[n])
	}
	return strings.Join(parts, "; ")
}

func (b *tbrowser) absorb(t testing.TB, res *result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range res.setCookies(t) {
		if c.MaxAge < 0 || (c.Value == "" && c.MaxAge == 0 && strings.Contains(c.Raw, "Max-Age=0")) {
			b.del(c.Name)
			continue
		}
		if _, ok := b.cookies[c.Name]; !ok {
			b.order = append(b.order, c.Name)
		}
		b.cookies[c.Name] = c.Value
	}
}

func (b *tbrowser) del(name string) {
	delete(b.cookies, name)
	b.order = slices.DeleteFunc(b.order, func(n string) bool { return n == name })
}

func (b *tbrowser) get(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cookies[name]
}

func (b *tbrowser) set(name, value string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.cookies[name]; !ok {
		b.order = append(b.order, name)
	}
	b.cookies[name] = value
}

// names returns the cookie names with the prefix.
func (b *tbrowser) names(prefix string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, n := range b.order {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

func (b *tbrowser) clone() *tbrowser {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := &tbrowser{cookies: map[string]string{}, order: slices.Clone(b.order), extra: b.extra}
	for k, v := range b.cookies {
		c.cookies[k] = v
	}
	return c
}

const (
	sessionCookie = "__Host-logto"
	attemptPrefix = "__Host-logto-signin-"
)

// ---- the sign-in flow ----

// startSignIn navigates to target and returns the authorization URL the
// browser was sent to.
func (hx *harness) startSignIn(b *tbrowser, target string) *url.URL {
	hx.t.Helper()
	return hx.mustRedirectToAuth(hx.t, hx.serve(http.MethodGet, target, b, navigation()))
}

// callbackURL is what Logto redirects the browser to.
func (hx *harness) callbackURL(authURL *url.URL, code string) string {
	q := url.Values{"code": {code}, "state": {authURL.Query().Get("state")}, "iss": {hx.idp.issuer}}
	return "/logto/sign-in-callback?" + q.Encode()
}

// signIn runs the whole flow for sub from a navigation to target and
// returns the callback's result.
func (hx *harness) signIn(b *tbrowser, target, sub string) *result {
	hx.t.Helper()
	auth := hx.startSignIn(b, target)
	code := hx.idp.issueCode(auth, sub)
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
	if res.err != nil || res.rec.Code != http.StatusFound || b.get(sessionCookie) == "" {
		hx.t.Fatalf("sign-in did not complete: err=%v code=%d Location=%q refusals=%v",
			res.err, res.rec.Code, res.rec.Header().Get("Location"), hx.idp.tokenRefusals())
	}
	return res
}

// signedIn returns a browser signed in as user-1.
func (hx *harness) signedIn() *tbrowser {
	hx.t.Helper()
	b := newBrowser()
	hx.signIn(b, "/", "user-1")
	return b
}

// mustPass checks the request reached next as sub.
func mustPass(t testing.TB, res *result, sub string) {
	t.Helper()
	if res.err != nil || !res.next {
		t.Fatalf("want the request to pass as %q, got err=%v code=%d Location=%q", sub, res.err, res.rec.Code, res.rec.Header().Get("Location"))
	}
	if got := res.ph["http.auth.user.id"]; got != sub {
		t.Fatalf("{http.auth.user.id} = %q, want %q", got, sub)
	}
}

// mustBeSignedOut checks an XHR-style request gets 401 and a navigation is
// sent to sign in: the session is no longer accepted.
func (hx *harness) mustBeSignedOut(t testing.TB, b *tbrowser) {
	t.Helper()
	res := hx.serve(http.MethodGet, "/private", b.clone(), fetchAPI())
	res.mustHandlerError(t, http.StatusUnauthorized)
	hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/private", b.clone(), navigation()))
}

// ---- handler-level tests ----

// TestProvisionDefaults: defaults are the documented ones and Provision
// never contacts Logto.
func TestProvisionDefaults(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, nil)
	h := hx.h
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"cookie_name", h.CookieName, "logto"},
		{"path_prefix", h.PathPrefix, "/logto"},
		{"prompt", h.Prompt, "consent"},
		{"post_sign_out_redirect", h.PostSignOutRedirect, "/"},
		{"session_lifetime", time.Duration(h.SessionLifetime), 14 * 24 * time.Hour},
		{"sign_in_timeout", time.Duration(h.SignInTimeout), 10 * time.Minute},
		{"revocation_poll", time.Duration(h.RevocationPoll), 10 * time.Second},
		{"outage_grace", time.Duration(*h.OutageGrace), 5 * time.Minute},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := idp.discoveryHits.Load() + idp.jwksHits.Load(); n != 0 {
		t.Errorf("Provision contacted Logto %d times; startup must not block on it", n)
	}
}

// TestProvisionWithoutConfig: a handler provisions in a bare Caddy context
// (no loaded config), as unit tests and tools that embed it make.
func TestProvisionWithoutConfig(t *testing.T) {
	idp := newFakeIdP(t)
	h := &Handler{Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	var err error
	panicked := func() (p any) {
		defer func() { p = recover() }()
		err = h.Provision(ctx)
		return nil
	}()
	if panicked != nil {
		t.Fatalf("regression: Provision panics in a context without a config (ctx.Storage() on a nil config): %v", panicked)
	}
	if err != nil {
		t.Fatalf("Provision: %v", err)
	}
}

// TestCleanupReleasesClient: unloading a config lets go of its handlers'
// share of the client and of their application's needs, the way Caddy
// unloads one: cancelling the config's context runs Cleanup on the modules
// it loaded (what a module registers with OnCancel in Provision is never
// run). A reload provisions the new config first, so an application both
// configs have keeps its client.
func TestCleanupReleasesClient(t *testing.T) {
	idp := newFakeIdP(t)
	testCaddyContext(t) // loads the config the contexts below derive from
	raw := json.RawMessage(fmt.Sprintf(`{"endpoint":%q,"app_id":%q,"app_secret":%q}`, idp.srv.URL, idp.appID, idp.appSecret))
	load := func() (*Handler, context.CancelFunc) {
		t.Helper()
		ctx, cancel := caddy.NewContext(caddy.ActiveContext())
		mod, err := ctx.LoadModuleByID("http.handlers.logto", raw)
		if err != nil {
			t.Fatal(err)
		}
		return mod.(*Handler), cancel
	}
	old, unloadOld := load()
	cur, unloadCur := load()
	defer unloadCur()
	if old.client != cur.client {
		t.Fatal("one application, two clients")
	}
	key := cur.client.key()
	unloadOld()
	if n, _ := clients.References(key); n != 1 {
		t.Errorf("the client's references after the old config is unloaded: %d, want 1", n)
	}
	unloadCur()
	unloadCur() // Cleanup may run twice
	if n, ok := clients.References(key); ok || n != 0 {
		t.Errorf("the client is still held (%d) once no config has its application", n)
	}
	appsMu.Lock()
	_, kept := apps[idp.srv.URL+"\x00"+idp.appID]
	appsMu.Unlock()
	if kept {
		t.Error("the application's needs are kept once no config has it")
	}
}

// TestProvisionErrors: missing or malformed required options fail
// Provision with a message naming the option.
func TestProvisionErrors(t *testing.T) {
	idp := newFakeIdP(t)
	for _, c := range []struct {
		name string
		h    Handler
		want string
	}{
		{"no endpoint", Handler{AppID: "a", AppSecret: "s"}, "endpoint"},
		{"relative endpoint", Handler{Endpoint: "tenant.logto.app", AppID: "a", AppSecret: "s"}, "endpoint"},
		{"no app_id", Handler{Endpoint: idp.srv.URL, AppSecret: "s"}, "app_id"},
		{"no app_secret", Handler{Endpoint: idp.srv.URL, AppID: "a"}, "app_secret"},
		{"unset env secret", Handler{Endpoint: idp.srv.URL, AppID: "a", AppSecret: "{env.LOGTO_TEST_UNSET_VARIABLE}"}, "app_secret"},
		{"empty cookie secret", Handler{Endpoint: idp.srv.URL, AppID: "a", AppSecret: "s", CookieSecrets: []string{""}}, "cookie_secret"},
		{"unknown rule", Handler{Endpoint: idp.srv.URL, AppID: "a", AppSecret: "s", Require: []Rule{{Kind: "group", Values: []string{"x"}}}}, "kind"},
		{"scope without token", Handler{Endpoint: idp.srv.URL, AppID: "a", AppSecret: "s", Require: []Rule{{Kind: "scope", Values: []string{"read"}}}}, "token_resource"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := c.h
			err := h.Provision(testCaddyContext(t))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Provision error = %v, want one naming %q", err, c.want)
			}
		})
	}
}

// TestValidateErrors: option values that can never work are rejected.
func TestValidateErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		h    Handler
	}{
		{"prompt", Handler{Prompt: "always"}},
		{"post sign-out target", Handler{PostSignOutRedirect: "evil.example"}},
		{"base_url with path", Handler{BaseURL: "https://app.example.com/app"}},
		{"base_url without scheme", Handler{BaseURL: "app.example.com"}},
		{"negative duration", Handler{IdleTimeout: caddy.Duration(-time.Second)}},
		{"negative outage_grace", Handler{OutageGrace: new(caddy.Duration(-time.Second))}},
		{"root path prefix", Handler{PathPrefix: "/"}},
		{"extra param overriding PKCE", Handler{ExtraParams: map[string]string{"code_challenge_method": "plain"}}},
		{"extra param overriding redirect_uri", Handler{ExtraParams: map[string]string{"redirect_uri": "https://evil.example/cb"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.h.PathPrefix == "" {
				c.h.PathPrefix = "/logto"
			}
			if err := c.h.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
		})
	}
}

// TestFlowEndpointsWhateverThePrefix: the endpoints follow path_prefix, and
// a path that merely starts with the prefix is gated, not served.
func TestFlowEndpointsWhateverThePrefix(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.PathPrefix = "/auth/" })
	res := hx.serve(http.MethodGet, "/auth/sign-in", newBrowser())
	hx.mustRedirectToAuth(t, res)
	// The default prefix is now an ordinary, gated path.
	hx.serve(http.MethodGet, "/logto/sign-in", newBrowser(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	hx.serve(http.MethodGet, "/auth/sign-in-x", newBrowser(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	loc := hx.startSignIn(newBrowser(), "/")
	if got := loc.Query().Get("redirect_uri"); got != testSite+"/auth/sign-in-callback" {
		t.Errorf("redirect_uri = %q", got)
	}
}

// TestEndpointMethods: flow endpoints take the methods they document.
func TestEndpointMethods(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/logto/sign-in", http.StatusMethodNotAllowed},
		{http.MethodPut, "/logto/sign-in-callback", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/logto/user", http.StatusMethodNotAllowed},
		{http.MethodGet, "/logto/backchannel-logout", http.StatusMethodNotAllowed},
	} {
		res := hx.serve(c.method, c.path, newBrowser())
		res.mustHandlerError(t, c.want)
		if res.rec.Header().Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.path)
		}
	}
}

// ---- the gate ----

// TestGateRedirectsNavigation: an anonymous top-level navigation is sent to
// Logto with a complete authorization request and one attempt cookie.
func TestGateRedirectsNavigation(t *testing.T) {
	for _, c := range []struct {
		name   string
		method string
		opts   []reqOpt
	}{
		{"Sec-Fetch-Mode navigate", http.MethodGet, []reqOpt{navigation()}},
		{"Accept text/html without Sec-Fetch", http.MethodGet, []reqOpt{withHeader("Accept", "text/html,*/*;q=0.8")}},
		{"HEAD navigation", http.MethodHead, []reqOpt{navigation()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hx := newHarness(t, nil, func(h *Handler) {
				h.Scopes = []string{"email", "read:docs"}
				h.Resources = []string{"https://api.example.com", "https://api2.example.com"}
			})
			res := hx.serve(c.method, "/private/page?q=1", nil, c.opts...)
			auth := hx.mustRedirectToAuth(t, res)
			q := auth.Query()
			for k, want := range map[string]string{
				"client_id":             hx.idp.appID,
				"redirect_uri":          testSite + "/logto/sign-in-callback",
				"response_type":         "code",
				"code_challenge_method": "S256",
				"prompt":                "consent",
			} {
				if got := q.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			scopes := strings.Fields(q.Get("scope"))
			for _, s := range []string{"openid", "offline_access", "profile", "email", "read:docs"} {
				if !slices.Contains(scopes, s) {
					t.Errorf("scope %q lacks %s", q.Get("scope"), s)
				}
			}
			if got := q["resource"]; !slices.Equal(got, []string{"https://api.example.com", "https://api2.example.com"}) {
				t.Errorf("resource = %q", got)
			}
			state, nonce := q.Get("state"), q.Get("nonce")
			if len(state) < 32 || len(nonce) < 32 || state == nonce {
				t.Errorf("state %q and nonce %q must be long and distinct", state, nonce)
			}
			if len(q.Get("code_challenge")) != 43 {
				t.Errorf("code_challenge %q is not a S256 challenge", q.Get("code_challenge"))
			}
			var attempts []*http.Cookie
			for _, ck := range res.setCookies(t) {
				if strings.HasPrefix(ck.Name, attemptPrefix) {
					attempts = append(attempts, ck)
				}
			}
			if len(attempts) != 1 {
				t.Fatalf("want one attempt cookie, got %v", res.rec.Header().Values("Set-Cookie"))
			}
			if a := attempts[0]; !a.HttpOnly || !a.Secure || a.SameSite != http.SameSiteLaxMode || a.Path != "/" || a.MaxAge <= 0 {
				t.Errorf("attempt cookie %q", a.Raw)
			}
			if strings.Contains(attempts[0].Value, state) || strings.Contains(res.rec.Header().Values("Set-Cookie")[0], nonce) {
				t.Error("attempt cookie carries the state or nonce in clear")
			}
			if res.setCookie(t, sessionCookie) != nil {
				t.Error("the redirect touched the session cookie")
			}
			if cc := res.rec.Header().Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
		})
	}
}

// TestGateAnswers401ToNonNavigation: a redirect to a sign-in page is
// useless to fetch, XHR, WebSocket and API clients (and a POST would lose
// its body), so they get 401 with WWW-Authenticate and no Location.
func TestGateAnswers401ToNonNavigation(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, c := range []struct {
		name   string
		method string
		opts   []reqOpt
	}{
		{"fetch", http.MethodGet, []reqOpt{fetchAPI()}},
		{"fetch accepting HTML", http.MethodGet, []reqOpt{withHeader("Sec-Fetch-Mode", "cors"), withHeader("Accept", "text/html")}},
		{"XHR", http.MethodGet, []reqOpt{withHeader("X-Requested-With", "XMLHttpRequest"), withHeader("Accept", "text/html, */*")}},
		{"WebSocket upgrade", http.MethodGet, []reqOpt{withHeader("Connection", "Upgrade"), withHeader("Upgrade", "websocket"), withHeader("Accept", "text/html")}},
		{"WebSocket upgrade with Sec-Fetch", http.MethodGet, []reqOpt{withHeader("Upgrade", "websocket"), withHeader("Sec-Fetch-Mode", "websocket")}},
		{"form POST", http.MethodPost, []reqOpt{navigation(), withHeader("Content-Type", "application/x-www-form-urlencoded")}},
		{"API client", http.MethodGet, []reqOpt{withHeader("Accept", "*/*")}},
		{"image", http.MethodGet, []reqOpt{withHeader("Sec-Fetch-Mode", "no-cors"), withHeader("Accept", "image/avif,image/webp")}},
		{"DELETE", http.MethodDelete, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := hx.serve(c.method, "/api/items", nil, c.opts...)
			res.mustHandlerError(t, http.StatusUnauthorized)
			if res.rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if loc := res.rec.Header().Get("Location"); loc != "" {
				t.Errorf("401 with Location %q", loc)
			}
			if n := len(res.rec.Header().Values("Set-Cookie")); n != 0 {
				t.Errorf("401 set %d cookies", n)
			}
		})
	}
	if n := hx.idp.discoveryHits.Load(); n != 0 {
		t.Errorf("401s contacted Logto (%d discovery fetches)", n)
	}
}

// TestGatePassMode: with pass, anonymous requests go through with empty
// placeholders, and identity headers a client sent are still removed: an
// anonymous client must not pose as a user to the app behind.
func TestGatePassMode(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) {
		h.Pass = true
		h.Headers = map[string]string{"X-Auth-User": "{http.auth.user.id}"}
	})
	for _, opts := range [][]reqOpt{{navigation()}, {fetchAPI()}} {
		opts = append(opts, withHeader("X-Auth-User", "admin"), withHeader("Logto-ID-Token", "forged"))
		res := hx.serve(http.MethodGet, "/", nil, opts...)
		if res.err != nil || !res.next {
			t.Fatalf("pass mode: err=%v next=%v", res.err, res.next)
		}
		for _, k := range []string{"http.auth.user.id", "http.auth.user.email", "http.auth.logto.access_token"} {
			if res.ph[k] != "" {
				t.Errorf("{%s} = %q for an anonymous request", k, res.ph[k])
			}
			// Known and empty, not unknown: respond keeps unknown
			// placeholders and would print "{http.auth.user.id}".
			if !res.known[k] {
				t.Errorf("{%s} is unknown for an anonymous request let through", k)
			}
		}
		if v := res.nextReq.Header.Values("X-Auth-User"); len(v) != 0 {
			t.Errorf("client's X-Auth-User forwarded: %q", v)
		}
		if v := res.nextReq.Header.Values("Logto-ID-Token"); len(v) != 0 {
			t.Errorf("client's Logto-ID-Token forwarded: %q", v)
		}
	}
	// A signed-in user in pass mode gets the placeholders.
	b := newBrowser()
	hx.signIn(b, "/logto/sign-in", "user-1")
	mustPass(t, hx.serve(http.MethodGet, "/", b), "user-1")
}

// TestGateStripsModuleCookies: the session and attempt cookies (and their
// chunks) are never forwarded upstream, where a log or a compromised app
// would get the user's refresh token; the site's other cookies are.
func TestGateStripsModuleCookies(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	b.set("__Host-logto-signin-AAAAAAAAAAAA", "x")
	b.set("__Host-logto.1", "chunk")
	b.set("logto", "plain")
	b.extra = "a=1; session=app-session"
	res := hx.serve(http.MethodGet, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	got := strings.Join(res.nextReq.Header.Values("Cookie"), "; ")
	if got != "a=1; session=app-session" {
		t.Errorf("cookies upstream = %q", got)
	}
}

// TestGateReturnStaysOnSite: the URL a navigation asked for becomes the
// landing page after sign-in. A request path such as //evil.example/x
// (which Go's server and Caddy pass through as the path) must not become a
// scheme-relative Location that sends the freshly signed-in user to
// another site (open redirect straight out of a genuine sign-in: phishing).
func TestGateReturnStaysOnSite(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, raw := range []string{"//evil.example/x", "/\\evil.example/x", "//evil.example/%2e%2e/x", "/%2F/evil.example"} {
		t.Run(raw, func(t *testing.T) {
			parsed, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + raw + " HTTP/1.1\r\nHost: app.example.com\r\n\r\n")))
			if err != nil {
				t.Skipf("Go's server refuses %q: %v", raw, err)
			}
			b := newBrowser()
			setPath := func(r *http.Request) {
				r.URL.Path, r.URL.RawPath, r.RequestURI = parsed.URL.Path, parsed.URL.RawPath, parsed.RequestURI
			}
			r, repl, w := newRequest(http.MethodGet, "/", nil, b.send, navigation(), setPath)
			auth := hx.mustRedirectToAuth(t, hx.serveRequest(r, repl, w, b))
			code := hx.idp.issueCode(auth, "user-1")
			loc := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b).rec.Header().Get("Location")
			u, err := url.Parse(loc)
			if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") {
				t.Fatalf("regression: a navigation to %q lands, after sign-in, on Location %q (another site): the gate's return URL is not passed through safeReturn", raw, loc)
			}
		})
	}
}

// TestGateLongURL: a navigation to a very long URL (a search with a huge
// query; Go's server takes a megabyte of request line) still goes to sign
// in, never a 500: the return URL must be bounded, since it rides in the
// attempt cookie.
func TestGateLongURL(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, n := range []int{1000, 40000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := newBrowser()
			target := "/search?q=" + strings.Repeat("a", n)
			r, repl, w := newRequest(http.MethodGet, target, nil, b.send, navigation())
			res, p := hx.serveCatching(r, repl, w, b)
			if p != nil {
				t.Fatalf("panic: %v", p)
			}
			if res.status() == http.StatusInternalServerError {
				t.Fatalf("regression: an anonymous navigation to a %d-byte URL answers 500 (%v): the return URL is put in the attempt cookie unbounded", len(target), res.err)
			}
			auth := hx.mustRedirectToAuth(t, res)
			if len(b.header()) > 8192 {
				t.Errorf("the attempt cookie makes a %d-byte Cookie header", len(b.header()))
			}
			code := hx.idp.issueCode(auth, "user-1")
			loc := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b).rec.Header().Get("Location")
			if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") {
				t.Errorf("landed on %.100q", loc)
			}
		})
	}
}

// TestValidateRejectsBadResources: a JSON config (no Caddyfile parse) with
// a resource indicator Logto would refuse is rejected at load, naming the
// option and the value. Otherwise every sign-in of the application, which
// asks for the resources of all its blocks, would fail at Logto with
// invalid_target, long after the config loaded.
func TestValidateRejectsBadResources(t *testing.T) {
	for _, c := range []struct {
		name     string
		h        Handler
		opt, val string
	}{
		{"resource without scheme", Handler{Resources: []string{"https://api.example.com", "api.example.com"}}, "resources", "api.example.com"},
		{"resource placeholder", Handler{Resources: []string{"{env.API}"}}, "resources", "{env.API}"},
		{"resource with fragment", Handler{Resources: []string{"https://api.example.com/#x"}}, "resources", "https://api.example.com/#x"},
		{"resource organization", Handler{Resources: []string{"organization"}}, "resources", "organization"},
		{"token_resource not a URI", Handler{TokenResource: "api"}, "token_resource", "api"},
		{"token_resource organization", Handler{TokenResource: "organization"}, "token_resource", "organization"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := c.h
			h.CookieName, h.PathPrefix = "logto", "/logto"
			err := h.Validate()
			if err == nil || !strings.Contains(err.Error(), c.opt) || !strings.Contains(err.Error(), `"`+c.val+`"`) {
				t.Fatalf("Validate error = %v, want one naming %s and %q", err, c.opt, c.val)
			}
		})
	}
	ok := Handler{CookieName: "logto", PathPrefix: "/logto",
		Resources:     []string{"https://api.example.com", "urn:logto:resource:organizations"},
		TokenResource: "https://billing.example.com/v1"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate refused good resources: %v", err)
	}
}
