package e2e

// Helpers of the token, authorization, organization, logout and timeout
// tests: Caddy instances with their own Caddyfile and shared storage, an
// upstream that echoes what it received, a recording proxy in front of the
// IdP's token endpoint, visitors for *.localhost hosts, and forged logout
// tokens. They build on the harness (harness_test.go) and never change it.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// i4APIResource is the dev IdP's API resource (read:docs write:docs
// delete:docs).
const i4APIResource = "https://api.example.com"

// --- the IdP's counters and directory ------------------------------------------

// i4Counters is every counter of the IdP's /__dev/stats.
type i4Counters struct {
	AuthorizationCodeGrants      int            `json:"authorization_code_grants"`
	RefreshTokenGrants           int            `json:"refresh_token_grants"`
	RefreshTokenGrantsByResource map[string]int `json:"refresh_token_grants_by_resource"`
	OrganizationTokenGrants      int            `json:"organization_token_grants"`
	InvalidGrants                int            `json:"invalid_grants"`
	Revocations                  int            `json:"revocations"`
	EndSessions                  int            `json:"end_sessions"`
	BackchannelLogoutsSent       int            `json:"backchannel_logouts_sent"`
	UserinfoRequests             int            `json:"userinfo_requests"`
}

// i4Stats reads the IdP's counters.
func (d *devIdP) i4Stats(t testing.TB) i4Counters {
	t.Helper()
	var s i4Counters
	d.admin(t, http.MethodGet, "/__dev/stats", nil, &s)
	return s
}

// i4OrgID is the id of a demo organization by its slug (acme, globex,
// org-01 ... org-50).
func (d *devIdP) i4OrgID(t testing.TB, slug string) string {
	t.Helper()
	var orgs []struct {
		ID   string `json:"id"`
		Slug string `json:"slug"`
	}
	d.admin(t, http.MethodGet, "/__dev/organizations", nil, &orgs)
	for _, o := range orgs {
		if o.Slug == slug {
			return o.ID
		}
	}
	t.Fatalf("devidp has no organization %q", slug)
	return ""
}

// i4App is a "Traditional web" application registered at the IdP.
type i4App struct{ id, secret string }

// i4RegisterApp registers a new application, or replaces one with the same
// id (the IdP's /__dev/clients overwrites).
func i4RegisterApp(t testing.TB, idp *devIdP, a i4App, redirects, postLogout []string, backchannel string) i4App {
	t.Helper()
	if a.id == "" {
		a = i4App{id: "e2e4-" + randomHex(6), secret: randomHex(24)}
	}
	body := map[string]any{
		"client_id":                 a.id,
		"client_secret":             a.secret,
		"redirect_uris":             redirects,
		"post_logout_redirect_uris": postLogout,
	}
	if backchannel != "" {
		body["backchannel_logout_uri"] = backchannel
	}
	idp.admin(t, http.MethodPost, "/__dev/clients", body, nil)
	return a
}

// --- Caddy instances -------------------------------------------------------------

// i4Caddy is one Caddy process running a Caddyfile given whole (global
// options included), for tests that need several instances, their own
// global options or site addresses other than localhost.
type i4Caddy struct {
	t    *testing.T
	name string
	port int
	URL  string // http://localhost:<port>
	p    *proc
}

// i4Globals keeps instances apart (no admin endpoint, nothing autosaved)
// and puts Caddy's storage, where the module keeps its logout list, in dir.
func i4Globals(storageDir, extra string) string {
	return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tstorage file_system %s\n%s}\n\n", storageDir, extra)
}

