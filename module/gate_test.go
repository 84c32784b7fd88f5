package logto

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// serveStacked sends one request through two logto handlers, one after the
// other, as Caddy does for two blocks of one site, with a recording next.
func serveStacked(t *testing.T, first, second *harness, target string, b *tbrowser, opts ...reqOpt) *result {
	t.Helper()
	r, _, w := newRequest(http.MethodGet, target, nil, append([]reqOpt{b.send}, opts...)...)
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	res := &result{rec: w, ph: map[string]string{}, known: map[string]bool{}}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.next = true
		res.nextReq = r
		rr := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		res.ph["http.auth.user.id"] = rr.ReplaceAll("{http.auth.user.id}", "")
		w.WriteHeader(http.StatusOK)
		return nil
	})
	res.err = first.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return second.h.ServeHTTP(w, r, next)
	}))
	b.absorb(t, res)
	return res
}

// signInAt signs b in through the /logto/sign-in endpoint of hx (which may
// be a pass block).
func signInAt(t *testing.T, hx *harness, b *tbrowser) {
	t.Helper()
	auth := hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/logto/sign-in", b))
	code := hx.idp.issueCode(auth, "user-1")
	res := hx.serve(http.MethodGet, hx.callbackURL(auth, code), b, navigation())
	if res.err != nil || b.get(sessionCookie) == "" {
		t.Fatalf("sign-in did not complete: %v", res.err)
	}
}

// adminOnly protects /admin* only, as `logto /admin* { ... }` does.
func adminOnly(h *Handler) {
	h.ProtectRaw = caddyhttp.RawMatcherSets{{"path": json.RawMessage(`["/admin*"]`)}}
}

// TestStricterBlockEnforcesItsOwnLimits stops a stolen or forgotten
// session from reaching a stricter section: behind a site-wide block, a
// `logto /admin* { idle_timeout 1s  session_lifetime 2s }` block must apply
// its own limits even though the first block already found the user (it
// used to reuse that user unchecked, and /admin answered 200 after 3.5 s).
func TestStricterBlockEnforcesItsOwnLimits(t *testing.T) {
	for _, c := range []struct {
		name    string
		limits  func(h *Handler)
		advance []time.Duration
	}{
		{"idle_timeout", func(h *Handler) { h.IdleTimeout = caddy.Duration(time.Second) }, []time.Duration{2500 * time.Millisecond}},
		{"session_lifetime", func(h *Handler) { h.SessionLifetime = caddy.Duration(2 * time.Second) },
			[]time.Duration{time.Second, time.Second, time.Second}},
		{"both, as in the report", func(h *Handler) {
			h.IdleTimeout = caddy.Duration(time.Second)
			h.SessionLifetime = caddy.Duration(2 * time.Second)
		}, []time.Duration{3500 * time.Millisecond}},
	} {
		t.Run(c.name, func(t *testing.T) {
			idp := newFakeIdP(t)
			site := newHarness(t, idp, func(h *Handler) { h.Pass = true })
			admin := newHarness(t, idp, func(h *Handler) { adminOnly(h); c.limits(h) })
			b := newBrowser()
			signInAt(t, site, b)
			mustPass(t, serveStacked(t, site, admin, "/admin/", b, fetchAPI()), "user-1")
			for _, d := range c.advance {
				idp.clock.Advance(d)
				// Activity on the public part in between must not revive
				// the session for /admin.
				serveStacked(t, site, admin, "/", b, fetchAPI())
			}
			res := serveStacked(t, site, admin, "/admin/", b, fetchAPI())
			if res.next {
				t.Fatalf("/admin/ let the session through (as %q) past the block's own limit", res.ph["http.auth.user.id"])
			}
			res.mustHandlerError(t, http.StatusUnauthorized)
			// The lenient block still knows the user: its own limits hold.
			mustPass(t, serveStacked(t, site, admin, "/", b, fetchAPI()), "user-1")
		})
	}
}

