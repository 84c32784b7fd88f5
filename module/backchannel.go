package logto

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// backchannelEvent is the event a logout token must carry (OpenID Connect
// Back-Channel Logout 1.0, section 2.4).
const backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// maxLogoutTokenAge bounds how old (by iat) a logout token may be.
const maxLogoutTokenAge = 5 * time.Minute

// Bounds of the back-channel endpoint's input. Logto's logout tokens are
// under 1 KiB; the body is a form with that one field.
const (
	maxLogoutBody  = 8 << 10
	maxLogoutToken = 4 << 10
)

// logoutSlots bounds how many logout tokens are verified at once, process
// wide.
var logoutSlots = make(chan struct{}, 2)

// backchannelLogout receives Logto's logout token and ends the sessions it
// names, here and, through storage, on every instance.
func (h *Handler) backchannelLogout(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutBody)
	if err := r.ParseForm(); err != nil {
		return h.badLogout("body is not a form")
	}
	token := r.PostForm.Get("logout_token")
	if token == "" || len(token) > maxLogoutToken {
		return h.badLogout("no logout_token")
	}
	// Anyone may post here: at most a few tokens are checked at a time, so
	// a flood of forgeries (each costs a signature check when it names the
	// tenant's kid) takes a bounded share of the CPU. The others wait.
	select {
	case logoutSlots <- struct{}{}:
		defer func() { <-logoutSlots }()
	case <-r.Context().Done():
		return caddyhttp.Error(http.StatusServiceUnavailable, r.Context().Err())
	}
	_, _, err := h.client.idp.discover(r.Context())
	if err != nil {
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	verifier := h.client.idp.logoutVerifier()
	idt, err := verifier.Verify(r.Context(), token)
	if err != nil {
		return h.badLogout("signature, issuer or audience does not verify")
	}
	var claims struct {
		Sub    string                     `json:"sub"`
		SID    string                     `json:"sid"`
		JTI    string                     `json:"jti"`
		IAT    int64                      `json:"iat"`
		Nonce  *string                    `json:"nonce"`
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := idt.Claims(&claims); err != nil {
		return h.badLogout("claims do not parse")
	}
	now := h.client.now()
	switch {
	case claims.Events == nil || claims.Events[backchannelEvent] == nil:
		return h.badLogout("no back-channel logout event")
	case claims.Nonce != nil:
		// A logout token must not be mistakable for an ID token.
		return h.badLogout("has a nonce")
	case claims.Sub == "" && claims.SID == "":
		return h.badLogout("names neither sub nor sid")
	case claims.JTI == "":
		return h.badLogout("has no jti")
	case claims.IAT == 0 || now.Sub(time.Unix(claims.IAT, 0)) > maxLogoutTokenAge || time.Unix(claims.IAT, 0).Sub(now) > clockSkew:
		return h.badLogout("iat is missing or out of range")
	}
	ctx := context.WithoutCancel(r.Context())
	if h.client.revoked.seenJTI(ctx, claims.JTI, claims.IAT+int64(maxLogoutTokenAge/time.Second)+60) {
		return h.badLogout("replayed")
	}
	until := now.Unix() + int64(time.Duration(h.SessionLifetime).Seconds())
	if claims.SID != "" {
		h.client.revoked.add(ctx, revokeSID, claims.SID, until)
	}
	switch {
	case claims.Sub != "" && claims.SID == "":
		h.client.revoked.add(ctx, revokeSub, claims.Sub, until)
	case claims.Sub != "":
		h.client.revoked.add(ctx, revokeSubNoSID, claims.Sub, until)
	}
	h.logger.Info("back-channel logout received", zap.String("user_id", claims.Sub), zap.Bool("sid", claims.SID != ""))
	w.WriteHeader(http.StatusOK)
	return nil
}

func (h *Handler) badLogout(reason string) error {
	h.logger.Warn("back-channel logout rejected", zap.String("reason", reason))
	return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: invalid logout token: "+reason))
}
