package logto

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// gate lets a request through when it carries a valid session (and the
// session meets the rules), and otherwise sends it to sign in or answers
// 401.
//
// Its own frame stays small: it is on the stack while everything after it
// (a file server, a proxy) runs, and a deeper stack than the goroutine has
// costs a stack copy, again after every GC cycle that shrinks the stack.
func (h *Handler) gate(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if ok, err := h.admit(w, r); !ok {
		// Whatever the answer (a redirect, a 401 or 403, an error for
		// handle_errors), the session cookie may have been set on the way.
		markPrivate(w.Header())
		return err
	}
	return next.ServeHTTP(privateIfCookie(w), r)
}

// admit does the gate's work: it reports whether the request goes on to
// the next handler, and otherwise the error to return (nil when it has
// answered the request itself).
//
//go:noinline
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) (bool, error) {
	st, first := requestStateOf(r)
	if !first {
		// An earlier logto handler removed the module's cookies; this one
		// sees what the client sent.
		r.Header["Cookie"] = st.cookies
	}

	// Identity headers are set by us or not at all, for anonymous requests
	// too: a client must never be able to supply its own. Only what an
	// earlier logto handler of this request set is kept.
	h.stripIdentity(r, st)

	cs := h.cookiesFor(r)
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	// A request with an access token is judged on it alone, before any
	// session is read, so it never gets a cookie or a redirect.
	if len(h.Bearer) > 0 {
		if cred := bearerCredentials(st.auth, r); cred.kind != credNone || h.BearerOnly {
			return h.gateBearer(w, r, st, first, repl, cred)
		}
	}
	// One pass over the Cookie header finds the session cookie and the
	// module's cookies to strip. The header is changed only once the user
	// is known: keeping the session alive (a refresh, the idle clock)
	// expires stale chunks, which it learns of from the header.
	sc := cookieScan{want: cs.session}
	kept, strip := sc.strip(r.Header["Cookie"], h.ownsCookie, st.lineBuf())
	// An earlier logto handler of the same application may have found the
	// user already (a site-wide block and a stricter one for /admin).
	u := h.userFor(w, r, repl, cs, st, sc.first, sc.found)
	if first {
		// One provider per request, reading the state, so a later handler
		// (or a refresh) that changes the user changes the placeholders.
		repl.Map(st.placeholder)
	}
	// Removed now, so no path on from here (an error for handle_errors,
	// which may proxy, included) carries them.
	if strip {
		setCookieLines(r.Header, kept)
	}

	protected, err := h.protects(r)
	if err != nil {
		return false, err
	}
	if u != nil && protected && !h.withinLimits(u) {
		// This block's own session_lifetime and idle_timeout: for what it
		// protects, the user is not signed in.
		u, st.user = nil, nil
		dropIdentity(r, repl, st)
	}
	if u == nil {
		if h.Pass || !protected {
			return true, nil
		}
		return false, h.signInFirst(w, r, cs, st.cookies)
	}
	if protected && h.stepUp && !h.needs.coveredBy(u) {
		return false, h.stepUpFirst(w, r, cs, u, st.cookies, h.needs.missingFrom(u))
	}

	if protected && h.needsRequestAuth() {
		if ok, err := h.authorizeRequest(w, r, repl, cs, st, u); !ok {
			return false, err
		}
	}
	if len(h.headerUp) > 0 {
		h.setHeaders(r, repl, st)
	}
	return true, nil
}