// TestStricterBlockFirstDoesNotSignOutTheSite: the same two blocks in the
// other order. The /admin block runs first on every request (what it does
// not protect goes on anonymous); its own limits must not end the session
// for the rest of the site, nor clear the cookie, when the request is not
// one it protects.
func TestStricterBlockFirstDoesNotSignOutTheSite(t *testing.T) {
	idp := newFakeIdP(t)
	admin := newHarness(t, idp, func(h *Handler) { adminOnly(h); h.IdleTimeout = caddy.Duration(time.Second) })
	site := newHarness(t, idp, func(h *Handler) { h.Pass = true })
	b := newBrowser()
	signInAt(t, site, b)
	mustPass(t, serveStacked(t, admin, site, "/admin/", b, fetchAPI()), "user-1")
	idp.clock.Advance(3 * time.Second)
	res := serveStacked(t, admin, site, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if c := res.setCookie(t, sessionCookie); c != nil && c.Value == "" {
		t.Fatal("a request the strict block does not protect cleared the session cookie")
	}
	serveStacked(t, admin, site, "/admin/", b, fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
	mustPass(t, serveStacked(t, admin, site, "/", b, fetchAPI()), "user-1")
}

// TestIdleTrackedWhicheverBlockHasTheTimeout stops an idle timeout from
// ending sessions that are in use: when only the second block has an
// idle_timeout, activity seen by the first (which runs first and finds the
// user) still counts, so a user active on the site is not thrown out of
// /admin; and a session once left idle too long stays ended for /admin
// however busy the public part is afterwards.
func TestIdleTrackedWhicheverBlockHasTheTimeout(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) { h.Pass = true })
	admin := newHarness(t, idp, func(h *Handler) {
		adminOnly(h)
		h.IdleTimeout = caddy.Duration(10 * time.Minute)
	})
	b := newBrowser()
	signInAt(t, site, b)
	for range 6 {
		idp.clock.Advance(4 * time.Minute)
		mustPass(t, serveStacked(t, site, admin, "/", b, fetchAPI()), "user-1")
	}
	mustPass(t, serveStacked(t, site, admin, "/admin/", b, fetchAPI()), "user-1")

	idp.clock.Advance(11 * time.Minute)
	for range 3 {
		idp.clock.Advance(time.Minute)
		mustPass(t, serveStacked(t, site, admin, "/", b, fetchAPI()), "user-1")
	}
	serveStacked(t, site, admin, "/admin/", b, fetchAPI()).mustHandlerError(t, http.StatusUnauthorized)
}

// TestStricterBlockDropsTheEarlierIdentity stops a session past a stricter
// block's own limits from still naming the user to what that block
// serves: behind a site block with `header X-User-Id {http.auth.user.id}`
// and a token_resource, `logto /admin* { pass  idle_timeout 10m }` treats
// a user idle for 15 minutes as anonymous, yet the upstream used to get the
// site block's X-User-Id and {http.auth.logto.access_token}. Whatever the
// earlier block set for that user goes when this block drops the user.
func TestStricterBlockDropsTheEarlierIdentity(t *testing.T) {
	idp := newFakeIdP(t)
	idp.permissions[bearerAPI] = []string{"read:data"}
	site := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.TokenResource = bearerAPI
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}", "X-Token": "{http.auth.logto.access_token}"}
	})
	admin := newHarness(t, idp, func(h *Handler) {
		adminOnly(h)
		h.Pass = true
		h.IdleTimeout = caddy.Duration(10 * time.Minute)
	})
	b := newBrowser()
	signInAt(t, site, b)
	res := serveStacked(t, site, admin, "/admin/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if res.nextReq.Header.Get("X-User-Id") != "user-1" || placeholderOf(res, "http.auth.logto.access_token") == "" {
		t.Fatal("the site block set no identity for a signed-in user; the test tests nothing")
	}

	idp.clock.Advance(15 * time.Minute)
	res = serveStacked(t, site, admin, "/admin/", b, fetchAPI())
	mustPass(t, res, "")
	for _, name := range []string{"X-User-Id", "X-Token"} {
		if got := res.nextReq.Header.Get(name); got != "" {
			t.Errorf("the upstream of a block that dropped the user got %s: %.20q", name, got)
		}
	}
	for _, key := range []string{"http.auth.logto.access_token", "http.auth.logto.organization_id", "http.auth.logto.id_token"} {
		if got := placeholderOf(res, key); got != "" {
			t.Errorf("{%s} = %.20q for a user the block dropped", key, got)
		}
	}
	// The site block still knows the user.
	res = serveStacked(t, site, admin, "/", b, fetchAPI())
	mustPass(t, res, "user-1")
	if res.nextReq.Header.Get("X-User-Id") != "user-1" {
		t.Error("the site block lost its identity header")
	}
}

// mustNotBeShared checks a response that sets a cookie cannot be stored by
// a shared cache.
func mustNotBeShared(t *testing.T, what string, h http.Header) {
	t.Helper()
	if len(h.Values("Set-Cookie")) == 0 {
		t.Fatalf("%s: no cookie set; the test does not test anything", what)
	}
	cc := strings.ToLower(strings.Join(h.Values("Cache-Control"), ", "))
	if !strings.Contains(cc, "private") && !strings.Contains(cc, "no-store") {
		t.Errorf("%s: Cache-Control %q lets a shared cache store a response that sets the session cookie", what, cc)
	}
	if strings.Contains(cc, "public") || strings.Contains(cc, "s-maxage") {
		t.Errorf("%s: Cache-Control %q", what, cc)
	}
}

