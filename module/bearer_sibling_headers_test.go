package logto

import (
	"net/http"
	"testing"
)

// TestBearerSurvivesSiblingAuthorizationHeader stops one block's
// `header Authorization "Bearer {http.auth.logto.access_token}"` from
// locking every API client out of the application's bearer blocks: the
// names a block sets are stripped from the client's request by every block
// of the application, and the client's Authorization used to be deleted
// before the bearer block read it, so every token request answered 401.
// The bearer block judges the token the client sent, and where it accepts
// it the upstream gets that Authorization header unchanged.
func TestBearerSurvivesSiblingAuthorizationHeader(t *testing.T) {
	idp := newFakeIdP(t)
	// A browser section of the same application that forwards its route
	// token to its upstream.
	site := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.TokenResource = bearerAPI
		h.Headers = map[string]string{"Authorization": "Bearer {http.auth.logto.access_token}"}
	})
	api := newHarness(t, idp, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	tok := idp.accessToken(nil)
	mustForward := func(what string, res *result) {
		t.Helper()
		mustPass(t, res, "user-1")
		if got := res.nextReq.Header.Get("Authorization"); got != "Bearer "+tok {
			t.Errorf("%s: the upstream got Authorization %.30q, want the client's token unchanged", what, got)
		}
		if got := res.nextReq.Header.Get("X-User-Id"); got != "user-1" {
			t.Errorf("%s: X-User-Id = %q, want the token's sub", what, got)
		}
	}
	mustForward("bearer block alone", api.serve(http.MethodGet, "/api/data", nil, bearer(tok)))
	mustForward("behind the site block", serveStacked(t, site, api, "/api/data", newBrowser(), bearer(tok)))

	// A token the bearer block refuses is not forwarded either, nor is
	// another scheme the sibling's header name strips.
	mustBearerFail(t, api.serve(http.MethodGet, "/api/data", nil, bearer("garbage")), http.StatusUnauthorized, "invalid_token")
	res := serveStacked(t, site, newHarness(t, idp, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.Pass = true
	}), "/page", newBrowser(), withHeader("Authorization", "Basic YTpi"))
	if !res.next {
		t.Fatalf("an anonymous request to a pass block did not go on: %v", res.err)
	}
	if got := res.nextReq.Header.Get("Authorization"); got != "" {
		t.Errorf("a client's own Authorization %q reached the upstream of a block whose application sets that header", got)
	}
}

// TestBearerBlockDropsTheCookieUsersIdentity stops two identities from
// reaching one upstream: behind a site block that found the browser's
// session and set `header X-User-Id {http.auth.user.id}`, a bearer block
// that accepts a machine-to-machine token used to pass the request on with
// the token's identity in its own headers and placeholders, and the
// cookie user's X-User-Id beside them. The token's identity replaces the
// session's, headers included.
func TestBearerBlockDropsTheCookieUsersIdentity(t *testing.T) {
	idp := newFakeIdP(t)
	site := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	api := newHarness(t, idp, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-Client": "{http.auth.user.client_id}"}
	})
	b := newBrowser()
	signInAt(t, site, b)
	res := serveStacked(t, site, api, "/api/data", b, fetchAPI(), bearer(idp.m2mToken("read:data")))
	mustPass(t, res, testM2MID)
	if got := res.nextReq.Header.Get("X-Client"); got != testM2MID {
		t.Errorf("X-Client = %q, want the token's client", got)
	}
	if got := res.nextReq.Header.Get("X-User-Id"); got != "" {
		t.Errorf("the upstream of a token request got the browser session's X-User-Id %q", got)
	}
}

// TestCookieBlockAfterBearerBlockNamesTheSessionUser: the other order. A
// bearer block accepts a token, then a cookie block of the same
// application judges the request by its session: its rules ran against
// the session's user, so the placeholders and identity headers must name
// that user, not the token's subject, and the bearer block's headers go.
func TestCookieBlockAfterBearerBlockNamesTheSessionUser(t *testing.T) {
	idp := newFakeIdP(t)
	api := newHarness(t, idp, func(h *Handler) {
		h.Pass = true
		h.Bearer = []string{bearerAPI}
		h.Headers = map[string]string{"X-Client": "{http.auth.user.client_id}"}
	})
	site := newHarness(t, idp, func(h *Handler) {
		h.Headers = map[string]string{"X-User-Id": "{http.auth.user.id}"}
	})
	b := newBrowser()
	signInAt(t, site, b)
	res := serveStacked(t, api, site, "/api/data", b, fetchAPI(), bearer(idp.m2mToken("read:data")))
	mustPass(t, res, "user-1")
	if got := res.nextReq.Header.Get("X-User-Id"); got != "user-1" {
		t.Errorf("X-User-Id = %q, want the session's user", got)
	}
	if got := res.nextReq.Header.Get("X-Client"); got != "" {
		t.Errorf("the upstream of a session request got the token's X-Client %q", got)
	}
}
