package e2e

// `caddy logto check`, run as users run it: the Caddy binary with the
// module, a Caddyfile, and the dev IdP answering the probes as Logto does.
// One config per mistake, each named in the output and in the exit status;
// a correct config of several sites and two applications passing, whose
// redirect URIs are the ones the same config, served, really sends.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkRun is one run of `caddy logto check`.
type checkRun struct {
	code           int
	stdout, stderr string
}

func (r checkRun) String() string {
	return fmt.Sprintf("exit status %d\n--- stdout ---\n%s--- stderr ---\n%s", r.code, r.stdout, r.stderr)
}

// runCheck runs `caddy logto check --config <caddyfile> [args]` with the
// environment vars and returns what it printed and its exit status. It
// must end within a minute, whatever Logto does.
func runCheck(t *testing.T, caddyfile string, vars map[string]string, args ...string) checkRun {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	over := map[string]string{"HOME": filepath.Join(dir, "home"), "XDG_DATA_HOME": filepath.Join(dir, "data"), "XDG_CONFIG_HOME": filepath.Join(dir, "config")}
	for k, v := range vars {
		over[k] = v
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.caddy, append([]string{"logto", "check", "--config", file}, args...)...)
	cmd.Dir = dir
	cmd.Env = environ(over)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := checkRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("caddy logto check: %v\n%s", err, r)
	}
	if ctx.Err() != nil {
		t.Fatalf("caddy logto check did not end within a minute\n%s", r)
	}
	// Secrets reach the command only through the environment; none may
	// come out.
	for k, v := range vars {
		if strings.Contains(k, "SECRET") && len(v) >= 8 && strings.Contains(r.stdout+r.stderr, v) {
			t.Errorf("the output holds the value of %s:\n%s", k, r)
		}
	}
	return r
}

// checkCaddyfile is a site of one application, with opts added to its
// logto block.
func checkCaddyfile(site, opts string) string {
	return site + ` {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
` + opts + `
	}
	respond "ok"
}
`
}

