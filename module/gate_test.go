package logto

import (
	"context"
	"encoding/json"
	"net/http"
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
