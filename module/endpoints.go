package logto

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

type endpoint int

const (
	epNone endpoint = iota
	epSignIn
	epSignUp
	epCallback
	epSignOut
	epUser
	epBackchannel
)

// flowPaths are the module's own endpoints, named as in Logto's Express SDK.
type flowPaths struct {
	prefix, signIn, signUp, callback, signOut, user, backchannel string
}

func newFlowPaths(prefix string) flowPaths {
	return flowPaths{
		prefix:      prefix,
		signIn:      prefix + "/sign-in",
		signUp:      prefix + "/sign-up",
		callback:    prefix + "/sign-in-callback",
		signOut:     prefix + "/sign-out",
		user:        prefix + "/user",
		backchannel: prefix + "/backchannel-logout",
	}
}

// match returns the endpoint a path names; any other path is gated.
func (p *flowPaths) match(path string) endpoint {
	if !strings.HasPrefix(path, p.prefix) {
		return epNone
	}
	switch path {
	case p.signIn:
		return epSignIn
	case p.signUp:
		return epSignUp
	case p.callback:
		return epCallback
	case p.signOut:
		return epSignOut
	case p.user:
		return epUser
	case p.backchannel:
		return epBackchannel
	}
	return epNone
}

func (h *Handler) serveEndpoint(ep endpoint, w http.ResponseWriter, r *http.Request) error {
	// An error goes on to handle_errors, which may proxy: the client's
	// identity headers must not go with it.
	h.stripIdentity(r, nil)
	err := h.endpoint(ep, w, r)
	// An error goes on to handle_errors, which may proxy: the module's
	// cookies must not go with it.
	h.stripModuleCookies(r)
	return err
}

func (h *Handler) endpoint(ep endpoint, w http.ResponseWriter, r *http.Request) error {
	cs := h.cookiesFor(r)
	if ep == epBackchannel {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("logto: back-channel logout takes POST"))
		}
		return h.backchannelLogout(w, r)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !(ep == epSignOut && r.Method == http.MethodPost) {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("logto: method not allowed"))
	}
	switch ep {
	case epSignIn, epSignUp:
		q := r.URL.Query()
		p, err := h.requestParams(q, ep == epSignUp)
		if err != nil {
			return caddyhttp.Error(http.StatusBadRequest, err)
		}
		return h.startSignIn(w, r, cs, safeReturn(q.Get("redirect"), h.siteURL(r)), p)
	case epCallback:
		return h.callback(w, r, cs)
	case epSignOut:
		return h.signOut(w, r, cs)
	case epUser:
		return h.serveUser(w, r, cs)
	}
	return caddyhttp.Error(http.StatusNotFound, nil)
}

