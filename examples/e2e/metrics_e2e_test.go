package e2e

// The module's metrics, scraped from Caddy's admin endpoint (/metrics) the
// way Prometheus would, after each thing a visitor, an API client or Logto
// does: every caddy_logto_ series of the application must move by exactly
// what happened, and a reload must neither reset nor duplicate them.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricsCaddyfile is a site with the admin endpoint on a loopback port: a
// site-wide block that also takes API tokens, and a stricter block for
// /admin of the same application that nobody passes.
func metricsCaddyfile(adminPort int, storage string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	default_bind 127.0.0.1
	storage file_system %s
}

{$SITE_ADDRESS} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		bearer %s
	}
	logto /admin* {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		require role superuser
	}
	respond "ok {http.auth.user.id}"
}
`, adminPort, storage, apiResource)
}

// adminAPI is a Caddy's admin endpoint.
type adminAPI struct {
	t    *testing.T
	base string // http://127.0.0.1:<port>
	app  string // the app label whose series scrape returns
}

// scrape reads /metrics and returns the app's caddy_logto_ series, keyed
// "name{label=value,...}" without the prefix and the app label; a
// histogram by its count.
func (a *adminAPI) scrape() map[string]float64 {
	a.t.Helper()
	out := map[string]float64{}
	for _, line := range a.lines() {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "caddy_logto_"), "{")
		labels, value, ok2 := strings.Cut(rest, "} ")
		if !ok || !ok2 || strings.HasSuffix(name, "_bucket") || strings.HasSuffix(name, "_sum") {
			continue
		}
		var others []string
		mine := false
		for _, l := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(l, "=")
			v = strings.Trim(v, `"`)
			if k == "app" {
				mine = v == a.app
				continue
			}
			others = append(others, k+"="+v)
		}
		if !mine {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			a.t.Fatalf("/metrics: %q: %v", line, err)
		}
		key := strings.TrimSuffix(name, "_count") + "{" + strings.Join(others, ",") + "}"
		if _, dup := out[key]; dup {
			a.t.Errorf("/metrics has %s twice", key)
		}
		out[key] = f
	}
	return out
}

// lines are the caddy_logto_ lines of /metrics (no comments).
func (a *adminAPI) lines() []string {
	a.t.Helper()
	resp, err := http.Get(a.base + "/metrics")
	if err != nil {
		a.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		a.t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "caddy_logto_") {
			out = append(out, sc.Text())
		}
	}
	return out
}

// load replaces Caddy's config with a Caddyfile, even an identical one.
func (a *adminAPI) load(caddyfile string) {
	a.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, a.base+"/load", strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate") // reload the same config too
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		a.t.Fatalf("POST /load: %s\n%s", resp.Status, b)
	}
}

// step checks that what happened moved the app's series by exactly want,
// and nothing else.
func (a *adminAPI) step(what string, want map[string]float64, happen func()) {
	a.t.Helper()
	before := a.scrape()
	happen()
	after := a.scrape()
	got := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			got[k] = v - before[k]
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			got[k+" (gone)"] = -before[k]
		}
	}
	if !maps.Equal(got, want) {
		a.t.Errorf("%s: the series moved by\n%s\nwant\n%s", what, deltas(got), deltas(want))
	}
}

func deltas(d map[string]float64) string {
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		lines = append(lines, fmt.Sprintf("\t%s %+g", k, d[k]))
	}
	return strings.Join(lines, "\n")
}

