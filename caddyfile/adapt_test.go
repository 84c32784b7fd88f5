// Package caddyfile_test holds the golden Caddyfile adapt tests of the logto
// directive, in the shape of Caddy's caddytest/integration/caddyfile_adapt:
// each testdata/*.caddyfiletest is a Caddyfile, a line "----------", then
// either the indented JSON it adapts to or "error: " and a substring of the
// error it must fail with.
//
// Run `go test ./caddyfile -update` to rewrite the JSON of the success cases
// after an intended change, and read the diff before committing it: the
// golden files are what a user's Caddyfile turns into.
package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the "caddyfile" adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-logto/caddy-logto/module"
)

var update = flag.Bool("update", false, "rewrite the expected JSON of the success cases in testdata/")

// separator is the line between the Caddyfile and its expected result.
const separator = "\n----------\n"

// errorPrefix starts the second part of a case that must fail to adapt.
const errorPrefix = "error:"

// The secrets the cases and examples reach through {env.*} and {file.*}.
// Adapting must keep the placeholders, so none of these may ever show up in
// adapted JSON: a config dumped by `caddy adapt` or the admin API would
// otherwise hand out the App Secret.
const (
	envAppSecret    = "app-secret-from-env-must-not-leak"
	envCookieSecret = "cookie-secret-from-env-must-not-leak"
	envOldSecret    = "old-cookie-secret-from-env-must-not-leak"
	fileSecretPath  = "testdata/app_secret.txt" // read at provision, relative to this directory
)

// knownBug marks a case (by a comment line in its Caddyfile) that the
// module gets wrong today. The case is skipped while it fails and fails
// once it passes, so the marker cannot outlive the fix.
var knownBug = regexp.MustCompile(`(?m)^# known bug: (.*)$`)

// maxProvisionTime bounds caddy.Validate for one config. Startup must never
// wait on the IdP (DESIGN: discovery and keys are fetched on first use), so
// a slow provision means something dialled out.
const maxProvisionTime = 3 * time.Second

// TestAdapt adapts every testdata/*.caddyfiletest and checks the result.
func TestAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/*.caddyfiletest")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.caddyfiletest files")
	}
	fileSecret := readFileSecret(t)
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".caddyfiletest"), func(t *testing.T) {
			idp := setEnv(t)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			input, expected, ok := strings.Cut(strings.ReplaceAll(string(data), "\r\n", "\n"), separator)
			if !ok {
				t.Fatalf("%s: no %q line between the Caddyfile and the expected result", path, strings.TrimSpace(separator))
			}
			// Only trailing space is trimmed, so an error's line number is
			// the line in the .caddyfiletest file itself.
			caddyfile := strings.TrimRight(input, " \t\n") + "\n"
			expected = strings.TrimSpace(expected)

			result, warnings, adaptErr := adapt("Caddyfile", []byte(caddyfile))

			bug := knownBug.FindStringSubmatch(caddyfile)
			if strings.HasPrefix(expected, errorPrefix) {
				problem := errorMismatch(adaptErr, expected)
				switch {
				case bug != nil && problem == "":
					t.Errorf("the known bug %q is fixed: remove its line from %s", bug[1], path)
				case bug != nil:
					t.Skipf("known bug: %s\n%s", bug[1], problem)
				case problem != "":
					t.Error(problem)
				}
				return
			}
			if bug != nil {
				t.Fatalf("%s: a known-bug marker is only for error cases", path)
			}
			if !strings.HasPrefix(expected, "{") && !*update {
				t.Fatalf("%s: the expected result is neither JSON nor %q", path, errorPrefix)
			}
			if adaptErr != nil {
				t.Fatalf("adapting: %v", adaptErr)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
			}

			if *update {
				out := caddyfile + strings.TrimPrefix(separator, "\n") + string(result) + "\n"
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if got := string(result); got != expected {
				t.Errorf("adapted JSON differs from %s (run go test ./caddyfile -update and read the diff):\n%s", path, firstDifference(expected, got))
			}

			checkSecrets(t, caddyfile, result, fileSecret)
			checkLoads(t, result)
			if n := idp.Load(); n != 0 {
				t.Errorf("provisioning made %d request(s) to the IdP; startup must not contact Logto", n)
			}
		})
	}
}

// TestExamplesAdapt adapts every examples/**/Caddyfile: a user copies them,
// so they must adapt cleanly (formatted, no warnings) and load.
func TestExamplesAdapt(t *testing.T) {
	var paths []string
	err := filepath.WalkDir("../examples", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "node_modules" {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "Caddyfile" {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no Caddyfile under examples/")
	}
	fileSecret := readFileSecret(t)
	for _, path := range paths {
		name, _ := filepath.Rel("../examples", path)
		t.Run(filepath.ToSlash(name), func(t *testing.T) {
			idp := setEnv(t)
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The real path, so imports resolve beside the file and errors
			// name it.
			abs, err := filepath.Abs(path)
			if err != nil {
				t.Fatal(err)
			}
			result, warnings, err := adapt(abs, body)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
			}
			checkSecrets(t, string(body), result, fileSecret)
			checkLoads(t, result)
			if n := idp.Load(); n != 0 {
				t.Errorf("provisioning made %d request(s) to the IdP; startup must not contact Logto", n)
			}
		})
	}
}

// setEnv sets the variables the cases and examples read. LOGTO_ENDPOINT
// points at a server that only counts requests: provisioning must make
// none.
func setEnv(t *testing.T) *atomic.Int64 {
	t.Helper()
	var hits atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "the IdP must not be contacted at provision", http.StatusTeapot)
	}))
	t.Cleanup(idp.Close)
	t.Setenv("LOGTO_ENDPOINT", idp.URL)
	t.Setenv("LOGTO_APP_ID", "test-app-id")
	t.Setenv("LOGTO_APP_SECRET", envAppSecret)
	t.Setenv("LOGTO_COOKIE_SECRET", envCookieSecret)
	t.Setenv("LOGTO_OLD_COOKIE_SECRET", envOldSecret)
	// Caddy's own data directory must not be the developer's.
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	return &hits
}