// publicNext is content that asks to be cached by everyone, as a static
// file behind `header Cache-Control "public, max-age=3600"` or an upstream
// might.
var publicNext = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "public, max-age=3600, s-maxage=3600")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte("page"))
	return err
})

func (hx *harness) servePublic(target string, b *tbrowser, opts ...reqOpt) *result {
	r, _, w := newRequest(http.MethodGet, target, nil, append([]reqOpt{b.send}, opts...)...)
	err := hx.h.ServeHTTP(w, r, publicNext)
	res := &result{rec: w, err: err}
	b.absorb(hx.t, res)
	return res
}

// TestSessionCookieResponsesAreNotShared stops a CDN or shared proxy in
// front of Caddy from handing one user's session cookie to another: every
// response through the gate that sets, refreshes or clears the session
// cookie is marked private, whatever the content behind it asked for; the
// callback and the refresh paths included.
func TestSessionCookieResponsesAreNotShared(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.IdleTimeout = caddy.Duration(2 * time.Hour) })
	b := newBrowser()
	cb := hx.signIn(b, "/", "user-1")
	mustNotBeShared(t, "callback", cb.rec.Header())

	hx.clock.Advance(61 * time.Minute) // refresh
	res := hx.servePublic("/", b, navigation())
	if res.err != nil || res.rec.Code != http.StatusOK {
		t.Fatalf("refresh: %v %d", res.err, res.rec.Code)
	}
	mustNotBeShared(t, "refresh", res.rec.Header())

	hx.clock.Advance(15 * time.Minute) // idle tracking re-seals
	res = hx.servePublic("/", b, fetchAPI())
	mustNotBeShared(t, "idle re-seal", res.rec.Header())

	// A plain signed-in request sets nothing and keeps the content's own
	// caching.
	res = hx.servePublic("/", b, fetchAPI())
	if n := len(res.rec.Header().Values("Set-Cookie")); n != 0 {
		t.Fatalf("an unchanged session set %d cookies", n)
	}

	hx.clock.Advance(3 * time.Hour) // idle: the cookie is cleared
	pass := newHarness(t, hx.idp, func(h *Handler) { h.Pass = true; h.IdleTimeout = caddy.Duration(2 * time.Hour) })
	res = pass.servePublic("/", b, fetchAPI())
	mustNotBeShared(t, "cleared session", res.rec.Header())
}

// TestRefreshedCookieOnErrorIsNotShared: a refresh can happen on a request
// that then fails (a rule says 403); the error goes to handle_errors with
// the new session cookie set, and must be private too.
func TestRefreshedCookieOnErrorIsNotShared(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) { h.Require = []Rule{{Kind: "role", Values: []string{"owner"}}} })
	b := hx.signedIn()
	hx.clock.Advance(61 * time.Minute)
	r, _, w := newRequest(http.MethodGet, "/", nil, b.send, fetchAPI())
	err := hx.h.ServeHTTP(w, r, publicNext)
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden {
		t.Fatalf("want 403, got %v", err)
	}
	mustNotBeShared(t, "403 after a refresh", w.Header())
}

// TestStepUpRefusalWithCookieIsNotShared stops a shared cache from storing
// a step-up 403 that carries the user's re-sealed session cookie and
// handing it to others: the request that is refused may be the one on which
// the session's activity was recorded (or the session refreshed), and
// every answer of the gate that does not let the request through is
// marked private when it sets a cookie, not only a rule's 403.
func TestStepUpRefusalWithCookieIsNotShared(t *testing.T) {
	// The stepped-up session still lacks something: 403, not another trip.
	idp, _, strict, b := steppedUpStillLacking(t, func(h *Handler) { h.IdleTimeout = caddy.Duration(time.Hour) })
	idp.clock.Advance(7 * time.Minute) // activity is recorded: the cookie is re-sealed
	res := strict.serve(http.MethodGet, "/admin", b, navigation())
	res.mustHandlerError(t, http.StatusForbidden)
	mustNotBeShared(t, "step-up 403", res.rec.Header())
}

