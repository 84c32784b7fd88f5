package logto

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// callback completes a sign-in: it finds the attempt by its state, checks
// the authorization response, redeems the code with the PKCE verifier,
// verifies the ID token and its nonce, and seals the new session.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request, cs *cookieSet) error {
	q := r.URL.Query()
	state := q.Get("state")
	if !validState(state) {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "missing or malformed state"))
		return h.noAttempt(w, r, cs)
	}
	name := cs.attempt + attemptID(state)
	a, ok := h.readAttempt(r, name)
	if !ok || subtle.ConstantTimeCompare([]byte(a.State), []byte(state)) != 1 {
		// Forged state, a replayed callback after its attempt completed,
		// or a browser that lost the cookie.
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "no sign-in attempt with this state"))
		return h.noAttempt(w, r, cs)
	}
	// One use only: whatever happens next, this attempt is spent.
	expireAttempt(w, r.Header, name, cs)

	if e := q.Get("error"); e != "" {
		h.logger.Warn("Logto returned an error to the sign-in callback", zap.String("error", truncate(sanitizeCode(e), 64)),
			zap.String("error_description", sanitizeText(q.Get("error_description"))))
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("logto: sign-in was not completed: "+truncate(sanitizeCode(e), 64)))
	}
	now := h.client.now().Unix()
	if h.client.now().UnixMilli()-a.Created > time.Duration(h.SignInTimeout).Milliseconds() {
		// The user lingered on Logto's page: start over, same destination.
		h.logger.Debug("sign-in attempt timed out; starting over")
		return h.startSignIn(w, r, cs, a.Return, a.Params)
	}

	md, verifier, err := h.client.idp.discover(r.Context())
	if err != nil {
		h.logger.Error("cannot complete sign-in: Logto is unavailable", errField(err))
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	// RFC 9207: the response names its issuer, so a code from another
	// identity provider (mix-up attack) is not redeemed here.
	if iss := q.Get("iss"); iss != md.Issuer && (iss != "" || md.IssParameterSupported) {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "iss does not match the issuer"))
		return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: sign-in response is from another issuer"))
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 || !printable(code) {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "missing or malformed code"))
		return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: sign-in response has no valid code"))
	}

	tr, err := h.client.idp.token(r.Context(), url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {a.RedirectURI},
		"code_verifier": {a.Verifier},
		"client_id":     {h.client.idp.appID},
	})
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			if te.Code == "invalid_client" || te.Code == "unauthorized_client" {
				h.logger.Error("Logto rejected the app credentials: check app_id and app_secret", refusalFields(te)...)
				return caddyhttp.Error(http.StatusBadGateway, err)
			}
			h.logger.Warn("Logto rejected the authorization code", refusalFields(te)...)
			return caddyhttp.Error(http.StatusBadRequest, err)
		}
		h.logger.Error("cannot redeem the authorization code", errField(err))
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	if tr.IDToken == "" {
		h.logger.Error("Logto answered the code without an ID token (is the openid scope allowed?)")
		return caddyhttp.Error(http.StatusBadGateway, errors.New("logto: no ID token in token response"))
	}
	idt, err := verifier.Verify(r.Context(), tr.IDToken)
	if err != nil {
		h.logger.Error("ID token failed verification", errField(err))
		return caddyhttp.Error(http.StatusBadGateway, errors.New("logto: ID token failed verification"))
	}
	// go-oidc leaves the nonce to the caller; it ties the token to this
	// browser's attempt (no token injection).
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(a.Nonce)) != 1 {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "ID token nonce does not match"))
		return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: ID token nonce mismatch"))
	}

	s := session{
		ID:      randomString(16),
		IDToken: tr.IDToken,
		Refresh: tr.RefreshToken,
		Created: h.client.now().UnixMilli(),
		Seen:    now,
		Expires: now + int64(time.Duration(h.SessionLifetime).Seconds()),
		// What was asked, as sent (the attempt's, not this instance's
		// configuration), so routes can tell what Logto may grant.
		Scopes:    a.Scopes,
		Resources: a.Resources,
		StepUp:    a.Params.StepUp,
	}
	accessExp := expiry(h.client.now(), tr.ExpiresIn)
	if tr.RefreshToken == "" && tr.AccessToken != "" {
		s.Access, s.AccessExp = tr.AccessToken, accessExp
	}
	u, err := newUser(s)
	if err != nil {
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	h.client.verified.add(tr.IDToken)
	if tr.AccessToken != "" {
		ls := h.client.live.get(s.ID, now)
		ls.mu.Lock()
		ls.access, ls.accessExp = tr.AccessToken, accessExp
		ls.mu.Unlock()
	}
	u.cookie = h.client.sessions.Seal(sessionAAD, u.encode())
	h.client.users.put(u.cookie, u)
	h.writeSession(w, r.Header, cs, u)
	if tr.RefreshToken == "" {
		h.logger.Warn("Logto issued no refresh token (prompt must include consent and offline_access be allowed); the session cannot be refreshed")
	}
	h.logger.Info("user signed in", zap.String("user_id", u.sub))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, a.Return, http.StatusFound)
	return nil
}

// noAttempt answers a callback that matches no attempt. A signed-in user
// (back button, a second tab's stale callback) is sent home; anyone else
// gets a clean 400, never a redirect that could loop when cookies are off.
func (h *Handler) noAttempt(w http.ResponseWriter, r *http.Request, cs *cookieSet) error {
	if u := h.readSession(r, cs); u != nil && h.sessionValid(u, h.client.now().Unix()) {
		http.Redirect(w, r, "/", http.StatusFound)
		return nil
	}
	return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: this sign-in link is not valid in this browser any more; start again from the page you wanted"))
}

func (h *Handler) readAttempt(r *http.Request, name string) (attempt, bool) {
	var a attempt
	v, ok := readCookie(r.Header, name)
	if !ok {
		return a, false
	}
	plain, err := h.client.attempts.Open(attemptAAD, v)
	if err != nil {
		return a, false
	}
	if json.Unmarshal(plain, &a) != nil || a.State == "" || a.Return == "" {
		return a, false
	}
	return a, true
}

// validState accepts what randomString(24) makes: 32 base64url characters.
func validState(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// sanitizeCode keeps an OAuth error code loggable: letters, digits, _ and -.
func sanitizeCode(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b = append(b, c)
		}
	}
	return string(b)
}