func readFileSecret(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(fileSecretPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		t.Fatalf("%s is empty", fileSecretPath)
	}
	return s
}

// adapt runs the "caddyfile" adapter and indents its JSON with tabs, as
// Caddy's own golden files are.
func adapt(filename string, body []byte) ([]byte, []caddyconfig.Warning, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return nil, nil, fmt.Errorf("no caddyfile adapter registered")
	}
	result, warnings, err := adapter.Adapt(body, map[string]any{"filename": filename})
	if err != nil {
		return nil, warnings, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, result, "", "\t"); err != nil {
		return nil, warnings, err
	}
	return buf.Bytes(), warnings, nil
}

// errorLine is how the Caddyfile dispenser names where an error is.
var errorLine = regexp.MustCompile(`\bat Caddyfile:\d+\b`)

// errorMismatch says how err fails the expectation, or "" if it meets it.
// Each line of want is a substring err must contain; one of them must name
// the line, so that no case can pass with a message that leaves the user
// searching for the mistake.
func errorMismatch(err error, want string) string {
	lines := strings.Split(want, "\n")
	named := false
	for i, l := range lines {
		lines[i] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), errorPrefix))
		named = named || errorLine.MatchString(lines[i])
	}
	if !named {
		return fmt.Sprintf("the expected error %q must include the position, e.g. \"at Caddyfile:3\"; the error is:\n\t%v", want, err)
	}
	if err == nil {
		return fmt.Sprintf("adapted without error; want an error containing %q", lines)
	}
	for _, l := range lines {
		if !strings.Contains(err.Error(), l) {
			return fmt.Sprintf("error:\n\t%s\nwant it to contain:\n\t%s", err, l)
		}
	}
	return ""
}

// placeholder matches the runtime placeholders that carry secrets.
var placeholder = regexp.MustCompile(`\{(?:env|file)\.[^{}\s]+\}`)

// checkSecrets checks that the Caddyfile's {env.*} and {file.*}
// placeholders are kept as written and that no secret they stand for
// reached the JSON.
func checkSecrets(t *testing.T, caddyfile string, result []byte, fileSecret string) {
	t.Helper()
	for _, secret := range []string{envAppSecret, envCookieSecret, envOldSecret, fileSecret} {
		if bytes.Contains(result, []byte(secret)) {
			t.Errorf("adapted JSON contains the secret %q", secret)
		}
	}
	for _, line := range strings.Split(caddyfile, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, p := range placeholder.FindAllString(line, -1) {
			if !bytes.Contains(result, []byte(p)) {
				t.Errorf("placeholder %s is not kept as written in the adapted JSON", p)
			}
		}
	}
}

// checkLoads decodes the adapted JSON strictly, as `caddy run` does, and
// provisions and validates every module with caddy.Validate (what
// `caddy validate` runs): this calls the logto handler's Provision and
// Validate without starting any server.
func checkLoads(t *testing.T, result []byte) {
	t.Helper()
	var cfg caddy.Config
	if err := caddy.StrictUnmarshalJSON(result, &cfg); err != nil {
		t.Fatalf("adapted JSON is not a Caddy config: %v", err)
	}
	if n := countLogtoHandlers(result); n == 0 {
		t.Fatalf("adapted JSON has no logto handler")
	}
	// Keep the revocation list and certificates in a scratch directory,
	// and the logs out of the test output.
	cfg.StorageRaw = caddyconfig.JSONModuleObject(map[string]string{"root": t.TempDir()}, "module", "file_system", nil)
	if cfg.Logging == nil {
		cfg.Logging = &caddy.Logging{Logs: map[string]*caddy.CustomLog{
			"default": {BaseLog: caddy.BaseLog{WriterRaw: caddyconfig.JSONModuleObject(struct{}{}, "output", "discard", nil)}},
		}}
	}
	start := time.Now()
	err := caddy.Validate(&cfg)
	if took := time.Since(start); took > maxProvisionTime {
		t.Errorf("provisioning took %v; startup must not wait on the IdP", took)
	}
	if err != nil {
		t.Fatalf("adapted config does not load: %v", err)
	}
}

// countLogtoHandlers counts the logto handlers anywhere in a config,
// subroutes included.
func countLogtoHandlers(result []byte) int {
	var v any
	if err := json.Unmarshal(result, &v); err != nil {
		return 0
	}
	var walk func(any) int
	walk = func(v any) int {
		n := 0
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "logto" {
				n++
			}
			for _, e := range v {
				n += walk(e)
			}
		case []any:
			for _, e := range v {
				n += walk(e)
			}
		}
		return n
	}
	return walk(v)
}

// firstDifference shows the first line where two texts differ, with a few
// lines of context: enough to see what changed without a diff library.
func firstDifference(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	from := max(0, i-3)
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d of the JSON\n", i+1)
	for j := from; j < i; j++ {
		fmt.Fprintf(&b, "    %s\n", w[j])
	}
	for j := i; j < min(len(w), i+4); j++ {
		fmt.Fprintf(&b, "  - %s\n", w[j])
	}
	for j := i; j < min(len(g), i+4); j++ {
		fmt.Fprintf(&b, "  + %s\n", g[j])
	}
	return b.String()
}
