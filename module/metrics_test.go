package logto

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
)

// scrape returns the series of one application as a scrape of Caddy's
// registry shows them, keyed "name{label=value,...}" without the
// caddy_logto_ prefix and the app label; a histogram by its count.
func scrape(t testing.TB, reg *prometheus.Registry, app string) map[string]float64 {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewPedanticRegistry()
		if err := registerMetrics(reg); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		name, ours := strings.CutPrefix(mf.GetName(), "caddy_logto_")
		if !ours {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			mine := false
			for _, l := range m.GetLabel() {
				if l.GetName() == "app" {
					mine = l.GetValue() == app
					continue
				}
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			if !mine {
				continue
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// moved is what changed between two scrapes.
func moved(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d[k+" (gone)"] = -before[k]
		}
	}
	return d
}

// watch scrapes the application's series now; its result says what moved
// since.
func watch(t testing.TB, app string) func() map[string]float64 {
	before := scrape(t, nil, app)
	return func() map[string]float64 { return moved(before, scrape(t, nil, app)) }
}

func mustMove(t testing.TB, what string, got, want map[string]float64) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("%s: the series moved by\n%s\nwant\n%s", what, deltaLines(got), deltaLines(want))
	}
}

func deltaLines(d map[string]float64) string {
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		lines = append(lines, fmt.Sprintf("\t%s %+g", k, d[k]))
	}
	return strings.Join(lines, "\n")
}

// TestMetricsSignIn: one sign-in moves exactly its counters: the
// redirect, started, completed, the signed-in request after it, and one
// call each to discovery, the token endpoint and the keys.
func TestMetricsSignIn(t *testing.T) {
	hx := newHarness(t, nil, nil)
	since := watch(t, hx.idp.appID)
	b := newBrowser()
	hx.signIn(b, "/docs", "user-1")
	mustPass(t, hx.serve(http.MethodGet, "/docs", b, navigation()), "user-1")
	mustMove(t, "a sign-in", since(), map[string]float64{
		"requests_total{decision=redirected}":                       1,
		"requests_total{decision=allowed}":                          1,
		"sign_ins_total{result=started}":                            1,
		"sign_ins_total{result=completed}":                          1,
		"logto_request_duration_seconds{call=discovery,outcome=ok}": 1,
		"logto_request_duration_seconds{call=token,outcome=ok}":     1,
		"logto_request_duration_seconds{call=keys,outcome=ok}":      1,
	})

	since = watch(t, hx.idp.appID)
	hx.serve(http.MethodGet, "/docs", newBrowser(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	mustMove(t, "an anonymous fetch", since(), map[string]float64{"requests_total{decision=unauthorized}": 1})
}

// TestMetricsSignInFailures: each way a callback fails is counted once,
// as failed and by its reason.
func TestMetricsSignInFailures(t *testing.T) {
	for _, tc := range []struct {
		reason string
		run    func(hx *harness)
		more   map[string]float64
	}{
		{"bad_state", func(hx *harness) {
			hx.serve(http.MethodGet, "/logto/sign-in-callback?state=forged&code=abc", newBrowser(), navigation())
		}, nil},
		{"bad_state", func(hx *harness) {
			// Well formed, but no attempt of this browser has it.
			b := newBrowser()
			hx.startSignIn(b, "/")
			q := url.Values{"code": {"abc"}, "state": {strings.Repeat("A", 32)}}
			hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b, navigation())
		}, map[string]float64{"sign_ins_total{result=started}": 1}},
		{"logto_error", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			q := url.Values{"error": {"access_denied"}, "state": {auth.Query().Get("state")}}
			hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b, navigation())
		}, map[string]float64{"sign_ins_total{result=started}": 1}},
		{"expired_attempt", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			hx.clock.Advance(11 * time.Minute)
			hx.mustRedirectToAuth(hx.t, hx.serve(http.MethodGet, hx.callbackURL(auth, "abc"), b, navigation()))
		}, map[string]float64{"sign_ins_total{result=started}": 2}},
		{"bad_response", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			q := url.Values{"state": {auth.Query().Get("state")}, "iss": {hx.idp.issuer}}
			hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b, navigation())
		}, map[string]float64{"sign_ins_total{result=started}": 1}},
		{"exchange_failed", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			hx.serve(http.MethodGet, hx.callbackURL(auth, "not-a-code-the-idp-issued"), b, navigation())
		}, map[string]float64{
			"sign_ins_total{result=started}":                             1,
			"logto_request_duration_seconds{call=token,outcome=refused}": 1,
		}},
		{"invalid_client", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			code := hx.idp.issueCode(auth, "user-1")
			hx.idp.refuseWith.Store(&oauthRefusal{http.StatusUnauthorized, "invalid_client", "client authentication failed"})
			hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
		}, map[string]float64{
			"sign_ins_total{result=started}":                             1,
			"logto_request_duration_seconds{call=token,outcome=refused}": 1,
		}},
		{"token_invalid", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			code := hx.idp.issueCodeWith(auth, "user-1", hx.idp.tokenEditedClaims(func(c map[string]any) { c["nonce"] = "another" }))
			hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
		}, map[string]float64{
			"sign_ins_total{result=started}":                        1,
			"logto_request_duration_seconds{call=token,outcome=ok}": 1,
			"logto_request_duration_seconds{call=keys,outcome=ok}":  1,
		}},
		{"unavailable", func(hx *harness) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			code := hx.idp.issueCode(auth, "user-1")
			hx.idp.failMode.Store(idp500)
			hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
		}, map[string]float64{
			"sign_ins_total{result=started}":                           1,
			"logto_request_duration_seconds{call=token,outcome=error}": 1,
		}},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			hx := newHarness(t, nil, nil)
			// Discovery is fetched once, before.
			hx.startSignIn(newBrowser(), "/")
			since := watch(t, hx.idp.appID)
			tc.run(hx)
			want := map[string]float64{
				"sign_ins_total{result=failed}":                    1,
				"sign_in_failures_total{reason=" + tc.reason + "}": 1,
			}
			maps.Copy(want, tc.more)
			if want["sign_ins_total{result=started}"] > 0 {
				want["requests_total{decision=redirected}"] = 1
			}
			mustMove(t, tc.reason, since(), want)
		})
	}
}

