package logto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
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
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
)

// runCheck runs the command's function with the given flags and returns
// its exit status and what it printed.
func runCheck(t *testing.T, flags ...string) (int, string, error) {
	t.Helper()
	cmd := &cobra.Command{}
	checkFlags(cmd)
	if err := cmd.Flags().Parse(flags); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := cmdCheck(caddycmd.Flags{FlagSet: cmd.Flags()}, &out)
	return code, out.String(), err
}

// TestCheckCommandExitStatus: 0 when every check passed, 1 when one
// failed, 2 when the config cannot be loaded; the config is found as
// `caddy run` finds it (./Caddyfile by default, --config, --adapter).
func TestCheckCommandExitStatus(t *testing.T) {
	t.Setenv("CHECK_SHOP_SECRET", "shop-secret-0123456789")
	l := newProbeLogto(t)
	registerTwoSites(l)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.caddyfile")
	if err := os.WriteFile(good, []byte(twoSites(l.srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	goodJSON := filepath.Join(dir, "good.json")
	if err := os.WriteFile(goodJSON, adaptCaddyfile(t, twoSites(l.srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken.caddyfile")
	if err := os.WriteFile(broken, []byte("example.com {\n\tlogto {\n\t\tendpont x\n\t}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, err := runCheck(t, "--config", good)
	if code != 0 || err != nil || !strings.Contains(out, "All checks passed") {
		t.Errorf("a good config: status %d, err %v, want 0:\n%s", code, err, out)
	}
	code, out, err = runCheck(t, "--config", goodJSON, "--json")
	var rep checkReport
	if code != 0 || err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Passed == 0 {
		t.Errorf("the same as JSON: status %d, err %v:\n%s", code, err, out)
	}

	l.clients["admin"].redirects = nil
	code, out, _ = runCheck(t, "--config", good)
	if code != 1 || !strings.Contains(out, "✗ redirect URI http://admin.localhost:8082/logto/sign-in-callback is not registered") {
		t.Errorf("an unregistered callback: status %d, want 1:\n%s", code, out)
	}

	code, _, err = runCheck(t, "--config", broken)
	if code != 2 || err == nil || !strings.Contains(err.Error(), `unknown option "endpont"`) {
		t.Errorf("a Caddyfile that does not adapt: status %d, err %v, want 2 and the adapter's message", code, err)
	}
	code, out, err = runCheck(t, "--config", filepath.Join(dir, "missing"), "--json")
	if code != 2 || err == nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Error == "" {
		t.Errorf("a missing file with --json: status %d, err %v, want 2 and the error as JSON:\n%s", code, err, out)
	}

	t.Chdir(dir)
	code, _, err = runCheck(t)
	if code != 2 || err == nil || !strings.Contains(err.Error(), "no Caddyfile") {
		t.Errorf("no config and no ./Caddyfile: status %d, err %v, want 2", code, err)
	}
	if err := os.Rename(good, filepath.Join(dir, "Caddyfile")); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCheck(t)
	if code != 1 || !strings.Contains(out, "Checking the logto handlers of Caddyfile") {
		t.Errorf("./Caddyfile by default: status %d, want 1 (the callback is still unregistered):\n%s", code, out)
	}
}

// adaptCaddyfile adapts a Caddyfile as `caddy run` would.
func adaptCaddyfile(t *testing.T, body string) []byte {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, body)
	}
	return out
}

// planConfig finds and plans every logto handler of a JSON config.
func planConfig(t *testing.T, config []byte) []*appPlan {
	t.Helper()
	app, placed, err := findBlocks(config)
	if err != nil {
		t.Fatalf("findBlocks: %v", err)
	}
	apps, cleanup, err := planApps(app, placed)
	t.Cleanup(cleanup)
	if err != nil {
		t.Fatalf("planApps: %v", err)
	}
	return apps
}

// wantApp is what one application of a config sends.
type wantApp struct {
	appID       string
	redirects   []string
	postSignOut []string
	unknown     []string // hosts whose URIs cannot be known from the config
	resources   []string // indicator, with "(bearer)" when only accepted in tokens
}

const checkBlock = `
		endpoint https://tenant.logto.app
		app_id {env.CHECK_APP_ID}
		app_secret {env.CHECK_APP_SECRET}`

// TestCheckPlansWhatTheConfigSends: for Caddyfiles of every shape a site
// takes, the redirect URIs, post sign-out URIs and resources the checker
// asks Logto about are the ones the sites will send: the scheme and port
// as Caddy serves the address, the flow path prefix, handlers nested in
// handle/route, several sites and applications, and the sites whose
// address a browser's request decides (wildcards, no host) set apart.
func TestCheckPlansWhatTheConfigSends(t *testing.T) {
	t.Setenv("CHECK_APP_ID", "app-one")
	t.Setenv("CHECK_APP_SECRET", "secret-one-0123456789")
	t.Setenv("CHECK_HOST", "env.example.com")
	tests := []struct {
		name      string
		caddyfile string
		want      []wantApp
	}{
		{
			name:      "a domain is https on 443",
			caddyfile: "example.com {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"https://example.com/logto/sign-in-callback"},
				postSignOut: []string{"https://example.com/"}}},
		},
		{
			name:      "http:// on a port is plain HTTP with the port",
			caddyfile: "http://localhost:8080 {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"http://localhost:8080/logto/sign-in-callback"},
				postSignOut: []string{"http://localhost:8080/"}}},
		},
		{
			name:      "localhost on a port without a scheme is https, as Caddy serves it",
			caddyfile: "localhost:8443 {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"https://localhost:8443/logto/sign-in-callback"},
				postSignOut: []string{"https://localhost:8443/"}}},
		},
		{
			name:      "http:// on port 80 has no port",
			caddyfile: "http://example.com {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"http://example.com/logto/sign-in-callback"},
				postSignOut: []string{"http://example.com/"}}},
		},
		{
			name:      "a site with two addresses and a path prefix",
			caddyfile: "shop.example.com, www.example.com {\n\tlogto {" + checkBlock + "\n\t\tpath_prefix /auth/\n\t\tpost_sign_out_redirect /bye\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"https://shop.example.com/auth/sign-in-callback", "https://www.example.com/auth/sign-in-callback"},
				postSignOut: []string{"https://shop.example.com/bye", "https://www.example.com/bye"}}},
		},
		{
			name: "inside handle and route, two blocks of one application on two sites",
			caddyfile: "a.example.com {\n\thandle /app/* {\n\t\troute {\n\t\t\tlogto {" + checkBlock + "\n\t\t\t\tpath_prefix /app/logto\n\t\t\t}\n\t\t}\n\t}\n}\n" +
				"b.example.com:8443 {\n\tlogto /private/* {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"https://a.example.com/app/logto/sign-in-callback", "https://b.example.com:8443/logto/sign-in-callback"},
				postSignOut: []string{"https://a.example.com/", "https://b.example.com:8443/"}}},
		},
		{
			name: "two applications, an absolute post sign-out page and base_url",
			caddyfile: "a.example.com {\n\tlogto {" + checkBlock + "\n\t\tpost_sign_out_redirect https://www.example.com/signed-out\n\t}\n}\n" +
				"b.example.com {\n\tlogto {\n\t\tendpoint https://tenant.logto.app/\n\t\tapp_id app-two\n\t\tapp_secret secret-two-0123456789\n\t\tbase_url https://public.example.com\n\t}\n}\n",
			want: []wantApp{
				{appID: "app-one",
					redirects:   []string{"https://a.example.com/logto/sign-in-callback"},
					postSignOut: []string{"https://www.example.com/signed-out"}},
				{appID: "app-two",
					redirects:   []string{"https://public.example.com/logto/sign-in-callback"},
					postSignOut: []string{"https://public.example.com/"}},
			},
		},
		{
			name: "a wildcard site and a site without a host are set apart",
			caddyfile: "*.example.com {\n\tlogto {" + checkBlock + "\n\t}\n}\n" +
				":8080 {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one", unknown: []string{"*.example.com", "(any host)"}}},
		},
		{
			name:      "a host matcher from the environment is expanded",
			caddyfile: ":443 {\n\t@h host {env.CHECK_HOST}\n\thandle @h {\n\t\tlogto {" + checkBlock + "\n\t\t}\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"https://env.example.com/logto/sign-in-callback"},
				postSignOut: []string{"https://env.example.com/"}}},
		},
		{
			// The adapter gives the server a TLS connection policy: the
			// certificate is the user's to load, the scheme stays https.
			name:      "auto_https off still serves a domain with TLS",
			caddyfile: "{\n\tauto_https off\n}\nexample.com {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"https://example.com/logto/sign-in-callback"},
				postSignOut: []string{"https://example.com/"}}},
		},
		{
			name:      "auto_https off on a port without a domain's policy",
			caddyfile: "{\n\tauto_https off\n}\nhttp://example.com:8080 {\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want: []wantApp{{appID: "app-one",
				redirects:   []string{"http://example.com:8080/logto/sign-in-callback"},
				postSignOut: []string{"http://example.com:8080/"}}},
		},
		{
			name:      "a site behind a unix socket is set apart",
			caddyfile: "http://example.com {\n\tbind unix//run/caddy.sock\n\tlogto {" + checkBlock + "\n\t}\n}\n",
			want:      []wantApp{{appID: "app-one", unknown: []string{"example.com"}}},
		},
		{
			name: "what every sign-in asks for is the union of the blocks', bearer indicators apart",
			caddyfile: "example.com {\n\tlogto {" + checkBlock + "\n\t\tresources https://a.example.com\n\t}\n" +
				"\tlogto /api/* {" + checkBlock + "\n\t\ttoken_resource https://b.example.com\n\t\torganization org1\n\t\tbearer https://a.example.com https://c.example.com organization\n\t}\n" +
				"\tlogto /m2m/* {\n\t\tendpoint https://tenant.logto.app\n\t\tbearer https://d.example.com\n\t\tbearer_only\n\t}\n}\n",
			want: []wantApp{
				{appID: "app-one",
					redirects:   []string{"https://example.com/logto/sign-in-callback"},
					postSignOut: []string{"https://example.com/"},
					resources:   []string{"https://a.example.com", "https://b.example.com", "urn:logto:resource:organizations", "https://c.example.com (bearer)"}},
				{appID: "", resources: []string{"https://d.example.com (bearer)"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apps := planConfig(t, adaptCaddyfile(t, tt.caddyfile))
			var got []wantApp
			for _, ap := range apps {
				if ap.endpoint != "https://tenant.logto.app" {
					t.Errorf("endpoint %q, want it as Provision makes it", ap.endpoint)
				}
				g := wantApp{appID: ap.appID, redirects: ap.redirects, postSignOut: ap.postSignOut}
				for _, o := range ap.unknown {
					g.unknown = append(g.unknown, o.host)
				}
				for _, r := range ap.resources {
					s := r.indicator
					if !r.signIn {
						s += " (bearer)"
					}
					g.resources = append(g.resources, s)
				}
				got = append(got, g)
			}
			if !slices.EqualFunc(got, tt.want, equalWantApp) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func equalWantApp(a, b wantApp) bool {
	return a.appID == b.appID && slices.Equal(a.redirects, b.redirects) && slices.Equal(a.postSignOut, b.postSignOut) &&
		slices.Equal(a.unknown, b.unknown) && slices.Equal(a.resources, b.resources)
}

// TestCheckFindsBlocksInJSON: a JSON config reaches logto handlers through
// subroutes, named routes (invoke) and error routes, with the host names
// of the routes around them, on several servers.
func TestCheckFindsBlocksInJSON(t *testing.T) {
	logto := `{"handler": "logto", "endpoint": "https://t.example", "app_id": "a", "app_secret": "s"}`
	config := `{"apps": {"http": {"servers": {
		"b": {"listen": [":443"], "routes": [
			{"match": [{"host": ["x.example.com"]}], "handle": [{"handler": "subroute", "routes": [
				{"match": [{"path": ["/app/*"]}], "handle": [{"handler": "subroute", "routes": [{"handle": [` + logto + `]}]}]},
				{"match": [{"host": ["y.example.com"]}, {"host": ["z.example.com"]}], "handle": [` + logto + `]},
				{"handle": [{"handler": "invoke", "name": "shared"}]}
			]}]}
		], "named_routes": {"shared": {"handle": [` + logto + `, {"handler": "invoke", "name": "shared"}]}},
		"errors": {"routes": [{"match": [{"host": ["err.example.com"]}], "handle": [` + logto + `]}]}},
		"a": {"listen": [":8080"], "routes": [{"match": [{"path": ["/x"]}, {"host": ["ignored.example.com"]}], "handle": [` + logto + `]}]}
	}}}}`
	_, blocks, err := findBlocks([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range blocks {
		got = append(got, b.server+":"+strings.Join(b.hosts, ","))
	}
	want := []string{"a:", "b:x.example.com", "b:y.example.com,z.example.com", "b:x.example.com", "b:err.example.com"}
	if !slices.Equal(got, want) {
		t.Errorf("blocks found at %q, want %q", got, want)
	}
	if blocks[0].hosts != nil {
		t.Errorf("a route whose matcher sets do not all name hosts matches any host; got %q", blocks[0].hosts)
	}
}

// TestCheckOriginScheme: the scheme and port each listener serves a host
// with, as Caddy's automatic HTTPS decides it from the JSON.
func TestCheckOriginScheme(t *testing.T) {
	repl := caddy.NewReplacer()
	route := func(host string) routeConfig {
		b, _ := json.Marshal([]string{host})
		return routeConfig{Match: []map[string]json.RawMessage{{"host": b}}}
	}
	tests := []struct {
		name string
		app  httpAppConfig
		want []string
	}{
		{"https port", httpAppConfig{Servers: map[string]*serverConfig{"s": {Listen: []string{":443"}, Routes: []routeConfig{route("h.test")}}}}, []string{"https://h.test"}},
		{"http port", httpAppConfig{Servers: map[string]*serverConfig{"s": {Listen: []string{":80"}, Routes: []routeConfig{route("h.test")}}}}, []string{"http://h.test"}},
		{"other port with a host", httpAppConfig{Servers: map[string]*serverConfig{"s": {Listen: []string{"127.0.0.1:9443"}, Routes: []routeConfig{route("h.test")}}}}, []string{"https://h.test:9443"}},
		{"other port, host skipped", httpAppConfig{Servers: map[string]*serverConfig{"s": {Listen: []string{":9080"}, Routes: []routeConfig{route("h.test")}, AutoHTTPS: autoHTTPSSkip("h.test")}}}, []string{"http://h.test:9080"}},
		{"custom http_port", httpAppConfig{HTTPPort: 8080, Servers: map[string]*serverConfig{"s": {Listen: []string{":8080", ":8443"}, Routes: []routeConfig{route("h.test")}}}}, []string{"http://h.test:8080", "https://h.test:8443"}},
		{"explicit TLS on a catch-all", httpAppConfig{Servers: map[string]*serverConfig{"s": {Listen: []string{":9000-9001"}, TLSConnPolicies: []json.RawMessage{json.RawMessage(`{}`)}}}}, []string{"https://h.test:9000", "https://h.test:9001"}},
		{"IPv6 host", httpAppConfig{Servers: map[string]*serverConfig{"s": {Listen: []string{":443"}, Routes: []routeConfig{route("::1")}}}}, []string{"https://[::1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := "h.test"
			if strings.Contains(tt.name, "IPv6") {
				host = "::1"
			}
			var got []string
			for _, o := range tt.app.origins(placedBlock{server: "s", hosts: []string{host}}, "", repl) {
				got = append(got, o.url)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("origins %q, want %q", got, tt.want)
			}
		})
	}
}

func autoHTTPSSkip(hosts ...string) *caddyhttp.AutoHTTPSConfig {
	return &caddyhttp.AutoHTTPSConfig{Skip: hosts}
}

// TestCheckConfigThatCannotLoad: a handler that would not provision stops
// `caddy run`, so the check stops there too, naming the handler.
func TestCheckConfigThatCannotLoad(t *testing.T) {
	t.Setenv("CHECK_UNSET_SECRET", "")
	config := adaptCaddyfile(t, "example.com {\n\tlogto {\n\t\tendpoint https://tenant.logto.app\n\t\tapp_id a\n\t\tapp_secret {env.CHECK_UNSET_SECRET}\n\t}\n}\n")
	_, err := checkConfig(t.Context(), config, nil)
	if err == nil || !strings.Contains(err.Error(), "app_secret is required") || !strings.Contains(err.Error(), "example.com") {
		t.Fatalf("err = %v, want app_secret is required, naming the site", err)
	}
}

// probeLogto answers the checker's probes as Logto 1.37 does (LOGTO.md,
// "Probing a tenant without signing anyone in"), and nothing else: it has
// no sign-in page and issues nothing.
type probeLogto struct {
	srv       *httptest.Server
	issuer    string // what discovery says; the endpoint's /oidc by default
	algs      []string
	clockSkew time.Duration // added to the Date header
	key       *ecdsa.PrivateKey

	mu        sync.Mutex
	clients   map[string]*probeClient
	resources map[string]bool
	seen      []string // "METHOD path" of every request
}

type probeClient struct {
	secret     string
	redirects  []string
	postLogout []string
}

func newProbeLogto(t *testing.T) *probeLogto {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	l := &probeLogto{
		algs:      []string{"ES384"},
		key:       key,
		clients:   map[string]*probeClient{},
		resources: map[string]bool{"https://api.example.com": true, organizationsResource: true},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oidc/.well-known/openid-configuration", l.discovery)
	mux.HandleFunc("GET /oidc/jwks", l.jwks)
	mux.HandleFunc("POST /oidc/token", l.token)
	mux.HandleFunc("GET /oidc/auth", l.auth)
	mux.HandleFunc("GET /oidc/session/end", l.endSession)
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, r.Method+" "+r.URL.Path)
		l.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(l.srv.Close)
	l.issuer = l.srv.URL + "/oidc"
	return l
}

func (l *probeLogto) client(id, secret string, redirects, postLogout []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients[id] = &probeClient{secret: secret, redirects: redirects, postLogout: postLogout}
}

func (l *probeLogto) lookup(id string) *probeClient {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clients[id]
}

func (l *probeLogto) discovery(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", time.Now().Add(l.clockSkew).UTC().Format(http.TimeFormat))
	base := l.srv.URL + "/oidc"
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                l.issuer,
		"authorization_endpoint":                base + "/auth",
		"token_endpoint":                        base + "/token",
		"jwks_uri":                              base + "/jwks",
		"end_session_endpoint":                  base + "/session/end",
		"id_token_signing_alg_values_supported": l.algs,
	})
}

func (l *probeLogto) jwks(w http.ResponseWriter, r *http.Request) {
	b64 := base64.RawURLEncoding
	writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-384", "kid": "k1", "use": "sig",
		"x": b64.EncodeToString(l.key.X.FillBytes(make([]byte, 48))),
		"y": b64.EncodeToString(l.key.Y.FillBytes(make([]byte, 48))),
	}}})
}