// TestHeaderFieldExpandsAsReplaceAll: header_up values that are a single
// placeholder skip ReplaceAll; whatever the value, the header a backend
// sees must be what ReplaceAll makes of it (an identity header that came
// out differently could name another user, or leak a placeholder's text).
func TestHeaderFieldExpandsAsReplaceAll(t *testing.T) {
	repl := caddy.NewReplacer()
	repl.Map(func(key string) (any, bool) {
		switch key {
		case "http.auth.user.id":
			return "user-1", true
		case "http.auth.user.empty":
			return "", true
		case "http.auth.user.nil":
			return nil, true
		case "http.auth.user.n":
			return 42, true
		}
		return nil, false
	})
	repl.Set("static", "s")
	for _, tt := range []struct {
		value string
		fast  bool
	}{
		{"{http.auth.user.id}", true},
		{"{http.auth.user.empty}", true},
		{"{http.auth.user.nil}", true},
		{"{http.auth.user.n}", true},
		{"{http.auth.user.unknown}", true},
		{"{static}", true},
		{"{nope}", true},
		{"plain", false},
		{"", false},
		{"{}", false},
		{"{", false},
		{"}", false},
		{"x{http.auth.user.id}", false},
		{"{http.auth.user.id}x", false},
		{"{http.auth.user.id}{http.auth.user.id}", false},
		{`{a\}b}`, false},
		{`\{http.auth.user.id}`, false},
		{"{file./nonexistent/logto-test}", false},
	} {
		f := newHeaderField("x-user", tt.value)
		if f.name != "X-User" {
			t.Fatalf("name %q not canonical", f.name)
		}
		if fast := f.key != ""; fast != tt.fast {
			t.Errorf("%q: single placeholder = %v, want %v", tt.value, fast, tt.fast)
		}
		if got, want := f.expand(repl), repl.ReplaceAll(tt.value, ""); got != want {
			t.Errorf("%q expands to %q, ReplaceAll to %q", tt.value, got, want)
		}
	}
	f := newHeaderField("X-User", "{http.auth.user.id}")
	if n := testing.AllocsPerRun(100, func() { _ = f.expand(repl) }); n != 0 {
		t.Errorf("a single placeholder costs %v allocations", n)
	}
}

// forgedIdentity are identity headers a client makes up.
func forgedIdentity() reqOpt {
	return func(r *http.Request) {
		r.Header.Set("X-User-Id", "admin")
		r.Header.Set("Logto-ID-Token", "forged")
	}
}

func mustHaveNoForgedIdentity(t *testing.T, what string, r *http.Request) {
	t.Helper()
	for _, f := range []string{"X-User-Id", "Logto-ID-Token"} {
		if v := r.Header.Get(f); v != "" {
			t.Errorf("%s: the request goes on to handle_errors with the client's %s: %q", what, f, v)
		}
	}
}

// TestIdentityHeadersStrippedOnFlowEndpoints stops a client from naming
// itself to a backend through handle_errors: with `handle_errors {
// reverse_proxy ... }`, a request to /logto/user (401) or a bad callback
// (400) carrying `X-User-Id: admin` and `Logto-ID-Token: forged` reached the
// backend with both. Configured identity headers and Logto-ID-Token are
// removed on every path, flow endpoints included.
func TestIdentityHeadersStrippedOnFlowEndpoints(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) {
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	for _, c := range []struct{ name, target string }{
		{"/logto/user without a session", "/logto/user"},
		{"bad callback", "/logto/sign-in-callback?" + url.Values{"state": {"x"}, "code": {"y"}}.Encode()},
		{"sign-in with a bad parameter", "/logto/sign-in?prompt=evil"},
		{"back-channel logout by GET", "/logto/backchannel-logout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _, w := newRequest(http.MethodGet, c.target, nil, forgedIdentity())
			res, _ := hx.serveCatching(r, nil, w, nil)
			if res.err == nil {
				t.Fatalf("want an error for handle_errors, got %d", w.Code)
			}
			mustHaveNoForgedIdentity(t, c.name, r)
		})
	}
}

// TestIdentityHeadersStrippedForOtherBlocks: the headers one block sets
// are removed by every block of the application, so a request that an
// earlier block answers with an error (a flow endpoint, a 401) does not
// carry the client's copy of a header only the later block configures.
func TestIdentityHeadersStrippedForOtherBlocks(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, nil)
	newHarness(t, idp, func(h *Handler) {
		adminOnly(h)
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	for _, target := range []string{"/logto/user", "/page"} {
		r, _, w := newRequest(http.MethodGet, target, nil, forgedIdentity(), fetchAPI())
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
		err := site.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
			t.Fatal("an anonymous request went on")
			return nil
		}))
		if err == nil {
			t.Fatalf("%s: want 401", target)
		}
		mustHaveNoForgedIdentity(t, target, r)
	}
}

