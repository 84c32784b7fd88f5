package logto

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// reservedScopes are always requested, as Logto's SDKs do: openid for the
// ID token, offline_access for the refresh token, profile for the name.
var reservedScopes = []string{"openid", "offline_access", "profile"}

// maxAttempts bounds the sign-in attempts (one cookie each) a browser holds
// at once, so many tabs signing in together all succeed without the cookies
// growing without limit.
const maxAttempts = 4

// signInParams are the Logto authorization parameters of one attempt.
type signInParams struct {
	FirstScreen  string `json:"fs,omitempty"`
	Identifier   string `json:"id,omitempty"`
	DirectSignIn string `json:"ds,omitempty"`
	LoginHint    string `json:"lh,omitempty"`
	UILocales    string `json:"ul,omitempty"`
	Organization string `json:"o,omitempty"`
	Prompt       string `json:"p,omitempty"`
	SignUp       bool   `json:"su,omitempty"`
	StepUp       bool   `json:"up,omitempty"` // a signed-in session lacked what a route needs
}

// attempt is one sign-in in progress, sealed in its own short-lived cookie.
type attempt struct {
	State       string       `json:"s"`
	Nonce       string       `json:"n"`
	Verifier    string       `json:"v"`
	Return      string       `json:"r"`
	RedirectURI string       `json:"u"`
	Created     int64        `json:"c"` // unix ms: tabs opened in one second still age in order
	Params      signInParams `json:"p"`
	// What the authorization request asked for (abbreviated), recorded in
	// the session: the instance that completes the sign-in may run another
	// configuration than the one that started it.
	Scopes    []string `json:"sc,omitempty"`
	Resources []string `json:"rs,omitempty"`
}

// attemptCookieLife is how long the browser keeps an attempt cookie: longer
// than the attempt itself, so an attempt that timed out on Logto's page is
// recognised and started over with its return URL, rather than lost.
func (h *Handler) attemptCookieLife() int {
	return int(time.Duration(h.SignInTimeout).Seconds()) + 3600
}

// configParams are the sign-in parameters from the configuration.
func (h *Handler) configParams() signInParams {
	return signInParams{
		FirstScreen:  h.FirstScreen,
		Identifier:   strings.Join(h.Identifiers, " "),
		DirectSignIn: h.DirectSignIn,
		LoginHint:    h.LoginHint,
		UILocales:    strings.Join(h.UILocales, " "),
		Organization: h.SignInOrganization,
		Prompt:       h.Prompt,
	}
}

// requestParams overlays the safe per-request parameters of
// /logto/sign-in?... on the configured ones. Scopes, resources and extra
// parameters stay as configured: a visitor must not widen what is asked.
func (h *Handler) requestParams(q url.Values, signUp bool) (signInParams, error) {
	p := h.configParams()
	p.SignUp = signUp
	set := func(dst *string, name string, valid func(string) bool) error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		if len(v) > 256 || !printable(v) || !valid(v) {
			return fmt.Errorf("logto: sign-in parameter %s is not valid", name)
		}
		*dst = v
		return nil
	}
	anyText := func(string) bool { return true }
	for _, f := range []struct {
		dst   *string
		name  string
		valid func(string) bool
	}{
		{&p.FirstScreen, "first_screen", validFirstScreen},
		{&p.Identifier, "identifier", validIdentifiers},
		{&p.Identifier, "identifiers", validIdentifiers},
		{&p.DirectSignIn, "direct_sign_in", validDirectSignIn},
		{&p.LoginHint, "login_hint", anyText},
		{&p.UILocales, "ui_locales", validLocales},
		{&p.Organization, "organization_id", validID},
		{&p.Prompt, "prompt", validPrompt},
	} {
		if err := set(f.dst, f.name, f.valid); err != nil {
			return p, err
		}
	}
	return p, nil
}

// withConsent adds consent to a prompt (unless it is none): without it
// Logto issues no refresh token, and a session without one could neither be
// kept current nor ended by Logto.
func withConsent(prompt string) string {
	fields := strings.Fields(prompt)
	if slices.Contains(fields, "none") || slices.Contains(fields, "consent") {
		return prompt
	}
	return strings.TrimSpace(strings.Join(append(fields, "consent"), " "))
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func validFirstScreen(s string) bool {
	switch s {
	case "sign_in", "register", "signIn", "identifier:sign_in", "identifier:register",
		"single_sign_on", "reset_password":
		return true
	}
	return false
}

func validIdentifiers(s string) bool {
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' }) {
		if f != "email" && f != "phone" && f != "username" {
			return false
		}
	}
	return true
}

