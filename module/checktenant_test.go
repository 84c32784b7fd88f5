package logto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

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