// lookalikeIdentity are identity headers a client sends under names that
// differ from the configured ones only in case and in "_" or "." for "-",
// as Go's server hands them on (X_User_Id arrives as X_user_id) and as
// written.
func lookalikeIdentity() reqOpt {
	return func(r *http.Request) {
		for _, name := range []string{
			"X_User_Id", "X_user_id", "x_user_id", "X-USER-ID", "x-user-id", "X-User_Id", "X.user.id",
			"Logto_ID_Token", "Logto_id_token", "LOGTO-ID-TOKEN", "logto-id_token", "Logto.id.token",
		} {
			r.Header[name] = []string{"forged"}
		}
	}
}

// mustHaveNoLookalike checks that the only identity header next sees is
// the one the module set, under its configured name, with want as its
// value ("" for none).
func mustHaveNoLookalike(t *testing.T, what string, h http.Header, want string) {
	t.Helper()
	for name, v := range h {
		norm := cgiLower(name)
		if norm != "x-user-id" && norm != "logto-id-token" {
			continue
		}
		if name != "X-User-Id" || want == "" || len(v) != 1 || v[0] != want {
			t.Errorf("%s: %q: %q reached the next handler", what, name, v)
		}
	}
	if want != "" && h.Get("X-User-Id") != want {
		t.Errorf("%s: X-User-Id = %q, want %q", what, h.Get("X-User-Id"), want)
	}
}

// cgiLower is a header name in lower case with "_" and "." as "-".
func cgiLower(name string) string {
	return strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
}

// TestIdentityHeaderLookalikesStripped stops a client from naming itself
// to a CGI or FastCGI backend under a lookalike header name: php_fastcgi
// (like any CGI gateway) turns X-User-Id and X_User_Id alike into
// HTTP_X_USER_ID, and Logto-ID-Token and Logto_ID_Token into
// HTTP_LOGTO_ID_TOKEN (PHP folds X.User.Id onto it as well), so a client's
// `X_User_Id: admin` or `Logto_ID_Token: forged`, which only the exact
// names were removed under, reached PHP as the identity wherever Caddy
// lets such names in (expected_underscore_headers, expected_dot_headers).
// Every header whose name equals a configured identity header or
// Logto-ID-Token, case aside and with "-", "_" and "." alike, is removed:
// in pass mode, for anonymous and signed-in requests, for bearer requests,
// and on the error paths of the flow endpoints.
func TestIdentityHeaderLookalikesStripped(t *testing.T) {
	hx := newHarness(t, nil, func(h *Handler) {
		h.Pass = true
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	res := hx.serve(http.MethodGet, "/", nil, lookalikeIdentity(), fetchAPI())
	if !res.next {
		t.Fatalf("pass mode: err=%v", res.err)
	}
	mustHaveNoLookalike(t, "anonymous, pass mode", res.nextReq.Header, "")

	b := newBrowser()
	hx.signIn(b, "/logto/sign-in", "user-1")
	res = hx.serve(http.MethodGet, "/", b, lookalikeIdentity(), fetchAPI())
	mustPass(t, res, "user-1")
	mustHaveNoLookalike(t, "signed in", res.nextReq.Header, "user-1")

	res = hx.serve(http.MethodGet, "/", nil, lookalikeIdentity(), bearer(hx.idp.m2mToken("read:data")))
	mustPass(t, res, testM2MID)
	mustHaveNoLookalike(t, "bearer", res.nextReq.Header, testM2MID)

	strict := newHarness(t, nil, func(h *Handler) { h.Headers = map[string]string{"x_user_id": "{http.auth.user.id}"} })
	r, _, w := newRequest(http.MethodGet, "/logto/user", nil, lookalikeIdentity())
	if res, _ := strict.serveCatching(r, nil, w, nil); res.err == nil {
		t.Fatal("/logto/user without a session: want 401")
	}
	mustHaveNoLookalike(t, "flow endpoint error, header configured as x_user_id", r.Header, "")
	res = strict.serve(http.MethodGet, "/", strict.signedIn(), lookalikeIdentity(), fetchAPI())
	mustPass(t, res, "user-1")
	if v := res.nextReq.Header.Values("X_user_id"); len(v) != 1 || v[0] != "user-1" {
		t.Errorf("the configured X_user_id = %q, want the user's id alone", v)
	}
	for name, v := range res.nextReq.Header {
		if norm := cgiLower(name); (norm == "x-user-id" && name != "X_user_id") || norm == "logto-id-token" {
			t.Errorf("header configured as x_user_id: %q: %q reached the next handler", name, v)
		}
	}
}