// TestMetricsSignInUnavailable: a sign-in that cannot start because Logto
// is unreachable fails as unavailable; the request itself, a 502, is no
// decision of the gate.
func TestMetricsSignInUnavailable(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.idp.down.Store(true)
	since := watch(t, hx.idp.appID)
	hx.serve(http.MethodGet, "/", newBrowser(), navigation()).mustHandlerError(t, http.StatusBadGateway)
	mustMove(t, "a sign-in while Logto is down", since(), map[string]float64{
		"sign_ins_total{result=failed}":                                1,
		"sign_in_failures_total{reason=unavailable}":                   1,
		"logto_request_duration_seconds{call=discovery,outcome=error}": 1,
	})
}

// TestMetricsRefresh: a refresh is counted with its result; Logto down
// is unavailable (the session goes on), a revoked grant invalid_grant.
func TestMetricsRefresh(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	hx.clock.Advance(time.Hour)
	since := watch(t, hx.idp.appID)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	mustMove(t, "a refresh", since(), map[string]float64{
		"refreshes_total{result=refreshed}":                     1,
		"requests_total{decision=allowed}":                      1,
		"logto_request_duration_seconds{call=token,outcome=ok}": 1,
	})

	hx.clock.Advance(time.Hour)
	hx.idp.failMode.Store(idp500)
	since = watch(t, hx.idp.appID)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	mustMove(t, "a refresh while Logto fails", since(), map[string]float64{
		"refreshes_total{result=unavailable}":                      1,
		"requests_total{decision=allowed}":                         1,
		"logto_request_duration_seconds{call=token,outcome=error}": 1,
	})

	hx.idp.failMode.Store(idpOK)
	hx.idp.revokeUser("user-1")
	hx.clock.Advance(refreshRetry)
	since = watch(t, hx.idp.appID)
	hx.serve(http.MethodGet, "/", b, fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	mustMove(t, "a refresh of a revoked grant", since(), map[string]float64{
		"refreshes_total{result=invalid_grant}":                      1,
		"requests_total{decision=unauthorized}":                      1,
		"logto_request_duration_seconds{call=token,outcome=refused}": 1,
		"revoked_sessions{}":                                         1, // the dead session, remembered
	})
}

// TestMetricsRefreshShared: requests that wait for another's refresh are
// counted as shared; the refresh token is redeemed once.
func TestMetricsRefreshShared(t *testing.T) {
	idp := newFakeIdP(t)
	idp.refreshDelay = 300 * time.Millisecond
	hx := newHarness(t, idp, nil)
	b := hx.signedIn()
	hx.clock.Advance(time.Hour)
	since := watch(t, idp.appID)
	const n = 3
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, repl, w := newRequest(http.MethodGet, "/", nil, b.send, fetchAPI())
			<-start
			hx.serveRequest(r, repl, w, nil)
		}()
	}
	close(start)
	wg.Wait()
	got := since()
	if got["refreshes_total{result=refreshed}"] != 1 || got["refreshes_total{result=shared}"] < 1 ||
		got["refreshes_total{result=shared}"] > n-1 || got["requests_total{decision=allowed}"] != n {
		t.Errorf("%d requests at once for one expired session: %v, want one refreshed, the others shared or not counted", n, got)
	}
}