// TestCheckPassesAGoodConfig: several sites, two applications, nested
// blocks with a path prefix, an API resource, a post sign-out page: every
// check passes (exit 0), the JSON says the same, and every redirect URI
// it checked is the one the served config sends Logto.
func TestCheckPassesAGoodConfig(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	p1, p2, p3 := freePort(t), freePort(t), freePort(t)
	home := fmt.Sprintf("http://localhost:%d", p1)
	shop := fmt.Sprintf("http://shop.localhost:%d", p2)
	admin := fmt.Sprintf("http://admin.localhost:%d", p3)
	a := registerApp(t, idp, logtoApp{}, []string{home + "/logto/sign-in-callback", shop + "/logto/sign-in-callback"}, []string{home + "/", shop + "/"}, "")
	b := registerApp(t, idp, logtoApp{}, []string{admin + "/app/logto/sign-in-callback"}, []string{admin + "/bye"}, "")
	caddyfile := fmt.Sprintf(`(app_a) {
	endpoint {env.LOGTO_ENDPOINT}
	app_id {env.LOGTO_APP_ID}
	app_secret {env.LOGTO_APP_SECRET}
}

%s, %s {
	logto /private/* {
		import app_a
	}
	respond "ok"
}

%s {
	handle /app/* {
		logto {
			endpoint {env.LOGTO_ENDPOINT}
			app_id {env.ADMIN_APP_ID}
			app_secret {env.ADMIN_APP_SECRET}
			path_prefix /app/logto
			resources https://api.example.com
			post_sign_out_redirect /bye
		}
		respond "admin"
	}
	respond "public"
}
`, home, shop, admin)
	vars := caddyVars(idp, a, "ADMIN_APP_ID", b.id, "ADMIN_APP_SECRET", b.secret)

	r := runCheck(t, caddyfile, vars)
	if r.code != 0 || !strings.Contains(r.stdout, "All checks passed") || strings.Contains(r.stdout, "✗") {
		t.Fatalf("want every check passed\n%s", r)
	}
	for _, line := range []string{
		"✓ app_id and app_secret: Logto accepts them",
		"✓ redirect URI " + home + "/logto/sign-in-callback is registered",
		"✓ redirect URI " + shop + "/logto/sign-in-callback is registered",
		"✓ redirect URI " + admin + "/app/logto/sign-in-callback is registered",
		"✓ post sign-out redirect URI " + admin + "/bye is registered",
		"✓ API resource https://api.example.com exists",
		"✓ clock:",
		"✓ signing keys: ES384",
		"- not checked: back-channel logout URI",
	} {
		if !strings.Contains(r.stdout, line) {
			t.Errorf("the output lacks %q\n%s", line, r)
		}
	}

	j := runCheck(t, caddyfile, vars, "--json")
	var rep struct {
		OK      bool `json:"ok"`
		Failed  int  `json:"failed"`
		Tenants []struct {
			Endpoint     string `json:"endpoint"`
			Applications []struct {
				AppID  string `json:"app_id"`
				Checks []struct {
					Check, Subject, Status string
				} `json:"checks"`
			} `json:"applications"`
		} `json:"tenants"`
	}
	if j.code != 0 {
		t.Fatalf("--json: want exit 0\n%s", j)
	}
	if err := json.Unmarshal([]byte(j.stdout), &rep); err != nil {
		t.Fatalf("--json: not one JSON document: %v\n%s", err, j)
	}
	if !rep.OK || rep.Failed != 0 || len(rep.Tenants) != 1 || rep.Tenants[0].Endpoint != idp.base || len(rep.Tenants[0].Applications) != 2 {
		t.Fatalf("--json: want one tenant, two applications, all passed\n%s", j)
	}
	var checked []string
	for _, app := range rep.Tenants[0].Applications {
		for _, c := range app.Checks {
			if c.Check == "redirect_uri" {
				checked = append(checked, c.Subject)
			}
		}
	}

	// The same Caddyfile, served: each site sends the redirect URI checked.
	in := runCaddy(t, "good config", p1, caddyGlobals(t.TempDir(), "")+caddyfile, vars)
	for _, port := range []int{p2, p3} {
		waitPort(t, in, port)
	}
	for _, u := range []string{home + "/private/", shop + "/private/", admin + "/app/"} {
		first := loopbackVisitor(t).navigate(u)
		loc, err := url.Parse(first.location())
		if !first.isRedirect() || err != nil {
			t.Fatalf("GET %s: want a redirect to the IdP, got %s %q", u, first.Status, first.location())
		}
		if sent := loc.Query().Get("redirect_uri"); !slices.Contains(checked, sent) {
			t.Errorf("GET %s sends redirect_uri %q, which the check did not check (it checked %q)", u, sent, checked)
		}
	}
}

// waitPort waits until Caddy listens on port too.
func waitPort(t *testing.T, in *caddyInstance, port int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy %s does not listen on %d\n%s", in.name, port, in.p.out.String())
		}
	}
}