func validDirectSignIn(s string) bool {
	kind, target, ok := strings.Cut(s, ":")
	return ok && kind != "" && target != "" && validID(kind) && validID(target)
}

func validLocales(s string) bool {
	for _, f := range strings.Fields(s) {
		for _, r := range f {
			if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// validID accepts Logto ids and connector targets.
func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validPrompt(s string) bool {
	for _, p := range strings.Fields(s) {
		if p != "consent" && p != "login" {
			return false
		}
	}
	return true
}

// startSignIn redirects the browser to Logto's authorization endpoint with
// a fresh attempt (state, nonce, PKCE verifier) sealed in its own cookie.
func (h *Handler) startSignIn(w http.ResponseWriter, r *http.Request, cs *cookieSet, returnTo string, p signInParams) error {
	md, _, err := h.client.idp.discover(r.Context())
	if err == nil {
		err = h.client.idp.answering(r.Context())
	}
	if err != nil {
		h.logger.Error("cannot start sign-in: Logto is unavailable", errField(err))
		h.client.metrics.signInFailed(failUnavailable)
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	// Scopes and resources are the application's, not this block's: Logto
	// will not grant later what this request does not ask for.
	want := h.signInNeeds()
	a := attempt{
		Scopes:      abbreviateAsked(want.scopes),
		Resources:   abbreviateAsked(want.resources),
		State:       randomString(24),
		Nonce:       randomString(24),
		Verifier:    oauth2.GenerateVerifier(),
		Return:      returnTo,
		RedirectURI: h.siteURL(r) + h.paths.callback,
		Created:     h.client.now().UnixMilli(),
		Params:      p,
	}
	h.pruneAttempts(w, r, cs)
	name := cs.attempt + attemptID(a.State)
	o := cs.opts
	o.MaxAge = h.attemptCookieLife()
	if err := writeCookie(w.Header(), r.Header, name, h.sealAttempt(&a, name, o), o); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}

	scopes := append(slices.Clone(reservedScopes), want.scopes...)
	q := url.Values{
		"client_id":             {h.client.idp.appID},
		"redirect_uri":          {a.RedirectURI},
		"response_type":         {"code"},
		"scope":                 {strings.Join(dedupe(scopes), " ")},
		"state":                 {a.State},
		"nonce":                 {a.Nonce},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(a.Verifier)},
		"code_challenge_method": {"S256"},
	}
	for _, res := range want.resources {
		q.Add("resource", res)
	}
	for k, v := range h.ExtraParams {
		q.Set(k, v)
	}
	setIf := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	setIf("prompt", withConsent(p.Prompt))
	setIf("first_screen", p.FirstScreen)
	setIf("identifier", strings.Join(strings.FieldsFunc(p.Identifier, func(r rune) bool { return r == ' ' || r == ',' }), " "))
	setIf("direct_sign_in", p.DirectSignIn)
	setIf("login_hint", p.LoginHint)
	setIf("ui_locales", p.UILocales)
	setIf("organization_id", p.Organization)
	if p.SignUp {
		// first_screen for current Logto, interaction_mode for older.
		q.Set("first_screen", "register")
		q.Set("interaction_mode", "signUp")
	}

	target := md.AuthorizationEndpoint
	if strings.Contains(target, "?") {
		target += "&" + q.Encode()
	} else {
		target += "?" + q.Encode()
	}
	h.logger.Debug("sending browser to Logto to sign in", zap.String("return", truncate(a.Return, 200)))
	h.client.metrics.signIn(signInStarted)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

// attemptAAD binds sealed attempts to their purpose.
const attemptAAD = "sign-in attempt"

// attemptID names an attempt's cookie after its state, so the callback finds
// it directly among several tabs' attempts.
func attemptID(state string) string {
	if len(state) > attemptIDLen {
		return state[:attemptIDLen]
	}
	return state
}

const attemptIDLen = 12

// pruneAttempts keeps the newest maxAttempts-1 attempt cookies, so the one
// about to be added stays within maxAttempts. Unreadable ones go first.
func (h *Handler) pruneAttempts(w http.ResponseWriter, r *http.Request, cs *cookieSet) {
	names := attemptNames(r.Header, cs)
	if len(names) < maxAttempts {
		return
	}
	type aged struct {
		name    string
		created int64
	}
	var all []aged
	for _, n := range names {
		var created int64
		if v, ok := readCookie(r.Header, n); ok {
			if plain, err := h.client.attempts.Open(attemptAAD, v); err == nil {
				var a attempt
				if json.Unmarshal(plain, &a) == nil {
					created = a.Created
				}
			}
		}
		all = append(all, aged{n, created})
	}
	slices.SortFunc(all, func(a, b aged) int { return int(a.created - b.created) })
	for _, a := range all[:len(all)-(maxAttempts-1)] {
		expireAttempt(w, r.Header, a.name, cs)
	}
}

// maxAttemptNames bounds how many attempt cookies a request is searched
// for. A browser holds at most maxAttempts; anything beyond is a hostile
// header, and looking at each of thousands of names would cost seconds.
const maxAttemptNames = 4 * maxAttempts

// attemptNames returns the names of the request's sign-in attempt cookies:
// only names of the exact shape this module writes, and at most
// maxAttemptNames of them.
func attemptNames(req http.Header, cs *cookieSet) []string {
	names := cookieNames(req, cs.attempt)
	out := names[:0]
	for _, n := range names {
		if len(n) == len(cs.attempt)+attemptIDLen {
			out = append(out, n)
			if len(out) == maxAttemptNames {
				break
			}
		}
	}
	return out
}

// expireAttempt removes an attempt cookie and the chunks of it that req
// carries. sealAttempt keeps attempts to one cookie by shortening the
// return URL, but what the sign-in asks for (the application's scopes and
// resources) and the request's sign-in parameters can still make one
// chunk, and a chunk left behind would ride on every request for an hour.
func expireAttempt(w http.ResponseWriter, req http.Header, name string, cs *cookieSet) {
	clearCookie(w.Header(), req, name, cs.opts)
}

// siteURL is the scheme and host the browser sees this site at.
func (h *Handler) siteURL(r *http.Request) string {
	if h.BaseURL != "" {
		return h.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("logto: no randomness: " + err.Error()))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// sealAttempt seals a for its cookie, keeping it to one cookie when the
// return URL is what makes it too large. An attempt carries a return URL of
// up to maxReturnURL bytes on top of what the sign-in asks for and the
// request's sign-in parameters, which together can exceed one cookie; a
// chunked attempt costs several cookies per tab on every request for an
// hour. So when the sealed attempt would not fit, the return URL falls back
// to its path (query and fragment dropped), and then to "/": the sign-in
// still completes, landing on a page of the site rather than the exact URL.
// If even that does not fit (a very long Host, huge scope lists), the
// attempt is written chunked, and expireAttempt clears the chunks.
func (h *Handler) sealAttempt(a *attempt, name string, o CookieOptions) string {
	var sealed string
	for _, ret := range returnFallbacks(a.Return) {
		a.Return = ret
		sealed = h.client.attempts.Seal(attemptAAD, marshalAttempt(a))
		if fitsOneCookie(name, sealed, o) {
			break
		}
	}
	return sealed
}

// fitsOneCookie reports whether writeCookie would write value as a single
// cookie, without chunks.
func fitsOneCookie(name, value string, o CookieOptions) bool {
	_, looksChunked := chunkCount(value)
	return len(value) <= chunkSize(name, o) && !looksChunked
}

// returnFallbacks lists ret, then shorter forms of it, ending with "/".
func returnFallbacks(ret string) []string {
	out := []string{ret}
	path, _, _ := strings.Cut(ret, "?")
	path, _, _ = strings.Cut(path, "#")
	if path != ret && path != "" {
		out = append(out, path)
	}
	if path != "/" {
		out = append(out, "/")
	}
	return out
}

// marshalAttempt encodes a without HTML escaping: a return URL's '&', '<'
// and '>' would otherwise take six bytes each (\u0026), up to six times
// the URL's length.
func marshalAttempt(a *attempt) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(a) // an attempt always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// callback completes a sign-in: it finds the attempt by its state, checks
// the authorization response, redeems the code with the PKCE verifier,
// verifies the ID token and its nonce, and seals the new session.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request, cs *cookieSet) error {
	q := r.URL.Query()
	state := q.Get("state")
	if !validState(state) {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "missing or malformed state"))
		h.client.metrics.signInFailed(failBadState)
		return h.noAttempt(w, r, cs)
	}
	name := cs.attempt + attemptID(state)
	a, ok := h.readAttempt(r, name)
	if !ok || subtle.ConstantTimeCompare([]byte(a.State), []byte(state)) != 1 {
		// Forged state, a replayed callback after its attempt completed,
		// or a browser that lost the cookie.
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "no sign-in attempt with this state"))
		h.client.metrics.signInFailed(failBadState)
		return h.noAttempt(w, r, cs)
	}
	// One use only: whatever happens next, this attempt is spent.
	expireAttempt(w, r.Header, name, cs)

	if e := q.Get("error"); e != "" {
		h.logger.Warn("Logto returned an error to the sign-in callback", zap.String("error", truncate(sanitizeCode(e), 64)),
			zap.String("error_description", sanitizeText(q.Get("error_description"))))
		h.client.metrics.signInFailed(failLogtoError)
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("logto: sign-in was not completed: "+truncate(sanitizeCode(e), 64)))
	}
	now := h.client.now().Unix()
	if h.client.now().UnixMilli()-a.Created > time.Duration(h.SignInTimeout).Milliseconds() {
		// The user lingered on Logto's page: start over, same destination.
		h.logger.Debug("sign-in attempt timed out; starting over")
		h.client.metrics.signInFailed(failExpiredAttempt)
		return h.startSignIn(w, r, cs, a.Return, a.Params)
	}

	md, verifier, err := h.client.idp.discover(r.Context())
	if err != nil {
		h.logger.Error("cannot complete sign-in: Logto is unavailable", errField(err))
		h.client.metrics.signInFailed(failUnavailable)
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	// RFC 9207: the response names its issuer, so a code from another
	// identity provider (mix-up attack) is not redeemed here.
	if iss := q.Get("iss"); iss != md.Issuer && (iss != "" || md.IssParameterSupported) {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "iss does not match the issuer"))
		h.client.metrics.signInFailed(failBadResponse)
		return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: sign-in response is from another issuer"))
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 || !printable(code) {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "missing or malformed code"))
		h.client.metrics.signInFailed(failBadResponse)
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
				h.client.metrics.signInFailed(failInvalidClient)
				return caddyhttp.Error(http.StatusBadGateway, err)
			}
			h.logger.Warn("Logto rejected the authorization code", refusalFields(te)...)
			h.client.metrics.signInFailed(failExchange)
			return caddyhttp.Error(http.StatusBadRequest, err)
		}
		h.logger.Error("cannot redeem the authorization code", errField(err))
		h.client.metrics.signInFailed(failUnavailable)
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	if tr.IDToken == "" {
		h.logger.Error("Logto answered the code without an ID token (is the openid scope allowed?)")
		h.client.metrics.signInFailed(failTokenInvalid)
		return caddyhttp.Error(http.StatusBadGateway, errors.New("logto: no ID token in token response"))
	}
	idt, err := verifier.Verify(r.Context(), tr.IDToken)
	if err != nil {
		h.logger.Error("ID token failed verification", errField(err))
		h.client.metrics.signInFailed(failTokenInvalid)
		return caddyhttp.Error(http.StatusBadGateway, errors.New("logto: ID token failed verification"))
	}
	// go-oidc leaves the nonce to the caller; it ties the token to this
	// browser's attempt (no token injection).
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(a.Nonce)) != 1 {
		h.logger.Warn("sign-in callback rejected", zap.String("reason", "ID token nonce does not match"))
		h.client.metrics.signInFailed(failTokenInvalid)
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
		h.client.metrics.signInFailed(failTokenInvalid)
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
	h.client.cacheUser(u.cookie, u)
	h.writeSession(w, r.Header, cs, u)
	if tr.RefreshToken == "" {
		h.logger.Warn("Logto issued no refresh token (prompt must include consent and offline_access be allowed); the session cannot be refreshed")
	}
	h.logger.Info("user signed in", zap.String("user_id", u.sub))
	h.client.metrics.signIn(signInCompleted)
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
