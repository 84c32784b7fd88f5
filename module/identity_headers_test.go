package logto

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

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