// TestCheckNamesEachMistake: one config per mistake, each named in the
// output with its fix, and the exit status 1 (a site the checker cannot
// know, a wildcard, is said and does not fail; a config that cannot load
// is 2).
func TestCheckNamesEachMistake(t *testing.T) {
	t.Parallel()
	requireStack(t)
	idp := env.idp
	site := func() (string, logtoApp) {
		u := fmt.Sprintf("http://localhost:%d", freePort(t))
		return u, registerApp(t, idp, logtoApp{}, []string{u + "/logto/sign-in-callback"}, []string{u + "/"}, "")
	}

	t.Run("a site whose callback is not registered", func(t *testing.T) {
		registered, a := site()
		other := fmt.Sprintf("http://localhost:%d", freePort(t))
		r := runCheck(t, checkCaddyfile(registered+", "+other, ""), caddyVars(idp, a))
		expectCheck(t, r, 1,
			"✗ redirect URI "+other+"/logto/sign-in-callback is not registered",
			"fix: Console → Applications → "+a.id+" → Redirect URIs: add `"+other+"/logto/sign-in-callback`",
			"✓ redirect URI "+registered+"/logto/sign-in-callback is registered")
	})

	t.Run("a wrong secret", func(t *testing.T) {
		u, a := site()
		vars := caddyVars(idp, a)
		vars["LOGTO_APP_SECRET"] = "not-" + a.secret
		vars["REAL_SECRET"] = a.secret // checked against the output too
		r := runCheck(t, checkCaddyfile(u, ""), vars)
		expectCheck(t, r, 1,
			"✗ app_secret ({env.LOGTO_APP_SECRET}): Logto refuses it for application "+a.id,
			"fix: set app_secret ({env.LOGTO_APP_SECRET}) to one of the App secrets in Console → Applications → "+a.id)
	})

	t.Run("an unknown application", func(t *testing.T) {
		u, a := site()
		vars := caddyVars(idp, a)
		vars["LOGTO_APP_ID"] = "no-such-app"
		r := runCheck(t, checkCaddyfile(u, ""), vars)
		expectCheck(t, r, 1, `✗ app_id: Logto has no application "no-such-app"`)
	})

	t.Run("an unknown API resource", func(t *testing.T) {
		u, a := site()
		r := runCheck(t, checkCaddyfile(u, "\t\ttoken_resource https://typo.example.com"), caddyVars(idp, a))
		expectCheck(t, r, 1,
			"✗ API resource https://typo.example.com does not exist",
			"fix: Console → API resources → Create API resource with the API identifier `https://typo.example.com`")
	})

	t.Run("an unregistered post sign-out page", func(t *testing.T) {
		u, a := site()
		r := runCheck(t, checkCaddyfile(u, "\t\tpost_sign_out_redirect /goodbye"), caddyVars(idp, a))
		expectCheck(t, r, 1,
			"✗ post sign-out redirect URI "+u+"/goodbye is not registered",
			"fix: Console → Applications → "+a.id+" → Post sign-out redirect URIs: add `"+u+"/goodbye`")
	})

	t.Run("an endpoint nobody listens on", func(t *testing.T) {
		u, a := site()
		vars := caddyVars(idp, a)
		vars["LOGTO_ENDPOINT"] = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		start := time.Now()
		r := runCheck(t, checkCaddyfile(u, ""), vars)
		expectCheck(t, r, 1, "✗ discovery: cannot reach Logto at "+vars["LOGTO_ENDPOINT"]+"/oidc/.well-known/openid-configuration", "connection refused")
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("an unreachable tenant took %v", d)
		}
	})

	t.Run("a wildcard site", func(t *testing.T) {
		_, a := site()
		r := runCheck(t, checkCaddyfile(fmt.Sprintf("http://*.wild.localhost:%d", freePort(t)), ""), caddyVars(idp, a))
		expectCheck(t, r, 0, "- not checked: redirect and post sign-out URIs of *.wild.localhost: a wildcard site")
	})

	t.Run("a config that cannot load", func(t *testing.T) {
		u, a := site()
		r := runCheck(t, checkCaddyfile(u, "\t\tendpont https://typo"), caddyVars(idp, a))
		if r.code != 2 || !strings.Contains(r.stderr, `unknown option \"endpont\"`) || r.stdout != "" {
			t.Errorf("want exit status 2 and the adapter's error\n%s", r)
		}
		vars := caddyVars(idp, a)
		delete(vars, "LOGTO_APP_SECRET")
		r = runCheck(t, checkCaddyfile(u, ""), vars, "--json")
		var rep struct{ Error string }
		if r.code != 2 || json.Unmarshal([]byte(r.stdout), &rep) != nil || !strings.Contains(rep.Error, "app_secret is required") {
			t.Errorf("an unset secret: want exit status 2 and the error as JSON\n%s", r)
		}
	})
}

// expectCheck checks a run's exit status and that its output has each
// line (or part of one).
func expectCheck(t *testing.T, r checkRun, code int, lines ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d", r.code, code)
	}
	for _, l := range lines {
		if !strings.Contains(r.stdout, l) {
			t.Errorf("the output lacks %q", l)
		}
	}
	if t.Failed() {
		t.Logf("%s", r)
	}
}