func (l *probeLogto) token(w http.ResponseWriter, r *http.Request) {
	user, pass, _ := r.BasicAuth()
	id, _ := url.QueryUnescape(user)
	secret, _ := url.QueryUnescape(pass)
	c := l.lookup(id)
	switch {
	case c == nil:
		oauthError(w, http.StatusBadRequest, "invalid_client", "invalid client "+id)
	case c.secret != secret:
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
	case r.PostFormValue("redirect_uri") == "" && len(c.redirects) != 1:
		oauthError(w, http.StatusBadRequest, "invalid_request", "missing required parameter 'redirect_uri'")
	default:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "grant request is invalid")
	}
}

func (l *probeLogto) auth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := l.lookup(q.Get("client_id"))
	redirect := q.Get("redirect_uri")
	switch {
	case c == nil:
		oauthError(w, http.StatusBadRequest, "invalid_client", "invalid client "+q.Get("client_id"))
		return
	case !slices.Contains(c.redirects, redirect):
		oauthError(w, http.StatusBadRequest, "invalid_redirect_uri", "redirect_uri did not match any of the client's registered redirect_uris")
		return
	case q.Get("code_challenge_method") != "S256" || q.Get("state") == "" || q.Get("response_type") != "code":
		oauthError(w, http.StatusBadRequest, "invalid_request", "not a request the module sends")
		return
	}
	for _, res := range q["resource"] {
		l.mu.Lock()
		known := l.resources[res]
		l.mu.Unlock()
		if !known {
			back := url.Values{"error": {"invalid_target"}, "error_description": {"resource indicator is missing, or unknown"}, "state": {q.Get("state")}, "iss": {l.issuer}}
			http.Redirect(w, r, redirect+"?"+back.Encode(), http.StatusSeeOther)
			return
		}
	}
	http.Redirect(w, r, "/sign-in?app_id="+url.QueryEscape(q.Get("client_id")), http.StatusSeeOther)
}