// safeReturn turns a requested return target into a path on this site.
// Only same-origin targets are honoured; anything else (another host,
// scheme-relative //evil, backslash tricks, javascript:, control
// characters) becomes "/". This is what stops the sign-in endpoint from
// being an open redirect.
func safeReturn(raw, site string) string {
	if raw == "" || len(raw) > 2048 || !printable(raw) || strings.ContainsRune(raw, '\\') {
		return "/"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "/"
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil {
		su, err := url.Parse(site)
		if err != nil || !strings.EqualFold(u.Scheme, su.Scheme) || !strings.EqualFold(u.Host, su.Host) || u.User != nil {
			return "/"
		}
		u.Scheme, u.Host = "", ""
	}
	if u.Opaque != "" || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	out := u.RequestURI()
	if u.Fragment != "" {
		out += "#" + u.EscapedFragment()
	}
	if !strings.HasPrefix(out, "/") || strings.HasPrefix(out, "//") {
		return "/"
	}
	return out
}

// serveUser answers /logto/user with the signed-in user's claims as JSON,
// or 401.
func (h *Handler) serveUser(w http.ResponseWriter, r *http.Request, cs *cookieSet) error {
	u := h.currentUser(w, r, cs)
	w.Header().Set("Cache-Control", "no-store")
	if u == nil {
		w.Header().Set("WWW-Authenticate", `Logto realm="logto"`)
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("logto: not signed in"))
	}
	if h.pastOutageGrace(u) {
		return h.outage(w, u.sub)
	}
	claims := userClaims(u.claims)
	if h.needsUserinfo() {
		info, nu, err := h.client.userinfo(r.Context(), u)
		if nu != u {
			h.writeSession(w, r.Header, cs, nu) // a refresh rotated it
		}
		if err == nil {
			for k, v := range userClaims(info) {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(claims)
}

// signOut ends the session here and at Logto: it clears every module
// cookie, revokes the refresh token, records the session as ended for other
// instances, and sends the browser to Logto's end-session endpoint, which
// returns it to post_sign_out_redirect. A session that has already ended
// (signed out, expired, revoked) only has its cookies cleared: replaying
// one cookie must not cost storage or calls to Logto.
func (h *Handler) signOut(w http.ResponseWriter, r *http.Request, cs *cookieSet) error {
	u := h.readSession(r, cs)
	for _, name := range attemptNames(r.Header, cs) {
		expireAttempt(w, r.Header, name, cs)
	}
	h.clearSession(w, r.Header, cs)
	w.Header().Set("Cache-Control", "no-store")

	landing := h.PostSignOutRedirect
	if strings.HasPrefix(landing, "/") {
		landing = h.siteURL(r) + landing
	}
	if u != nil {
		h.signOutSession(r, u)
	}

	md, _, err := h.client.idp.discover(r.Context())
	if err != nil || md.EndSessionEndpoint == "" {
		// The local session is gone either way; Logto's may outlive it.
		if err != nil {
			h.logger.Warn("Logto unavailable at sign-out; ended the local session only", errField(err))
		}
		http.Redirect(w, r, landing, http.StatusFound)
		return nil
	}
	// No id_token_hint: the Location is in Caddy's access log, and the ID
	// token must not be. Logto returns to post_logout_redirect_uri when
	// client_id names the application (LOGTO.md, "Sign-out").
	q := url.Values{
		"client_id":                {h.client.idp.appID},
		"post_logout_redirect_uri": {landing},
	}
	sep := "?"
	if strings.Contains(md.EndSessionEndpoint, "?") {
		sep = "&"
	}
	http.Redirect(w, r, md.EndSessionEndpoint+sep+q.Encode(), http.StatusFound)
	return nil
}

// signOutSession ends a session at sign-out: here, on the logout list, and its
// refresh token at Logto. Nothing is done for a session that already
// ended for the whole application; one past only this block's own
// idle_timeout or session_lifetime may still pass another block, and is
// ended like any other.
func (h *Handler) signOutSession(r *http.Request, u *user) {
	c := h.client
	// The logout list and the session's own end first: a signed-out cookie
	// sent here again and again must cost no storage read (the rotation
	// hand-off below) and no wait on the session's lock.
	if c.sessionEnded(u, c.now().Unix()) {
		c.live.forget(u.s.ID)
		return
	}
	ls := c.live.get(u.s.ID, c.now().Unix())
	// Under the session's lock, so a refresh in flight here finishes (and
	// its rotation is seen) before the token is chosen.
	ls.mu.Lock()
	u = h.newestForSignOut(r, ls, u)
	ls.mu.Unlock()
	if c.sessionEnded(u, c.now().Unix()) {
		c.live.forget(u.s.ID)
		return
	}
	c.endSession(u.s.ID)
	c.revoked.add(context.WithoutCancel(r.Context()), revokeSession, u.s.ID, u.s.Expires)
	if u.s.Refresh != "" {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		if err := c.idp.revoke(ctx, u.s.Refresh); err != nil {
			h.logger.Warn("could not revoke the refresh token at sign-out", refusalFields(err)...)
		}
		cancel()
	}
	h.logger.Info("user signed out", zap.String("user_id", u.sub))
}

// newestForSignOut is the newest state of u's session known anywhere: this
// instance's, or a rotation another instance handed over through storage.
// Revoking a refresh token already rotated away would leave the live grant
// standing. If storage cannot be read, the newest state known here is used
// (and the failure logged by adoptRotated). The caller holds ls.mu.
func (h *Handler) newestForSignOut(r *http.Request, ls *liveSession, u *user) *user {
	if cur := ls.cur.Load(); cur != nil && cur.s.Gen > u.s.Gen {
		u = cur
	}
	if adopted, err := h.client.adoptRotated(context.WithoutCancel(r.Context()), u); err == nil && adopted != nil {
		u = adopted
	}
	return u
}