// i4RunCaddy starts Caddy on port with caddyfile (global options included)
// and the environment vars (LOGTO_* and whatever the Caddyfile reads), and
// stops it when the test ends.
func i4RunCaddy(t *testing.T, name string, port int, caddyfile string, vars map[string]string) *i4Caddy {
	t.Helper()
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	over := map[string]string{
		"HOME":            home,
		"XDG_DATA_HOME":   filepath.Join(home, "data"),
		"XDG_CONFIG_HOME": filepath.Join(home, "config"),
	}
	for k, v := range vars {
		over[k] = v
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startProc(dir, environ(over), env.caddy, "run", "--config", file, "--adapter", "caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	in := &i4Caddy{t: t, name: name, port: port, URL: fmt.Sprintf("http://localhost:%d", port), p: p}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- caddy %s output ---\n%s", name, tail(p.out.String(), 6000))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return in
		}
		if p.exited() || time.Now().After(deadline) {
			p.stop()
			t.Fatalf("caddy %s did not come up on port %d\n%s", name, port, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// i4Vars is the environment an example Caddyfile reads.
func i4Vars(idp *devIdP, a i4App, more ...string) map[string]string {
	m := map[string]string{
		"LOGTO_ENDPOINT":   idp.base,
		"LOGTO_APP_ID":     a.id,
		"LOGTO_APP_SECRET": a.secret,
	}
	for i := 0; i+1 < len(more); i += 2 {
		m[more[i]] = more[i+1]
	}
	return m
}

// i4Example returns an example's Caddyfile.
func i4Example(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.root, "examples", name, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// --- the upstream ------------------------------------------------------------------

// i4Echo is what the echo upstream saw of one request.
type i4Echo struct {
	Host   string      `json:"host"`
	Path   string      `json:"path"`
	Method string      `json:"method"`
	Header http.Header `json:"header"`
}

// bearer is the token in the Authorization header the upstream received.
func (e i4Echo) bearer() string {
	tok, _ := strings.CutPrefix(e.Header.Get("Authorization"), "Bearer ")
	return tok
}

// i4Upstream is an API behind Caddy that answers with the request it got, so
// a test sees exactly what reverse_proxy forwarded.
type i4Upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []i4Echo
}

func i4NewUpstream(t *testing.T) *i4Upstream {
	u := &i4Upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := i4Echo{Host: r.Host, Path: r.URL.Path, Method: r.Method, Header: r.Header.Clone()}
		u.mu.Lock()
		u.seen = append(u.seen, e)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// addr is host:port for reverse_proxy.
func (u *i4Upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *i4Upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// i4DecodeEcho reads the upstream's answer relayed by Caddy.
func i4DecodeEcho(t testing.TB, r *response) i4Echo {
	t.Helper()
	var e i4Echo
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s, want 200 from the upstream\n%s", r.Request.Method, r.Request.URL, r.Status, tail(r.body, 500))
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("%s: upstream answer is not JSON: %v\n%s", r.Request.URL, err, tail(r.body, 500))
	}
	return e
}

// --- the IdP behind a recording proxy ------------------------------------------------

// i4TokenCall is one request to the IdP's token endpoint, as the proxy saw it.
type i4TokenCall struct {
	form   url.Values
	status int
}

// i4TokenLog records every token request that passes the proxy.
type i4TokenLog struct {
	mu    sync.Mutex
	calls []i4TokenCall
}

func (l *i4TokenLog) all() []i4TokenCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// matching counts the calls whose form has every given key=value.
func (l *i4TokenLog) matching(kv ...string) int {
	n := 0
	for _, c := range l.all() {
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if c.form.Get(kv[i]) != kv[i+1] {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// mentions reports whether any token request named the value in any
// parameter (an organization id, say).
func (l *i4TokenLog) mentions(value string) bool {
	for _, c := range l.all() {
		for _, vs := range c.form {
			if slices.Contains(vs, value) {
				return true
			}
		}
	}
	return false
}

type i4StatusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *i4StatusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// i4RecordedIdP starts a dedicated dev IdP whose public base is a proxy
// in front of it, so every request Caddy makes to the token endpoint is
// recorded, failed ones included (the IdP's own counters only count grants
// it issued).
func i4RecordedIdP(t *testing.T, extra map[string]string) (*devIdP, *i4TokenLog) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	var target atomic.Pointer[url.URL]
	log := &i4TokenLog{}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target.Load())
		pr.Out.Host = pr.In.Host
	}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if target.Load() == nil {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/oidc/token" {
			proxy.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		rec := &i4StatusRecorder{ResponseWriter: w, status: http.StatusOK}
		proxy.ServeHTTP(rec, r)
		log.mu.Lock()
		log.calls = append(log.calls, i4TokenCall{form: form, status: rec.status})
		log.mu.Unlock()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	over := map[string]string{"DEVIDP_BASE": base}
	for k, v := range extra {
		over[k] = v
	}
	idp := startTestIdP(t, over)
	u, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", idp.port))
	target.Store(u)
	return idp, log
}

// --- visitors ----------------------------------------------------------------------

// i4DialLoopback resolves localhost and every *.localhost name to 127.0.0.1,
// as browsers do (RFC 6761), whatever the system resolver thinks.
func i4DialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// i4Visitor is a visitor for one *.localhost host name. The harness's
// jar keeps cookies per browser, not per host, so a test uses one visitor
// per host to keep host-only cookies apart, as a browser would.
func i4Visitor(t *testing.T) *visitor {
	v := newVisitor(t)
	v.hc.Transport = &http.Transport{DialContext: i4DialLoopback, MaxIdleConnsPerHost: 64}
	return v
}

// i4SignIn navigates to siteURL+path, expects to be sent to the IdP, signs
// in there as username and follows the callback; it returns the callback's
// answer (whose Set-Cookie lines carry the new session).
func i4SignIn(t *testing.T, v *visitor, siteURL, idpBase, path, username string) *response {
	t.Helper()
	first := v.navigate(siteURL + path)
	if !first.isRedirect() || !strings.HasPrefix(first.location(), idpBase+"/oidc/auth") {
		t.Fatalf("GET %s%s: want a redirect to the IdP, got %s Location=%q\n%s", siteURL, path, first.Status, first.location(), tail(first.body, 500))
	}
	callback := v.loginAtIdP(first.location(), siteURL+"/logto/sign-in-callback", username, username)
	r := v.navigate(callback)
	if !r.isRedirect() {
		t.Fatalf("sign-in callback for %s at %s: %s\n%s", username, siteURL, r.Status, tail(r.body, 500))
	}
	if _, ok := v.jar.get(sessionCookie); !ok {
		t.Fatalf("no %s cookie after %s signed in at %s; cookies: %v", sessionCookie, username, siteURL, v.jar.names())
	}
	return r
}

// i4IsSessionCookie tells the session cookie and its chunks
// (__Host-logto.1, ...) from the other cookies.
func i4IsSessionCookie(name string) bool {
	rest, ok := strings.CutPrefix(name, sessionCookie)
	return ok && (rest == "" || len(rest) == 2 && rest[0] == '.' && rest[1] >= '1' && rest[1] <= '9')
}

// i4SessionCookies is a snapshot of the session cookie and its chunks as a
// Cookie header value.
func i4SessionCookies(t testing.TB, v *visitor) string {
	t.Helper()
	v.jar.mu.Lock()
	defer v.jar.mu.Unlock()
	var parts []string
	for k, c := range v.jar.cookies {
		if i4IsSessionCookie(k[0]) {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	if len(parts) == 0 {
		t.Fatalf("the visitor holds no session cookie")
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// i4WithCookie sends a request with exactly the given Cookie header (no
// jar), as a client replaying a copied or stale cookie does.
func i4WithCookie(t *testing.T, method, u, cookie string, hdr ...string) *response {
	t.Helper()
	v := i4Visitor(t)
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Sec-Fetch-Mode", "cors")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return v.do(req)
}

// i4SessionSetCookies are the Set-Cookie lines of an answer that set the
// session cookie or its chunks (not those that expire them).
func i4SessionSetCookies(r *response) []string {
	var out []string
	for _, line := range r.Header.Values("Set-Cookie") {
		name, _, _ := strings.Cut(line, "=")
		if i4IsSessionCookie(name) && !strings.Contains(strings.ToLower(line), "max-age=0") {
			out = append(out, line)
		}
	}
	return out
}

// i4LongestSetCookie is the longest Set-Cookie line of an answer.
func i4LongestSetCookie(r *response) int {
	n := 0
	for _, line := range r.Header.Values("Set-Cookie") {
		n = max(n, len(line))
	}
	return n
}

// --- logout tokens -----------------------------------------------------------------

// i4LogoutCatcher is a back-channel logout URI of our own: it keeps every
// logout token the IdP sends and, when forward is set, passes it on to a
// Caddy (so genuine tokens for that Caddy's application can be replayed
// later) and answers with Caddy's status.
type i4LogoutCatcher struct {
	srv     *httptest.Server
	forward string
	mu      sync.Mutex
	tokens  []string
	status  []int
}

func i4NewLogoutCatcher(t *testing.T, forward string) *i4LogoutCatcher {
	c := &i4LogoutCatcher{forward: forward}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		tok := r.PostForm.Get("logout_token")
		status := http.StatusOK
		if c.forward != "" {
			resp, err := http.PostForm(c.forward, url.Values{"logout_token": {tok}})
			if err != nil {
				status = http.StatusBadGateway
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
		}
		c.mu.Lock()
		c.tokens = append(c.tokens, tok)
		c.status = append(c.status, status)
		c.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *i4LogoutCatcher) received() ([]string, []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.tokens), slices.Clone(c.status)
}

// i4ForgedLogoutToken is a logout token with every claim right, signed by a
// key of our own (ES384, an unknown kid).
func i4ForgedLogoutToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "ES384", "typ": "logout+jwt", "kid": "forged-" + randomHex(4)}) + "." + enc(claims)
	sum := sha512.Sum384([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 96)
	r.FillBytes(sig[:48])
	s.FillBytes(sig[48:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// i4LogoutClaims are the claims of a logout token for sub.
func i4LogoutClaims(issuer, aud, sub string) map[string]any {
	return map[string]any{
		"iss":    issuer,
		"aud":    aud,
		"sub":    sub,
		"iat":    time.Now().Unix(),
		"exp":    time.Now().Add(2 * time.Minute).Unix(),
		"jti":    randomHex(12),
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
}

// i4PostLogoutToken sends a logout token to a Caddy's back-channel endpoint.
func i4PostLogoutToken(t testing.TB, siteURL, token string) int {
	t.Helper()
	resp, err := http.PostForm(siteURL+"/logto/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatalf("POST %s/logto/backchannel-logout: %v", siteURL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// i4Eventually polls cond every 100 ms until it holds or the time is up, and
// returns how long it took.
func i4Eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