func (l *probeLogto) endSession(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := l.lookup(q.Get("client_id"))
	switch {
	case c == nil:
		oauthError(w, http.StatusBadRequest, "invalid_client", "invalid client "+q.Get("client_id"))
	case !slices.Contains(c.postLogout, q.Get("post_logout_redirect_uri")):
		oauthError(w, http.StatusBadRequest, "invalid_request", "post_logout_redirect_uri not registered")
	default:
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<form method="post" action="/oidc/session/end/confirm"></form><script>document.forms[0].submit()</script>`)
	}
}

// twoSites is a Caddyfile with two sites of one application and a third
// site of another, against endpoint.
func twoSites(endpoint string) string {
	return fmt.Sprintf(`http://shop.localhost:8081, http://www.localhost:8081 {
	logto {
		endpoint %[1]s
		app_id shop
		app_secret {env.CHECK_SHOP_SECRET}
		resources https://api.example.com
	}
}
http://admin.localhost:8082 {
	logto {
		endpoint %[1]s
		app_id admin
		app_secret admin-secret-literal-in-config
		organization org1
		post_sign_out_redirect /bye
	}
}
`, endpoint)
}

// registerTwoSites registers everything twoSites sends.
func registerTwoSites(l *probeLogto) {
	l.client("shop", "shop-secret-0123456789",
		[]string{"http://shop.localhost:8081/logto/sign-in-callback", "http://www.localhost:8081/logto/sign-in-callback"},
		[]string{"http://shop.localhost:8081/", "http://www.localhost:8081/"})
	l.client("admin", "admin-secret-literal-in-config",
		[]string{"http://admin.localhost:8082/logto/sign-in-callback"},
		[]string{"http://admin.localhost:8082/bye"})
}

func checkTwoSites(t *testing.T, l *probeLogto) checkReport {
	t.Helper()
	rep, err := checkConfig(t.Context(), adaptCaddyfile(t, twoSites(l.srv.URL)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestCheckPassesARegisteredConfig: every check of a config that Logto
// accepts passes, and the probes only asked: no request went to a sign-in
// page or anywhere the answers point.
func TestCheckPassesARegisteredConfig(t *testing.T) {
	t.Setenv("CHECK_SHOP_SECRET", "shop-secret-0123456789")
	l := newProbeLogto(t)
	registerTwoSites(l)
	rep := checkTwoSites(t, l)
	if !rep.OK || rep.Failed != 0 {
		t.Fatalf("want every check passed, got %d failed:\n%s", rep.Failed, reportText(rep))
	}
	// discovery, keys, clock; per app credentials, redirects, sign-out
	// pages, resources.
	if want := 3 + (1 + 2 + 2 + 1) + (1 + 1 + 1 + 1); rep.Passed != want {
		t.Errorf("passed %d checks, want %d:\n%s", rep.Passed, want, reportText(rep))
	}
	if rep.NotChecked != 2 {
		t.Errorf("not checked: %d, want the two back-channel logout URIs:\n%s", rep.NotChecked, reportText(rep))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.seen {
		switch s {
		case "GET /oidc/.well-known/openid-configuration", "GET /oidc/jwks", "POST /oidc/token", "GET /oidc/auth", "GET /oidc/session/end":
		default:
			t.Errorf("the checker requested %s; it must only ask, never follow an answer", s)
		}
	}
}

// TestCheckNamesEachMistake: each mistake fails exactly the check it
// concerns, with the subject and a fix that says what to do in Console.
func TestCheckNamesEachMistake(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(l *probeLogto)
		check   string
		subject string
		message string
		fix     string
	}{
		{"unregistered callback", func(l *probeLogto) {
			l.clients["shop"].redirects = l.clients["shop"].redirects[:1]
		}, "redirect_uri", "http://www.localhost:8081/logto/sign-in-callback", "is not registered",
			"Console → Applications → shop → Redirect URIs: add `http://www.localhost:8081/logto/sign-in-callback`"},
		{"wrong secret", func(l *probeLogto) { l.clients["shop"].secret = "rotated" },
			"credentials", "", "app_secret ({env.CHECK_SHOP_SECRET}): Logto refuses it",
			"set app_secret ({env.CHECK_SHOP_SECRET}) to one of the App secrets in Console → Applications → shop → Endpoints & Credentials"},
		{"unknown application", func(l *probeLogto) { delete(l.clients, "admin") },
			"credentials", "", `Logto has no application "admin"`, "App ID"},
		{"unregistered post sign-out page", func(l *probeLogto) { l.clients["admin"].postLogout = nil },
			"post_sign_out_redirect_uri", "http://admin.localhost:8082/bye", "is not registered",
			"Console → Applications → admin → Post sign-out redirect URIs: add `http://admin.localhost:8082/bye`"},
		{"unknown resource", func(l *probeLogto) { delete(l.resources, "https://api.example.com") },
			"api_resource", "https://api.example.com", "does not exist",
			"Console → API resources → Create API resource with the API identifier `https://api.example.com`"},
		{"clock off", func(l *probeLogto) { l.clockSkew = -5 * time.Minute },
			"clock", "", "this machine is 300 s ahead of Logto", "NTP"},
		{"wrong issuer", func(l *probeLogto) { l.issuer = "https://other.logto.app/oidc" },
			"discovery", "", `the issuer is "https://other.logto.app/oidc"`, "set endpoint to https://other.logto.app"},
		{"keys in no algorithm Logto signs with", func(l *probeLogto) { l.algs = []string{"RS256"} },
			"signing_keys", "", "none the module can verify with", "Signing keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CHECK_SHOP_SECRET", "shop-secret-0123456789")
			l := newProbeLogto(t)
			registerTwoSites(l)
			tt.break_(l)
			rep := checkTwoSites(t, l)
			var failures []checkResult
			eachCheck(rep, func(c checkResult) {
				if c.Status == statusFailed {
					failures = append(failures, c)
				}
			})
			if len(failures) != 1 {
				t.Fatalf("want exactly one failure, got %d:\n%s", len(failures), reportText(rep))
			}
			f := failures[0]
			if f.Check != tt.check || (tt.subject != "" && f.Subject != tt.subject) || !strings.Contains(f.Message, tt.message) || !strings.Contains(f.Fix, tt.fix) {
				t.Errorf("failure %+v\nwant check %q subject %q message ~%q fix ~%q", f, tt.check, tt.subject, tt.message, tt.fix)
			}
			if rep.OK {
				t.Error("report says OK with a failure")
			}
		})
	}
}

