package e2e

// The real browser: headless Chromium with a fresh profile, driven by
// chromedp, and what a test reads off its pages. The static site's browser
// tests are in browser_test.go.

import (
	"context"
	"fmt"
	"os"
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
