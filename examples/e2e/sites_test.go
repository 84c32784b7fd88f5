package e2e

// Sites: a Caddy built with the module serving one localhost port, with a
// client registered for it at the dev IdP; the static-site example and a
// gated test Caddyfile.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// site is one Caddy site: a port, a client registered at the IdP for it, and
// the Caddy serving it (restartable with another config).
type site struct {
	t         *testing.T
	idp       *devIdP
	port      int
	URL       string // http://localhost:<port>
	appID     string
	appSecret string
	dir       string // the site's scratch directory (Caddyfile, storage, logs)
	caddy     *proc
	logs      *logBuffer // every Caddy run's output, in order
}

// newSite picks a port and registers a "Traditional web" client for it at
// the IdP, with a random secret.
func newSite(t *testing.T, idp *devIdP) *site {
	t.Helper()
	s := &site{t: t, idp: idp, port: freePort(t), dir: t.TempDir(), logs: &logBuffer{}}
	s.URL = fmt.Sprintf("http://localhost:%d", s.port)
	s.appID = "e2e-" + randomHex(6)
	s.appSecret = randomHex(24)
	if idp != nil {
		idp.admin(t, http.MethodPost, "/__dev/clients", map[string]any{
			"client_id":                 s.appID,
			"client_secret":             s.appSecret,
			"redirect_uris":             []string{s.URL + "/logto/sign-in-callback"},
			"post_logout_redirect_uris": []string{s.URL + "/"},
		}, nil)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("--- caddy output (%s) ---\n%s", s.URL, tail(s.logs.String(), 6000))
		}
	})
	return s
}

// globalOptions keep several Caddys apart: no admin endpoint, storage in the
// site's own directory, nothing autosaved.
func (s *site) globalOptions(extra string) string {
	return fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n\tstorage file_system %s\n%s}\n\n",
		filepath.Join(s.dir, "storage"), extra)
}

// start runs Caddy with the Caddyfile (global options are prepended;
// globals adds lines inside that block). The Caddyfile reads {$SITE_ADDRESS}
// and {env.LOGTO_*}; extra adds to or overrides the environment.
func (s *site) start(caddyfile, globals string, extra map[string]string) {
	t := s.t
	t.Helper()
	s.stop()
	endpoint := ""
	if s.idp != nil {
		endpoint = s.idp.base
	}
	home := filepath.Join(s.dir, "home")
	over := map[string]string{
		"HOME":             home,
		"XDG_DATA_HOME":    filepath.Join(home, "data"),
		"XDG_CONFIG_HOME":  filepath.Join(home, "config"),
		"SITE_ADDRESS":     s.URL,
		"SITE_ROOT":        filepath.Join(env.root, "examples/static-site"),
		"LOGTO_ENDPOINT":   endpoint,
		"LOGTO_APP_ID":     s.appID,
		"LOGTO_APP_SECRET": s.appSecret,
	}
	for k, v := range extra {
		over[k] = v
	}
	file := filepath.Join(s.dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(s.globalOptions(globals)+caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startProc(s.dir, environ(over), env.caddy, "run", "--config", file, "--adapter", "caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	s.caddy = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			conn.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			s.stop()
			t.Fatalf("caddy did not come up on %s\n%s", s.URL, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *site) stop() {
	if s.caddy == nil {
		return
	}
	s.caddy.stop()
	_, _ = s.logs.Write([]byte(s.caddy.out.String()))
	s.caddy = nil
}

// output is everything Caddy printed so far, all runs included.
func (s *site) output() string {
	out := s.logs.String()
	if s.caddy != nil {
		out += s.caddy.out.String()
	}
	return out
}

// staticSite serves examples/static-site with its own Caddyfile: a public
// home page in pass mode and /private/ behind sign-in.
func staticSite(t *testing.T, idp *devIdP, globals string) *site {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.root, "examples/static-site/Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := newSite(t, idp)
	s.start(string(b), globals, nil)
	return s
}

// gatedCaddyfile protects the whole site and answers with who is signed in.
// opts go into the logto block.
func gatedCaddyfile(opts string) string {
	return `{$SITE_ADDRESS} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		scopes email
` + opts + `
	}
	header Content-Type "text/html; charset=utf-8"
	respond "<!doctype html><title>gated</title><h1 id=state>Private page</h1><p id=path>{http.request.uri}</p><p id=user-id>{http.auth.user.id}</p>"
}
`
}
