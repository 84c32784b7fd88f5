package logto

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// stepUpWindow is how long after a second sign-in a session that still
// lacks what a route needs is denied rather than sent again: the second
// sign-in asked for everything the application needs, so another would
// only loop. After it, a configuration that changed again may step up once
// more.
const stepUpWindow = 10 * time.Minute

// stepUpFirst answers a signed-in request whose session never asked Logto
// for what this route needs (it signed in before the configuration
// changed, or through an older instance). Logto grants nothing later that
// the sign-in did not ask for, so a 403 would last until the user signed
// out and in again; instead a navigation goes through sign-in once more,
// with the whole application's needs, and comes back to the same page
// (Logto sends a user it knows straight back). Anything else gets 401 and
// a WWW-Authenticate header naming what is missing. A session that lacks
// it right after such a sign-in gets 403: never a loop.
func (h *Handler) stepUpFirst(w http.ResponseWriter, r *http.Request, cs *cookieSet, u *user, cookies []string, miss needs) error {
	fields := []zap.Field{
		zap.String("user_id", u.sub),
		zap.Strings("missing_scopes", miss.scopes),
		zap.Strings("missing_resources", miss.resources),
	}
	if u.s.StepUp && h.client.now().UnixMilli()-u.s.Created < stepUpWindow.Milliseconds() {
		h.logger.Warn("signed-in user denied: the session still lacks what the route needs after signing in again", fields...)
		return caddyhttp.Error(http.StatusForbidden, errors.New("logto: the session lacks what this route needs"))
	}
	if !isNavigation(r) {
		h.logger.Debug("signed-in request lacks what the route needs; it must sign in again", fields...)
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Logto realm=%q, sign_in=%q, error="insufficient_scope", scope=%q, resource=%q`,
			"logto", h.paths.signIn, strings.Join(miss.scopes, " "), strings.Join(miss.resources, " ")))
		w.Header().Set("Cache-Control", "no-store")
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("logto: the session must sign in again for what this route needs"))
	}
	h.logger.Info("sending signed-in user to sign in again for what the route needs", fields...)
	if cookies != nil {
		r.Header["Cookie"] = cookies // the attempt pruning reads them
	}
	p := h.configParams()
	p.StepUp = true
	err := h.startSignIn(w, r, cs, h.returnHere(r), p)
	h.stripModuleCookies(r)
	return err
}

// returnHere is where a sign-in started by this request comes back to: the
// URI the client asked for. It can be //evil.example/x, which a browser
// would take for another site, so it goes through the same check as
// ?redirect=; overlong ones are cut back to the path.
func (h *Handler) returnHere(r *http.Request) string {
	ret := originalRequestURI(r)
	if len(ret) > maxReturnURL {
		ret, _, _ = strings.Cut(ret, "?")
	}
	return safeReturn(ret, h.siteURL(r))
}

// stepUpForRefusal reports whether Logto's refusal of the route's token is
// worth one more sign-in: invalid_target means the grant lacks the
// resource, which a new sign-in (asking for it again) may get, if Logto
// knows it again. Navigations are sent once per session and stepUpWindow
// (a resource Logto no longer knows would otherwise cost a trip to Logto
// on every navigation); other requests get the 401 until then, and 403
// after.
func (h *Handler) stepUpForRefusal(r *http.Request, u *user, err error) bool {
	var te *TokenError
	if !errors.As(err, &te) || te.Code != "invalid_target" {
		return false
	}
	now := h.client.now().Unix()
	ls := h.client.live.get(u.s.ID, now)
	last := ls.stepUpAt.Load()
	if last != 0 && now-last < int64(stepUpWindow/time.Second) {
		return false
	}
	if isNavigation(r) {
		return ls.stepUpAt.CompareAndSwap(last, now)
	}
	return true
}

// routeResource is the resource indicator of the route's token.
func (h *Handler) routeResource() string {
	if h.TokenResource != "" {
		return h.TokenResource
	}
	return organizationsResource
}
