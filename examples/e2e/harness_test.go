package e2e

// The harness's core: TestMain builds the Caddy binary once and starts the
// shared dev IdP, a test skips or fails when a tool it needs is missing, and
// small helpers. The rest of the harness has a file per concern:
// processes_test.go (child processes), devidp_test.go (the dev IdP),
// sites_test.go (Caddy sites), visitor_test.go and cookiejar_test.go (the
// HTTP visitor) and chromium_test.go (the headless browser).

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const chromiumPath = "/usr/bin/chromium"

// env is what TestMain prepared for every test.
var env struct {
	root     string // repository root
	tmp      string // removed when the package's tests end
	caddy    string // the Caddy binary with the module
	buildErr error

	nodeMissing string // why the IdP cannot run here, if it cannot
	idp         *devIdP
	idpErr      error
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	tmp, err := os.MkdirTemp("", "caddy-logto-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	env.tmp = tmp
	defer removeAll(tmp)

	env.root, err = repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}

	env.caddy = filepath.Join(tmp, "caddy")
	build := exec.Command("go", "build", "-o", env.caddy, "./examples/caddy")
	build.Dir = env.root
	if out, err := build.CombinedOutput(); err != nil {
		env.buildErr = fmt.Errorf("go build ./examples/caddy: %v\n%s", err, out)
	}

	if _, err := exec.LookPath("node"); err != nil {
		env.nodeMissing = "node is not installed (the dev IdP in examples/devidp needs it)"
	} else if err := npmCI(); err != nil {
		env.idpErr = err
	} else {
		start := time.Now()
		env.idp, env.idpErr = startIdP(nil)
		if testing.Verbose() && env.idpErr == nil {
			fmt.Printf("e2e: dev IdP at %s, up in %v\n", env.idp.base, time.Since(start).Round(time.Millisecond))
		}
	}

	code := m.Run()
	if env.idp != nil {
		env.idp.stop()
	}
	return code
}

// repoRoot is the directory of the go.mod that holds this package.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if mod := strings.TrimSpace(string(out)); mod != "" && mod != os.DevNull {
			return filepath.Dir(mod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func npmCI() error {
	if _, err := os.Stat(filepath.Join(env.root, "examples/devidp/node_modules/oidc-provider")); err == nil {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--prefix", "examples/devidp")
	cmd.Dir = env.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci --prefix examples/devidp: %v\n%s", err, out)
	}
	return nil
}

// removeAll retries: Chromium's helpers may still write for a moment after
// the browser exits.
func removeAll(dir string) {
	for range 20 {
		if os.RemoveAll(dir) == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inCI reports whether a missing tool must fail the tests rather than skip
// them.
func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

func missing(t *testing.T, why string) {
	t.Helper()
	if inCI() {
		t.Fatalf("%s; CI is set, so this is a failure, not a skip", why)
	}
	t.Skipf("%s; skipping (set CI=true to make this a failure)", why)
}

// requireStack fails or skips the test unless Caddy built and the shared dev
// IdP is up.
func requireStack(t *testing.T) {
	t.Helper()
	if env.buildErr != nil {
		t.Fatal(env.buildErr)
	}
	if env.nodeMissing != "" {
		missing(t, env.nodeMissing)
	}
	if env.idpErr != nil {
		t.Fatalf("the dev IdP did not start: %v", env.idpErr)
	}
}

func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		missing(t, chromiumPath+" is not installed (the browser tests need it)")
	}
}

// --- small helpers ---------------------------------------------------------------

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// jwtPayload decodes a JWT's claims without verifying it.
func jwtPayload(t testing.TB, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tail(jwt, 40))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return m
}

// logLines are Caddy's JSON log lines (the rest is skipped).
func logLines(out string) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}