// TestMetricsForbiddenAndStepUp: a rule a signed-in user fails is
// forbidden; a session that never asked for what a route needs is sent
// to sign in again (step_up), and a fetch gets the step-up 401.
func TestMetricsForbiddenAndStepUp(t *testing.T) {
	idp := newFakeIdP(t)
	plain := newHarness(t, idp, nil)
	b := plain.signedIn()

	strict := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"nobody"}}} })
	since := watch(t, idp.appID)
	strict.serve(http.MethodGet, "/", b.clone(), fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	strict.mustRedirectToAuth(t, strict.serve(http.MethodGet, "/", b.clone(), navigation()))
	mustMove(t, "a session without the roles scope", since(), map[string]float64{
		"requests_total{decision=step_up}": 2,
		"sign_ins_total{result=started}":   1,
	})

	c := strict.signedIn()
	since = watch(t, idp.appID)
	strict.serve(http.MethodGet, "/", c, navigation()).mustHandlerError(t, http.StatusForbidden)
	mustMove(t, "a user the rule refuses", since(), map[string]float64{"requests_total{decision=forbidden}": 1})
}

// TestMetricsCountOncePerRequest: a request two logto blocks of one
// application see (a site-wide block, then a stricter one) is counted
// once, with the decision of the last.
func TestMetricsCountOncePerRequest(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) { h.Pass = true })
	admin := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"editor"}}} })
	strict := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"nobody"}}} })
	b := admin.signedIn()

	chain := func(second *Handler, b *tbrowser) error {
		r, _, w := newRequest(http.MethodGet, "/admin", nil, b.send, fetchAPI())
		return site.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return second.ServeHTTP(w, r, nopNext)
		}))
	}
	since := watch(t, idp.appID)
	if err := chain(admin.h, b); err != nil {
		t.Fatal(err)
	}
	mustMove(t, "two blocks letting a user through", since(), map[string]float64{"requests_total{decision=allowed}": 1})

	since = watch(t, idp.appID)
	if statusOf(chain(strict.h, b)) != http.StatusForbidden {
		t.Fatal("the strict block let the user through")
	}
	mustMove(t, "a pass block, then a refusing one", since(), map[string]float64{"requests_total{decision=forbidden}": 1})

	since = watch(t, idp.appID)
	if err := chain(admin.h, newBrowser()); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("anonymous fetch: %v", err)
	}
	mustMove(t, "a pass block, then a protecting one", since(), map[string]float64{"requests_total{decision=unauthorized}": 1})
}

