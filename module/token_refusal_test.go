package logto

import (
	"net/http"
	"strings"
	"testing"
)

// TestRouteTokenUpstreamFailureIsNot403: when Logto refuses a route token
// for a reason that says nothing about the user (the app's credentials
// rejected, rate limiting, a malformed request), the user gets a 502 like
// any Logto failure, the log carries Logto's error, and the session backs
// off instead of sending every request to Logto again (which, under a 429,
// feeds the rate limit). A 403 would tell the user they lack a right they
// may well have.
func TestRouteTokenUpstreamFailureIsNot403(t *testing.T) {
	for _, ref := range []oauthRefusal{
		{http.StatusUnauthorized, "invalid_client", "client authentication failed"},
		{http.StatusTooManyRequests, "too_many_requests", "slow down"},
		{http.StatusBadRequest, "invalid_request", "something odd"},
		{http.StatusBadRequest, "unauthorized_client", "grant type not allowed"},
	} {
		t.Run(ref.code, func(t *testing.T) {
			idp := newFakeIdP(t)
			hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
			b := hx.signedIn()
			idp.refuseWith.Store(&ref)
			mark := len(capturedLogs.String())

			res := hx.serve(http.MethodGet, "/", b, fetchAPI())
			res.mustHandlerError(t, http.StatusBadGateway)
			logs := capturedLogs.String()[mark:]
			if !strings.Contains(logs, `"error":"`+ref.code+`"`) || !strings.Contains(logs, ref.desc) {
				t.Errorf("the log does not carry Logto's error and description; captured:\n%s", logs)
			}

			grants := idp.refreshGrants.Load()
			hx.serve(http.MethodGet, "/", b, fetchAPI()).mustHandlerError(t, http.StatusBadGateway)
			if n := idp.refreshGrants.Load(); n != grants {
				t.Errorf("%d more token requests right after Logto failed, want none (back off)", n-grants)
			}
		})
	}
}

// TestRouteTokenRefusalsAre403: Logto's refusals that do mean "this user
// may not have this token" stay a 403 (after the one step-up sign-in that
// invalid_target earns a navigation, see TestResourceTokenDenied).
func TestRouteTokenRefusalsAre403(t *testing.T) {
	for _, ref := range []oauthRefusal{
		{http.StatusBadRequest, "invalid_target", "resource not granted"},
		{http.StatusForbidden, "access_denied", "no"},
		{http.StatusBadRequest, "invalid_scope", "scope not granted"},
		// What Logto answers an organization token request whose grant
		// lacks the organizations scope.
		{http.StatusForbidden, "insufficient_scope", "Token missing scope `urn:logto:scope:organizations`."},
	} {
		t.Run(ref.code, func(t *testing.T) {
			idp := newFakeIdP(t)
			hx := newHarness(t, idp, func(h *Handler) { h.TokenResource = "https://api.example.com" })
			b := hx.signedIn()
			idp.refuseWith.Store(&ref)
			if ref.code == "invalid_target" {
				// A navigation is sent to sign in again once first.
				hx.mustRedirectToAuth(t, hx.serve(http.MethodGet, "/", b, navigation()))
			}
			hx.serve(http.MethodGet, "/", b, navigation()).mustHandlerError(t, http.StatusForbidden)
		})
	}
}
