package e2e

// The harness: a Caddy binary built once, the dev IdP, Caddy instances with
// their own registered client, a cookie-jar HTTP visitor that signs in
// without a browser, and headless Chromium sessions.

import (
	"bufio"
	"context"
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
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
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

// --- the browser -----------------------------------------------------------------

// browserSlots bounds the Chromiums running at once on a small machine.
var browserSlots = make(chan struct{}, 2)

// browser is one headless Chromium with a fresh profile.
type browser struct {
	t       *testing.T
	ctx     context.Context // the first tab; has a deadline
	mu      sync.Mutex
	errDocs []string // documents answered with 4xx/5xx, in every tab
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	requireChromium(t)
	browserSlots <- struct{}{}
	t.Cleanup(func() { <-browserSlots })

	profile, err := os.MkdirTemp(env.tmp, "chromium-")
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(profile),
	)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithErrorf(func(string, ...any) {}))
	t.Cleanup(func() {
		bcancel()
		acancel()
		removeAll(profile)
	})
	// The first Run starts the browser; it must not carry the deadline.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	t.Cleanup(cancel)
	b := &browser{t: t, ctx: ctx}
	b.watch(ctx)
	return b
}

// newTab opens another tab in the same browser (same cookies).
func (b *browser) newTab() context.Context {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	b.watch(ctx)
	return ctx
}

// watch records every document answered with a 4xx or 5xx in the tab.
func (b *browser) watch(ctx context.Context) {
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventResponseReceived); ok && e.Type == network.ResourceTypeDocument && e.Response.Status >= 400 {
			b.mu.Lock()
			b.errDocs = append(b.errDocs, fmt.Sprintf("%d %s", e.Response.Status, e.Response.URL))
			b.mu.Unlock()
		}
	})
	if err != nil {
		b.t.Fatalf("listen: %v", err)
	}
}

func (b *browser) errorDocuments() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errDocs)
}

// page is what a test reads off the current document.
type page struct {
	URL       string `json:"url"`
	Title     string `json:"title"`
	H1        string `json:"h1"`
	State     string `json:"state"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	UserID    string `json:"userId"`
	Path      string `json:"path"`
	LoginForm bool   `json:"loginForm"`
	Form      string `json:"form"` // action of the IdP's form, if any
	Ready     string `json:"ready"`
}

const pageJS = `(() => {
	const t = (s) => { const e = document.querySelector(s); return e ? e.textContent.trim() : ""; };
	const f = document.querySelector('form[method=post]');
	return {
		url: location.href, title: document.title, h1: t('h1'), state: t('#state'),
		name: t('#name'), email: t('#email'), userId: t('#user-id'), path: t('#path'),
		loginForm: !!document.querySelector('form input[name=username]'),
		form: f ? f.getAttribute('action') : "", ready: document.readyState,
	};
})()`

func readPage(ctx context.Context) (page, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[page](pageJS))
}

// waitPage polls the tab until cond holds for a loaded document.
func (b *browser) waitPage(ctx context.Context, what string, cond func(page) bool) page {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last page
	var lastErr error
	for time.Now().Before(deadline) {
		p, err := readPage(ctx)
		if err == nil {
			last, lastErr = p, nil
			if p.Ready != "loading" && cond(p) {
				return p
			}
		} else {
			lastErr = err
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.screenshot(ctx, "timeout-"+what)
	b.t.Fatalf("waiting for %s: last page %+v (err %v); error documents %v", what, last, lastErr, b.errorDocuments())
	return last
}

func (b *browser) do(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshot(ctx, "failed-"+what)
		b.t.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) navigate(ctx context.Context, u string) {
	b.t.Helper()
	b.do(ctx, "navigate to "+u, chromedp.Navigate(u))
}

func (b *browser) click(ctx context.Context, css string) {
	b.t.Helper()
	b.do(ctx, "click "+css, chromedp.Click(chromedp.CSS(css)))
}

// signIn fills the IdP's login form and presses "Sign in".
func (b *browser) signIn(ctx context.Context, username, password string) {
	b.t.Helper()
	b.waitPage(ctx, "the IdP login form", func(p page) bool { return p.LoginForm && strings.HasSuffix(p.Form, "/login") })
	b.do(ctx, "fill the login form",
		chromedp.SetValue(chromedp.CSS(`input[name=username]`), username),
		chromedp.SetValue(chromedp.CSS(`input[name=password]`), password),
		chromedp.Click(chromedp.CSS(`form button[type=submit]`)),
	)
}

var screenshotName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// screenshot saves what the tab shows, when E2E_SCREENSHOTS is set.
func (b *browser) screenshot(ctx context.Context, name string) {
	if os.Getenv("E2E_SCREENSHOTS") == "" {
		return
	}
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	dir := filepath.Join(env.root, "examples/e2e/testdata/screenshots")
	_ = os.MkdirAll(dir, 0o755)
	file := filepath.Join(dir, screenshotName.ReplaceAllString(b.t.Name()+"-"+name, "_")+".png")
	if err := os.WriteFile(file, buf, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

// evalJSON runs an async script in the page and decodes its result.
func evalJSON[T any](b *browser, ctx context.Context, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// --- small helpers ---------------------------------------------------------------

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