// protects reports whether the block's matcher selects r (every request,
// without one): what it protects needs a user, the rest goes on anonymous.
func (h *Handler) protects(r *http.Request) (bool, error) {
	if len(h.protect) == 0 {
		return true, nil
	}
	ok, err := h.protect.AnyMatchWithError(r)
	if err != nil {
		return false, caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return ok, nil
}

// authorizeRequest applies the block's rules and tokens to a signed-in
// user, as admit does: whether the request goes on, or the error. Apart
// from admit, which runs on every request, to keep its stack frame small.
//
//go:noinline
func (h *Handler) authorizeRequest(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, cs *cookieSet, st *requestState, u *user) (bool, error) {
	ra, err := h.authorize(w, r, repl, cs, u, st.cookies)
	if errors.Is(err, errResponded) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	st.user = ra.u // a refresh may have replaced it
	// Set, not mapped: a later, more specific logto handler's token
	// replaces this one's.
	if ra.token != "" {
		repl.Set("http.auth.logto.access_token", ra.token)
	}
	if ra.org != "" {
		repl.Set("http.auth.logto.organization_id", ra.org)
	}
	return true, nil
}

// setHeaders sets the configured identity headers for what follows.
//
//go:noinline
func (h *Handler) setHeaders(r *http.Request, repl *caddy.Replacer, st *requestState) {
	for _, f := range h.headerUp {
		if v := f.expand(repl); v != "" {
			r.Header.Set(f.name, v)
			st.headers.add(f.name)
		}
	}
}

// ownsCookie reports whether a cookie is one of the module's, under either
// name (HTTPS or plain HTTP): one pass over the header strips both.
func (h *Handler) ownsCookie(name string) bool {
	return ownsCookie(name, h.cookie.secure.session) || ownsCookie(name, h.cookie.plain.session)
}

// signInFirst answers a request that needs a user it does not have. A
// navigation's sign-in sees the request's own cookies (cookies, the Cookie
// header before stripping) to prune earlier attempts; nothing runs after
// its redirect, and should it fail, the cookies are stripped again before
// the error goes to handle_errors.
func (h *Handler) signInFirst(w http.ResponseWriter, r *http.Request, cs *cookieSet, cookies []string) error {
	if cookies != nil {
		r.Header["Cookie"] = cookies
	}
	err := h.unauthenticated(w, r, cs)
	h.stripModuleCookies(r)
	return err
}

// stripModuleCookies removes the module's cookies from the request: they
// are ours, never forwarded to what follows (a file server, an upstream
// app, handle_errors).
func (h *Handler) stripModuleCookies(r *http.Request) {
	stripMatching(r.Header, h.ownsCookie, nil)
}

// errResponded tells the gate that a helper has written the response (a
// redirect to sign in) and nothing more is to be done.
var errResponded = errors.New("logto: response written")

// maxReturnURL bounds the return URL kept in a sign-in attempt's cookie.
const maxReturnURL = 2048

// currentUser returns the signed-in user of the request, or nil. It keeps
// the session alive: refreshes it when its ID token expired, re-issues the
// cookie when the session changed, and clears cookies that are no longer
// good. A cookie that is tampered with, truncated, expired, sealed with an
// unknown key or revoked means "signed out", never an error.
func (h *Handler) currentUser(w http.ResponseWriter, r *http.Request, cs *cookieSet) *user {
	value, ok := readCookie(r.Header, cs.session)
	return h.liveUser(w, r, cs, value, ok)
}

// liveUser is currentUser for the session cookie's value, already read
// (ok is false without one).
func (h *Handler) liveUser(w http.ResponseWriter, r *http.Request, cs *cookieSet, value string, ok bool) *user {
	u := h.sessionOf(r.Context(), value, ok)
	if u == nil {
		return nil
	}
	c := h.client
	now := c.now().Unix()
	// Only what ends the session for every block clears it here; this
	// block's own limits apply where it protects the request (admit), so
	// a strict block that runs first does not sign the user out of the
	// rest of the site.
	if c.sessionEnded(u, now) {
		h.clearSession(w, r.Header, cs)
		return nil
	}
	cur, err := c.current(r.Context(), u)
	if err != nil {
		h.clearSession(w, r.Header, cs)
		return nil
	}
	// Activity is tracked for the strictest idle_timeout of the
	// application's blocks, whichever block sees the request.
	if idle := c.blocks.minIdle.Load(); idle > 0 && now-cur.s.Seen > max(idle/10, 1) {
		cur = h.touch(cur, now)
	}
	if cur != u {
		h.writeSession(w, r.Header, cs, cur)
	}
	return cur
}

// touch returns the session with its last activity set to now, sealed
// anew, for the idle timeout.
//
//go:noinline
func (h *Handler) touch(u *user, now int64) *user {
	c := h.client
	// Only the activity fields change; the claims and what is derived
	// from them are shared (a user is read-only once made).
	nu := new(*u)
	nu.s.Idle = max(u.s.Idle, now-u.s.Seen)
	nu.s.Seen = now
	nu.cookie = c.sessions.Seal(sessionAAD, nu.encode())
	c.users.put(nu.cookie, nu)
	return nu
}

// readSession decodes the session cookie, from the cache when this cookie
// was seen before.
func (h *Handler) readSession(r *http.Request, cs *cookieSet) *user {
	value, ok := readCookie(r.Header, cs.session)
	return h.sessionOf(r.Context(), value, ok)
}

// sessionOf is readSession for the cookie's value, already read.
func (h *Handler) sessionOf(ctx context.Context, value string, ok bool) *user {
	if !ok || value == "" {
		return nil
	}
	if u := h.client.users.get(value); u != nil {
		return u
	}
	return h.openSession(ctx, value)
}

// openSession decrypts and decodes a session cookie not seen before, and
// caches the result. It is kept out of sessionOf, which runs on every
// request, so that the hot path's stack frames stay small.
//
//go:noinline
func (h *Handler) openSession(ctx context.Context, value string) *user {
	c := h.client
	plain, err := c.sessions.Open(sessionAAD, value)
	if err != nil {
		h.logger.Debug("session cookie rejected", zap.String("reason", "does not decrypt"))
		return nil
	}
	u, err := decodeUser(plain)
	if err != nil {
		h.logger.Debug("session cookie rejected", zap.String("reason", "malformed"))
		return nil
	}
	if err := c.verifyStored(ctx, u.s.IDToken); err != nil {
		h.logger.Warn("session cookie rejected: its ID token does not verify", errField(err))
		return nil
	}
	u.cookie = value
	c.users.put(value, u)
	return u
}

// sessionValid checks the session's lifetimes, this block's limits and
// the logout list.
func (h *Handler) sessionValid(u *user, now int64) bool {
	return h.limitsHold(u, now) && !h.client.sessionEnded(u, now)
}

// sessionEnded reports whether a session has ended for every block of the
// application: expired, past the most lenient idle_timeout and
// session_lifetime of its blocks, revoked, or past its ID token without a
// refresh token. A stricter block's own limits are not in it.
func (c *client) sessionEnded(u *user, now int64) bool {
	if now >= u.s.Expires || !withinLimits(u, now, c.blocks.maxIdle.Load(), c.blocks.maxLifetime.Load()) {
		return true
	}
	// Without a refresh token nothing can confirm with Logto that the user
	// is still allowed in, so the session lasts as long as its ID token.
	if u.s.Refresh == "" && u.idExp != 0 && now > u.idExp+int64(clockSkew/time.Second) {
		return true
	}
	return c.revoked.has(u)
}

// writeSession sets the session cookie; req is the request's header, from
// which it learns what stale chunks to expire.
func (h *Handler) writeSession(w http.ResponseWriter, req http.Header, cs *cookieSet, u *user) {
	o := cs.opts
	o.MaxAge = int(u.s.Expires - h.client.now().Unix())
	if o.MaxAge < 1 {
		o.MaxAge = 1
	}
	if err := writeCookie(w.Header(), req, cs.session, u.cookie, o); err != nil {
		// Too big even for chunks: the cookie has been expired instead, so
		// the user signs in again rather than keeping stale tokens.
		h.logger.Error("cannot store the session cookie; the user is signed out", errField(err), zap.Int("bytes", len(u.cookie)))
	}
}

func (h *Handler) clearSession(w http.ResponseWriter, req http.Header, cs *cookieSet) {
	clearCookie(w.Header(), req, cs.session, cs.opts)
}

// unauthenticated answers a request without a session: a browser
// navigation is sent to sign in and comes back here; anything else (fetch,
// XHR, API clients, WebSocket upgrades) gets 401, since a redirect to a
// sign-in page is useless to it.
func (h *Handler) unauthenticated(w http.ResponseWriter, r *http.Request, cs *cookieSet) error {
	if isNavigation(r) {
		return h.startSignIn(w, r, cs, h.returnHere(r), h.configParams())
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Logto realm=%q, sign_in=%q`, "logto", h.paths.signIn))
	if len(h.Bearer) > 0 {
		w.Header().Add("WWW-Authenticate", bearerChallenge)
	}
	w.Header().Set("Cache-Control", "no-store")
	return caddyhttp.Error(http.StatusUnauthorized, errors.New("logto: sign-in required"))
}

// isNavigation tells a top-level browser navigation from everything else.
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate"
	}
	if r.Header.Get("X-Requested-With") != "" {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// originalRequestURI is the URI the client asked for, before any rewrite
// (handle_path, uri strip_prefix) changed r.URL.
func originalRequestURI(r *http.Request) string {
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && or.URL != nil {
		return or.URL.RequestURI()
	}
	return r.URL.RequestURI()
}

// placeholder serves {http.auth.user.*} for a signed-in user. Claims the ID
// token does not carry are empty, not unknown, so templates and header_up
// see "" rather than the placeholder's own text.
func (u *user) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "http.auth.user.")
	if !ok {
		if key == "http.auth.logto.id_token" {
			return u.s.IDToken, true
		}
		return nil, false
	}
	if name == "id" {
		return u.id, true
	}
	if v, ok := u.values[name]; ok {
		return v, true
	}
	return "", true
}

func errField(err error) zap.Field { return zap.Error(err) }
