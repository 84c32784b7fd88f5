package e2e

// The servers the tests run besides the harness's own: Caddy instances with
// their own Caddyfile and shared storage, applications registered at the dev
// IdP, an upstream that echoes what it received, and a recording proxy in
// front of the IdP's token endpoint. Clients for them are in clients_test.go.
// They build on the harness (harness_test.go) and never change it.

import (
	"bytes"
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

// --- the IdP's counters and directory ------------------------------------------

// idpCounters is every counter of the IdP's /__dev/stats.
type idpCounters struct {
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

// tokenStats reads the IdP's counters.
func (d *devIdP) tokenStats(t testing.TB) idpCounters {
	t.Helper()
	var s idpCounters
	d.admin(t, http.MethodGet, "/__dev/stats", nil, &s)
	return s
}

// orgID is the id of a demo organization by its slug (acme, globex,
// org-01 ... org-50).
func (d *devIdP) orgID(t testing.TB, slug string) string {
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

// logtoApp is a "Traditional web" application registered at the IdP.
type logtoApp struct{ id, secret string }

// registerApp registers a new application, or replaces one with the same
// id (the IdP's /__dev/clients overwrites).
func registerApp(t testing.TB, idp *devIdP, a logtoApp, redirects, postLogout []string, backchannel string) logtoApp {
	t.Helper()
	if a.id == "" {
		a = logtoApp{id: "e2e4-" + randomHex(6), secret: randomHex(24)}
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

// localSite picks a free port for a site on localhost and registers an
// application whose redirect URI is the site's callback and whose post
// sign-out redirect URI is its root.
func localSite(t testing.TB, idp *devIdP) (port int, siteURL string, a logtoApp) {
	t.Helper()
	port = freePort(t)
	siteURL = fmt.Sprintf("http://localhost:%d", port)
	a = registerApp(t, idp, logtoApp{}, []string{siteURL + "/logto/sign-in-callback"}, []string{siteURL + "/"}, "")
	return port, siteURL, a
}

// --- Caddy instances -------------------------------------------------------------

// caddyInstance is one Caddy process running a Caddyfile given whole (global
// options included), for tests that need several instances, their own
// global options or site addresses other than localhost.
type caddyInstance struct {
	t    *testing.T
	name string
	port int
	URL  string // http://localhost:<port>
	p    *proc
}

// caddyGlobals keeps instances apart (no admin endpoint, nothing autosaved)
// and puts Caddy's storage, where the module keeps its logout list, in dir.
func caddyGlobals(storageDir, extra string) string {
	return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n\tstorage file_system %s\n%s}\n\n", storageDir, extra)
}

// runCaddy starts Caddy on port with caddyfile (global options included)
// and the environment vars (LOGTO_* and whatever the Caddyfile reads), and
// stops it when the test ends.
func runCaddy(t *testing.T, name string, port int, caddyfile string, vars map[string]string) *caddyInstance {
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
	in := &caddyInstance{t: t, name: name, port: port, URL: fmt.Sprintf("http://localhost:%d", port), p: p}
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

// caddyVars is the environment an example Caddyfile reads.
func caddyVars(idp *devIdP, a logtoApp, more ...string) map[string]string {
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

// exampleCaddyfile returns an example's Caddyfile.
func exampleCaddyfile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.root, "examples", name, "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// --- the upstream ------------------------------------------------------------------

// echoed is what the echo upstream saw of one request.
type echoed struct {
	Host   string      `json:"host"`
	Path   string      `json:"path"`
	Method string      `json:"method"`
	Header http.Header `json:"header"`
}

// bearer is the token in the Authorization header the upstream received.
func (e echoed) bearer() string {
	tok, _ := strings.CutPrefix(e.Header.Get("Authorization"), "Bearer ")
	return tok
}

// recordingUpstream is an API behind Caddy that answers with the request it got, so
// a test sees exactly what reverse_proxy forwarded.
type recordingUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []echoed
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := echoed{Host: r.Host, Path: r.URL.Path, Method: r.Method, Header: r.Header.Clone()}
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
func (u *recordingUpstream) addr() string { return strings.TrimPrefix(u.srv.URL, "http://") }

func (u *recordingUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// decodeEcho reads the upstream's answer relayed by Caddy.
func decodeEcho(t testing.TB, r *response) echoed {
	t.Helper()
	var e echoed
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s, want 200 from the upstream\n%s", r.Request.Method, r.Request.URL, r.Status, tail(r.body, 500))
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("%s: upstream answer is not JSON: %v\n%s", r.Request.URL, err, tail(r.body, 500))
	}
	return e
}

// --- the IdP behind a recording proxy ------------------------------------------------

// tokenCall is one request to the IdP's token endpoint, as the proxy saw it.
type tokenCall struct {
	form   url.Values
	status int
}

// tokenLog records every token request that passes the proxy.
type tokenLog struct {
	mu    sync.Mutex
	calls []tokenCall
}

func (l *tokenLog) all() []tokenCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// matching counts the calls whose form has every given key=value.
func (l *tokenLog) matching(kv ...string) int {
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
func (l *tokenLog) mentions(value string) bool {
	for _, c := range l.all() {
		for _, vs := range c.form {
			if slices.Contains(vs, value) {
				return true
			}
		}
	}
	return false
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// recordedIdP starts a dedicated dev IdP whose public base is a proxy
// in front of it, so every request Caddy makes to the token endpoint is
// recorded, failed ones included (the IdP's own counters only count grants
// it issued).
func recordedIdP(t *testing.T, extra map[string]string) (*devIdP, *tokenLog) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	var target atomic.Pointer[url.URL]
	log := &tokenLog{}
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
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		proxy.ServeHTTP(rec, r)
		log.mu.Lock()
		log.calls = append(log.calls, tokenCall{form: form, status: rec.status})
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