// TestMetricsBearer: access tokens are counted by their RFC 6750 result,
// and the requests by the gate's decision.
func TestMetricsBearer(t *testing.T) {
	hx := bearerHarness(t, func(h *Handler) {
		h.Require = []Rule{{Kind: "scope", Values: []string{"read:data"}}}
	})
	for _, tc := range []struct {
		what     string
		opts     []reqOpt
		result   string
		decision string
	}{
		{"a good token", []reqOpt{bearer(hx.idp.m2mToken("read:data"))}, "accepted", "allowed"},
		{"a token without the scope", []reqOpt{bearer(hx.idp.m2mToken(""))}, "insufficient_scope", "forbidden"},
		{"an expired token", []reqOpt{bearer(hx.idp.accessToken(func(_, c map[string]any) { c["exp"] = hx.idp.now().Add(-time.Hour).Unix() }))}, "invalid_token", "unauthorized"},
		{"two Authorization headers", []reqOpt{bearer("a"), bearer("b")}, "invalid_request", "unauthorized"},
	} {
		since := watch(t, hx.idp.appID)
		hx.serve(http.MethodGet, "/api", nil, append([]reqOpt{fetchAPI()}, tc.opts...)...)
		want := map[string]float64{
			"bearer_tokens_total{result=" + tc.result + "}": 1,
			"requests_total{decision=" + tc.decision + "}":  1,
		}
		if tc.result == "accepted" {
			want["logto_request_duration_seconds{call=discovery,outcome=ok}"] = 1
			want["logto_request_duration_seconds{call=keys,outcome=ok}"] = 1
		}
		mustMove(t, tc.what, since(), want)
	}
}

// TestMetricsBearerOnlyApp: a bearer_only block without app_id is counted
// under its endpoint.
func TestMetricsBearerOnlyApp(t *testing.T) {
	idp := newFakeIdP(t)
	hx := newHarness(t, idp, func(h *Handler) {
		h.AppID, h.AppSecret = "", ""
		h.Bearer = []string{bearerAPI}
		h.BearerOnly = true
	})
	since := watch(t, idp.srv.URL)
	hx.serve(http.MethodGet, "/api", nil, fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	mustMove(t, "no token on a bearer_only route", since(), map[string]float64{"requests_total{decision=unauthorized}": 1})
}

// TestMetricsBackChannelAndRevoked: back-channel logouts are counted, and
// the logout list's size is a gauge.
func TestMetricsBackChannelAndRevoked(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.signedIn()
	since := watch(t, hx.idp.appID)
	mustAccept(t, hx.postLogout(hx.idp.logoutToken("user-1", nil)))
	hx.postLogout("not-a-token").mustHandlerError(t, http.StatusBadRequest)
	mustMove(t, "one logout accepted, one rejected", since(), map[string]float64{
		"back_channel_logouts_total{result=accepted}": 1,
		"back_channel_logouts_total{result=rejected}": 1,
		"revoked_sessions{}":                          1,
	})

	hx.clock.Advance(2 * time.Second)
	b := hx.signedIn()
	since = watch(t, hx.idp.appID)
	res := hx.serve(http.MethodGet, "/logto/sign-out", b, navigation())
	if res.err != nil {
		t.Fatal(res.err)
	}
	mustMove(t, "a sign-out", since(), map[string]float64{
		"revoked_sessions{}": 1,
		"logto_request_duration_seconds{call=revocation,outcome=ok}": 1,
	})
}

// TestMetricsUserinfo: a rule that reads userinfo times the call.
func TestMetricsUserinfo(t *testing.T) {
	idp := newFakeIdP(t)
	idp.mu.Lock()
	idp.infoOnly["user-1"] = []string{"roles"}
	idp.mu.Unlock()
	hx := newHarness(t, idp, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"admin"}}} })
	b := hx.signedIn()
	since := watch(t, idp.appID)
	mustPass(t, hx.serve(http.MethodGet, "/", b, fetchAPI()), "user-1")
	mustMove(t, "a rule read from userinfo", since(), map[string]float64{
		"requests_total{decision=allowed}":                         1,
		"logto_request_duration_seconds{call=userinfo,outcome=ok}": 1,
	})
}

