package logto

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
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
