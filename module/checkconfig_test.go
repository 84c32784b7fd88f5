package logto

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

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