// TestMetricsScrape runs a Caddy with its admin endpoint on a loopback port
// and scrapes /metrics after a sign-in, a refresh, a 403, API calls with a
// good and a bad access token, a failed sign-in and a rejected back-channel
// logout: each moves its counters by exactly what happened. A reload keeps
// every value (rate() sees no reset) and duplicates nothing; a config
// without the application drops its series.
func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	requireStack(t)
	// Short ID tokens, so the session is refreshed within the test: with a
	// lifetime of 10 s the module refreshes 2 s before expiry (a quarter of
	// it), 8 s after sign-in at the earliest.
	const idTokenTTL = 10 * time.Second
	idp := startTestIdP(t, map[string]string{"DEVIDP_ID_TOKEN_TTL": strconv.Itoa(int(idTokenTTL / time.Second))})
	port, site, app := localSite(t, idp)
	adminPort := freePort(t)
	caddyfile := metricsCaddyfile(adminPort, filepath.Join(t.TempDir(), "storage"))
	runCaddy(t, "metrics", port, caddyfile, caddyVars(idp, app, "SITE_ADDRESS", site))
	admin := &adminAPI{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", adminPort), app: app.id}
	if s := admin.scrape(); len(s) == 0 || s["requests_total{decision=allowed}"] != 0 {
		t.Fatalf("before any request, the app's series are not all there at zero: %v", s)
	}

	v := newVisitor(t)
	var signedIn time.Time
	admin.step("a sign-in, then the page", map[string]float64{
		"requests_total{decision=redirected}":                       1,
		"requests_total{decision=allowed}":                          1,
		"sign_ins_total{result=started}":                            1,
		"sign_ins_total{result=completed}":                          1,
		"logto_request_duration_seconds{call=discovery,outcome=ok}": 1,
		"logto_request_duration_seconds{call=token,outcome=ok}":     1,
		"logto_request_duration_seconds{call=keys,outcome=ok}":      1,
	}, func() {
		signInAs(t, v, site, idp.base, "/", "alice")
		signedIn = time.Now()
		expectStatus(t, "alice after signing in", v.navigate(site+"/"), http.StatusOK)
	})

	admin.step("a 403 from the /admin block", map[string]float64{
		"requests_total{decision=forbidden}": 1,
	}, func() {
		expectStatus(t, "alice on /admin", v.navigate(site+"/admin"), http.StatusForbidden)
	})

	reporter, _ := idp.machineApps(t)
	m2m := idp.m2mToken(t, reporter, url.Values{"resource": {apiResource}, "scope": {"read:docs"}})
	admin.step("an API call with a good token and one with a bad one", map[string]float64{
		"bearer_tokens_total{result=accepted}":      1,
		"bearer_tokens_total{result=invalid_token}": 1,
		"requests_total{decision=allowed}":          1,
		"requests_total{decision=unauthorized}":     1,
	}, func() {
		expectStatus(t, "the M2M app", bearerReq(t, "GET", site+"/data", "Authorization", "Bearer "+m2m), http.StatusOK)
		mustChallenge(t, "a bad token", bearerReq(t, "GET", site+"/data", "Authorization", "Bearer not.a.token"), 401, "invalid_token")
	})

	admin.step("a callback with a state no attempt has", map[string]float64{
		"sign_ins_total{result=failed}":            1,
		"sign_in_failures_total{reason=bad_state}": 1,
	}, func() {
		q := url.Values{"state": {strings.Repeat("x", 32)}, "code": {"forged"}}
		expectStatus(t, "a forged callback", newVisitor(t).navigate(site+"/logto/sign-in-callback?"+q.Encode()), http.StatusBadRequest)
	})

	admin.step("a back-channel logout that is no token", map[string]float64{
		"back_channel_logouts_total{result=rejected}": 1,
	}, func() {
		if got := postLogoutToken(t, site, "garbage"); got != http.StatusBadRequest {
			t.Errorf("garbage logout token: %d, want 400", got)
		}
	})

	// Past the refresh point (whole seconds: the ID token's iat is one).
	time.Sleep(time.Until(signedIn.Add(idTokenTTL - time.Second)))
	admin.step("a navigation that refreshes the session", map[string]float64{
		"refreshes_total{result=refreshed}":                     1,
		"requests_total{decision=allowed}":                      1,
		"logto_request_duration_seconds{call=token,outcome=ok}": 1,
	}, func() {
		expectStatus(t, "alice past her ID token's refresh point", v.navigate(site+"/"), http.StatusOK)
	})

	admin.step("a reload of the same config", map[string]float64{}, func() { admin.load(caddyfile) })
	admin.step("a navigation after the reload", map[string]float64{
		"requests_total{decision=allowed}": 1,
	}, func() {
		expectStatus(t, "alice after the reload", v.navigate(site+"/"), http.StatusOK)
	})
	t.Logf("scrape after the reload:\n%s", strings.Join(slices.DeleteFunc(admin.lines(), func(l string) bool {
		return strings.Contains(l, "_bucket{") || !strings.Contains(l, `app="`+app.id+`"`)
	}), "\n"))

	globals, _, _ := strings.Cut(caddyfile, "{$SITE_ADDRESS}")
	admin.load(globals + "{$SITE_ADDRESS} {\n\trespond \"no sign-in here\"\n}\n")
	if left := admin.scrape(); len(left) > 0 {
		t.Errorf("a config without the application still has its series: %v", slices.Sorted(maps.Keys(left)))
	}
}