// TestCheckUnreachableTenant: an endpoint nobody listens on, and one that
// accepts and never answers, are failures naming the address and the
// network error, within the per-request timeout, never a hang.
func TestCheckUnreachableTenant(t *testing.T) {
	t.Setenv("CHECK_SHOP_SECRET", "shop-secret-0123456789")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := "http://" + l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	t.Cleanup(func() { l.Close() })
	closed := newProbeLogto(t)
	closed.srv.Close()

	for _, tc := range []struct{ endpoint, want string }{
		{closed.srv.URL, "connection refused"},
		{silent, "Client.Timeout exceeded"},
	} {
		apps := planConfig(t, adaptCaddyfile(t, twoSites(tc.endpoint)))
		pr := newProber(nil)
		if pr.hc.Timeout != checkTimeout {
			t.Fatalf("the checker's requests time out after %v, want %v", pr.hc.Timeout, checkTimeout)
		}
		pr.hc.Timeout = 300 * time.Millisecond
		start := time.Now()
		rep := pr.checkTenant(t.Context(), tc.endpoint, apps)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: the check took %v", tc.endpoint, d)
		}
		d := rep.Checks[0]
		if d.Status != statusFailed || !strings.Contains(d.Message, tc.endpoint+"/oidc/.well-known/openid-configuration") || !strings.Contains(d.Message, tc.want) {
			t.Errorf("discovery: %+v, want a failure naming the address and %q", d, tc.want)
		}
		for _, a := range rep.Applications {
			for _, c := range a.Checks {
				if c.Status == statusPassed {
					t.Errorf("%s: %+v passed with Logto unreachable", a.AppID, c)
				}
			}
		}
	}
}