// TestMetricsReload: Caddy gives each config its own registry. The
// collectors go into each, once however many blocks register them, and a
// reload (the new config provisioned, then the old one unloaded) keeps
// the application's counters going, even when it brings another client (a
// rotated app_secret); once no config has the application, its series are
// gone.
func TestMetricsReload(t *testing.T) {
	idp := newFakeIdP(t)
	testCaddyContext(t) // loads the Caddy config the contexts below derive from
	load := func(ctx caddy.Context, secret string) *Handler {
		t.Helper()
		raw := fmt.Sprintf(`{"endpoint":%q,"app_id":%q,"app_secret":%q}`, idp.srv.URL, idp.appID, secret)
		mod, err := ctx.LoadModuleByID("http.handlers.logto", json.RawMessage(raw))
		if err != nil {
			t.Fatal(err)
		}
		return mod.(*Handler)
	}
	old, unloadOld := caddy.NewContext(caddy.ActiveContext())
	h1 := load(old, idp.appSecret)
	load(old, idp.appSecret) // a second block registers them again
	if err := registerMetrics(old.GetMetricsRegistry()); err != nil {
		t.Fatalf("registering again in one registry: %v", err)
	}
	h1.client.metrics.signIn(signInStarted)
	before := scrape(t, old.GetMetricsRegistry(), idp.appID)
	if before["sign_ins_total{result=started}"] != 1 {
		t.Fatalf("the first config's registry: %v", before)
	}

	cur, unloadCur := caddy.NewContext(caddy.ActiveContext())
	defer unloadCur()
	h2 := load(cur, "rotated-"+idp.appSecret)
	if h2.client == h1.client {
		t.Fatal("a rotated secret shares the old client")
	}
	unloadOld()
	h2.client.metrics.signIn(signInStarted)
	after := scrape(t, cur.GetMetricsRegistry(), idp.appID)
	if got := after["sign_ins_total{result=started}"]; got != 2 {
		t.Errorf("sign-ins started after the reload: %v, want 2 (the counter goes on)", got)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after))) {
		t.Errorf("the series changed across the reload:\nbefore %v\nafter  %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}

	unloadCur()
	if left := scrape(t, cur.GetMetricsRegistry(), idp.appID); len(left) > 0 {
		t.Errorf("series of an application no config has: %v", slices.Sorted(maps.Keys(left)))
	}
}

// TestMetricsRegistryConflict: a registry holding other collectors under
// the module's names is reported, not a panic.
func TestMetricsRegistryConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "caddy_logto_requests_total", Help: "not ours"}, []string{"app", "decision"}))
	if err := registerMetrics(reg); err == nil {
		t.Error("a clashing collector was not reported")
	}
	if err := registerMetrics(nil); err != nil {
		t.Errorf("no registry: %v", err)
	}
}

// TestMetricsLabelsBounded: every label the module's series carry comes
// from a fixed set (the application aside): never a user, a path or a
// token, whatever the requests were.
func TestMetricsLabelsBounded(t *testing.T) {
	hx := newHarness(t, nil, nil)
	b := hx.signedIn()
	hx.serve(http.MethodGet, "/some/path?q=1", b, navigation())
	hx.serve(http.MethodGet, "/logto/sign-in-callback?state=forged", nil, navigation())
	allowed := map[string][]string{
		"decision": decisionNames[decAllowed:],
		"result":   slices.Concat(signInResultNames[:], refreshResultNames[:], bearerResultNames[:], logoutResultNames[:]),
		"reason":   failReasonNames[:],
		"call":     callNames[:],
		"outcome":  outcomeNames[:],
	}
	reg := prometheus.NewPedanticRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "app" {
					continue
				}
				if !slices.Contains(allowed[l.GetName()], l.GetValue()) {
					t.Errorf("%s has label %s=%q, not one of a fixed set", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestMetricsCountingAllocatesNothing: what the hot path adds, counting
// the request's decision, allocates nothing.
func TestMetricsCountingAllocatesNothing(t *testing.T) {
	m := acquireAppMetrics("alloc-test")
	defer m.release()
	st := &requestState{}
	if n := testing.AllocsPerRun(1000, func() {
		st.decision = admission(st)
		m.count(st.decision)
	}); n != 0 {
		t.Errorf("counting a request allocates %v times", n)
	}
}

// TestMetricsRefusalAllocatesNothing: classifying the gate's answers
// (a redirect, a 401, a 403) allocates nothing either.
func TestMetricsRefusalAllocatesNothing(t *testing.T) {
	errs := []error{nil, caddyhttp.Error(http.StatusUnauthorized, nil), caddyhttp.Error(http.StatusForbidden, nil)}
	if n := testing.AllocsPerRun(1000, func() {
		for _, err := range errs {
			refusal(decNone, err)
		}
	}); n != 0 {
		t.Errorf("classifying a refusal allocates %v times", n)
	}
}