// TestCheckNeverPrintsASecret: neither the text nor the JSON report holds
// an app secret, whether the config reads it from the environment or
// (unwisely) holds it, also when Logto refuses it.
func TestCheckNeverPrintsASecret(t *testing.T) {
	t.Setenv("CHECK_SHOP_SECRET", "shop-secret-0123456789")
	l := newProbeLogto(t)
	registerTwoSites(l)
	l.clients["shop"].secret = "other"
	l.clients["admin"].secret = "other"
	rep := checkTwoSites(t, l)
	var js strings.Builder
	writeReportJSON(&js, rep)
	for _, out := range []string{reportText(rep), js.String()} {
		for _, secret := range []string{"shop-secret-0123456789", "admin-secret-literal-in-config"} {
			if strings.Contains(out, secret) {
				t.Errorf("the report holds the secret %q:\n%s", secret, out)
			}
		}
		if !strings.Contains(out, "refuses it") {
			t.Errorf("the report does not say the secrets were refused:\n%s", out)
		}
	}
}

func eachCheck(rep checkReport, f func(checkResult)) {
	for _, t := range rep.Tenants {
		for _, c := range t.Checks {
			f(c)
		}
		for _, a := range t.Applications {
			for _, c := range a.Checks {
				f(c)
			}
		}
	}
}

func reportText(rep checkReport) string {
	var b strings.Builder
	rep.writeText(&b)
	return b.String()
}
