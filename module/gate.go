package logto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	st, first := requestStateOf(r)
	if ok, err := h.admit(w, r, st, first); !ok {
		// Whatever the answer (a redirect, a 401 or 403, an error for
		// handle_errors), the session cookie may have been set on the way.
		markPrivate(w.Header())
		st.decision = refusal(st.decision, err)
		if first {
			h.client.metrics.count(st.decision)
		}
		return err
	}
	st.decision = admission(st)
	err := next.ServeHTTP(privateIfCookie(w), r)
	if first {
		// Counted once, when the request is done, for the decision of the
		// last logto handler it passed (a site-wide block, then /admin's).
		h.client.metrics.count(st.decision)
	}
	return err
}

// admit does the gate's work: it reports whether the request goes on to
// the next handler, and otherwise the error to return (nil when it has
// answered the request itself).
//
//go:noinline
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, st *requestState, first bool) (bool, error) {
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
	if u != nil && h.pastOutageGrace(u) {
		// Logto has not confirmed the user for longer than this block
		// allows: until it does, the session names no one here. The
		// cookie stays, for the refresh that succeeds once Logto is back.
		sub := u.sub
		u, st.user = nil, nil
		dropIdentity(r, repl, st)
		if protected && !h.Pass {
			return false, h.outage(w, sub)
		}
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
	c.cacheUser(nu.cookie, nu)
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

// sessionOpens counts session cookies decrypted (decoded-session cache
// misses), for the tests and benchmarks of what a miss costs.
var sessionOpens atomic.Int64

// openSession decrypts and decodes a session cookie not seen before, and
// caches the result. It is kept out of sessionOf, which runs on every
// request, so that the hot path's stack frames stay small.
//
//go:noinline
func (h *Handler) openSession(ctx context.Context, value string) *user {
	c := h.client
	sessionOpens.Add(1)
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
	c.cacheUser(value, u)
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

// idTokenHeader is the header Logto's Protected App forwards the ID token
// in; a client's copy is always removed, configured or not.
var idTokenHeader = http.CanonicalHeaderKey("Logto-ID-Token")

// requestState is what the logto handlers of one request share: several
// blocks may match a request (a site-wide pass block and a stricter one for
// /admin), and the first one removes the cookies the others need.
type requestState struct {
	cookies []string     // the Cookie header as the client sent it
	auth    []string     // the Authorization header as the client sent it
	client  *client      // the application user belongs to
	user    *user        // the signed-in user, or nil
	bearer  *bearerToken // the request's verified access token, or nil
	headers nameSet      // identity headers logto handlers set

	// line holds the stripped Cookie header's one line for the first
	// logto handler that strips it (see cookieScan.strip); lineTaken keeps a
	// later one from rewriting a slice the request's header may still hold.
	line      [1]string
	lineTaken bool

	decision decision // of the last logto handler, counted by the first
}

// lineBuf hands out st.line once per request, and nil after.
func (st *requestState) lineBuf() *[1]string {
	if st.lineTaken {
		return nil
	}
	st.lineTaken = true
	return &st.line
}

// nameSet is a small set of header names that does not allocate for the
// few a configuration sets.
type nameSet struct {
	fixed [4]string
	n     int
	more  []string
}

func (s *nameSet) has(name string) bool {
	for i := range s.n {
		if s.fixed[i] == name {
			return true
		}
	}
	return slices.Contains(s.more, name)
}

func (s *nameSet) add(name string) {
	if s.has(name) {
		return
	}
	if s.n < len(s.fixed) {
		s.fixed[s.n] = name
		s.n++
		return
	}
	s.more = append(s.more, name)
}

// stateVar names the request variable holding the requestState.
const stateVar = "logto.request"

// requestStateOf returns the request's state, creating it (first is true)
// for the first logto handler of the request. It reads and writes Caddy's
// variables map itself, as GetVar and SetVar would, so that the request's
// context chain (a dozen values deep under Caddy) is walked once, not
// twice, on every request.
func requestStateOf(r *http.Request) (st *requestState, first bool) {
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if st, ok := vars[stateVar].(*requestState); ok {
		return st, false
	}
	st = &requestState{cookies: r.Header["Cookie"], auth: r.Header["Authorization"]}
	if vars != nil {
		vars[stateVar] = st
	}
	return st, true
}

// String keeps {http.vars.logto.request} from printing cookies or tokens.
func (st *requestState) String() string { return "" }

// placeholder serves {http.auth.user.*} and {http.auth.logto.*}. For a
// request without a user they are empty, not unknown: respond and other
// handlers that keep unknown placeholders would print "{http.auth.user.id}".
func (st *requestState) placeholder(key string) (any, bool) {
	if t := st.bearer; t != nil {
		if v, ok := t.placeholder(key); ok {
			return v, true
		}
	} else if u := st.user; u != nil {
		if v, ok := u.placeholder(key); ok {
			return v, true
		}
	}
	if strings.HasPrefix(key, "http.auth.user.") || strings.HasPrefix(key, "http.auth.logto.") {
		return "", true
	}
	return nil, false
}

// userFor returns the signed-in user of the application, or nil. An
// earlier logto handler of the same application may have found the user
// already (a site-wide block and a stricter one for /admin). Either way,
// the caller applies this block's own limits (withinLimits) where it
// protects the request.
//
// first and found are what the gate's scan of the Cookie header found of
// the session cookie: its first part, and whether there is one.
func (h *Handler) userFor(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, cs *cookieSet, st *requestState, first string, found bool) (u *user) {
	if st.user != nil && st.client == h.client {
		return st.user
	}
	// Chunks, if any, are read from the header, not yet stripped.
	value, ok := cookieValue(r.Header, cs.session, first, found)
	if u = h.liveUser(w, r, cs, value, ok); u != nil {
		if st.bearer != nil {
			// An earlier block accepted an access token; this one judges
			// the session, so the session's user replaces the token's
			// identity, headers included (as gateBearer does the other
			// way round).
			dropIdentity(r, repl, st)
			st.bearer = nil
		}
		st.client, st.user = h.client, u
	}
	return u
}

// pastOutageGrace reports whether the session's ID token expired more than
// this block's outage_grace ago and has still not been renewed: Logto is
// unreachable or failing (or, in a cluster, storage cannot say whether
// another instance rotated the refresh token), and current has only
// scheduled another try. A session without a refresh token ends with its
// ID token instead (sessionEnded).
func (h *Handler) pastOutageGrace(u *user) bool {
	if u.s.Refresh == "" || u.idExp == 0 {
		return false
	}
	return h.client.now().Unix() > u.idExp+h.outageGrace
}

// outage answers a protected request whose session is past outage_grace:
// 503, with when the refresh will be tried again. Navigations too: a
// redirect to sign in would only lead to a Logto that does not answer, and
// the user is signed in.
//
//go:noinline
func (h *Handler) outage(w http.ResponseWriter, sub string) error {
	w.Header().Set("Retry-After", strconv.Itoa(int(refreshRetry/time.Second)))
	w.Header().Set("Cache-Control", "no-store")
	h.logger.Info("request refused: Logto has not renewed the session for longer than outage_grace; the session is kept",
		zap.String("user_id", sub))
	return caddyhttp.Error(http.StatusServiceUnavailable, errOutage)
}

// errOutage is why a session past outage_grace is not served.
var errOutage = fmt.Errorf("%w: the session cannot be renewed and its outage_grace is over", errUnavailable)

// withinLimits applies this block's session_lifetime and idle_timeout to
// the user.
func (h *Handler) withinLimits(u *user) bool {
	return h.limitsHold(u, h.client.now().Unix())
}

// limitsHold checks the session against this block's session_lifetime and
// idle_timeout.
func (h *Handler) limitsHold(u *user, now int64) bool {
	return withinLimits(u, now, int64(time.Duration(h.IdleTimeout)/time.Second), int64(time.Duration(h.SessionLifetime)/time.Second))
}

// withinLimits checks the session against an idle timeout and a lifetime,
// in seconds (0: none; an application whose blocks are not known yet). Idle is the time since the last activity or,
// should the session once have gone unused longer (activity another block
// saw since does not undo that), that longest stretch. A session older
// than the lifetime allows has lapsed too (a stricter block, or the config
// shrank).
func withinLimits(u *user, now, idle, lifetime int64) bool {
	if idle > 0 && (now-u.s.Seen > idle || u.s.Idle > idle) {
		return false
	}
	return lifetime <= 0 || now-u.s.Created/1000 <= lifetime
}

// dropIdentity takes back what earlier logto handlers of the request set
// for a user this block does not accept (its own limits lapsed): their
// identity headers and the route token and organization placeholders, so
// the upstream of a block that treats the request as anonymous is not told
// who it is.
//
//go:noinline
func dropIdentity(r *http.Request, repl *caddy.Replacer, st *requestState) {
	for i := range st.headers.n {
		r.Header.Del(st.headers.fixed[i])
	}
	for _, name := range st.headers.more {
		r.Header.Del(name)
	}
	st.headers = nameSet{}
	repl.Delete("http.auth.logto.access_token")
	repl.Delete("http.auth.logto.organization_id")
}

// appBlocks is what the logto blocks of one application must know of each
// other. Several blocks may see one request (a site-wide block, a stricter
// one for /admin), and the first to see it does work on behalf of all:
// it tracks the session's activity for the strictest idle_timeout, and
// removes the client's copy of every identity header any block sets, so
// that no error path (a flow endpoint's 401, a 401 of the first block) takes
// one on to handle_errors.
type appBlocks struct {
	mu     sync.Mutex
	blocks map[*Handler]bool

	// Read on every request, without locks.
	minIdle atomic.Int64             // shortest idle_timeout of the blocks, seconds; 0: none
	headers atomic.Pointer[[]string] // identity header names, Logto-ID-Token included

	// The most lenient limits of the blocks, seconds: past them a session
	// has ended for every block. maxIdle is 0 when some block has no
	// idle_timeout.
	maxIdle, maxLifetime atomic.Int64
}

// join registers h's idle timeout and headers with its application.
func (a *appBlocks) join(h *Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.blocks == nil {
		a.blocks = map[*Handler]bool{}
	}
	a.blocks[h] = true
	a.recompute()
}

// leave forgets h (its config was unloaded).
func (a *appBlocks) leave(h *Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.blocks, h)
	a.recompute()
}

// recompute derives what requests read; the caller holds a.mu.
func (a *appBlocks) recompute() {
	var idle, maxIdle, lifetime int64
	unlimited := false // some block has no idle_timeout
	names := []string{idTokenHeader}
	for h := range a.blocks {
		s := int64(time.Duration(h.IdleTimeout) / time.Second)
		if s > 0 && (idle == 0 || s < idle) {
			idle = s
		}
		unlimited = unlimited || s <= 0
		maxIdle = max(maxIdle, s)
		lifetime = max(lifetime, int64(time.Duration(h.SessionLifetime)/time.Second))
		for _, f := range h.headerUp {
			if !slices.Contains(names, f.name) {
				names = append(names, f.name)
			}
		}
	}
	if unlimited {
		maxIdle = 0
	}
	a.minIdle.Store(idle)
	a.maxIdle.Store(maxIdle)
	a.maxLifetime.Store(lifetime)
	a.headers.Store(&names)
}

// stripIdentity removes the client's copy of every identity header of the
// application, keeping those an earlier logto handler of this request set
// (st may be nil: none did). A copy is any header whose name equals one of
// them but for case and "_" or "." for "-": CGI and FastCGI (php_fastcgi)
// turn X-User-Id and X_User_Id alike into HTTP_X_USER_ID, and PHP folds
// X.User.Id onto it too, so removing the exact name only would let a
// lookalike through as the identity wherever Caddy lets it in
// (expected_underscore_headers, expected_dot_headers). One pass over the
// request's header, with no allocation: it runs on every request.
func (h *Handler) stripIdentity(r *http.Request, st *requestState) {
	names := idTokenOnly
	if p := h.client.blocks.headers.Load(); p != nil {
		names = *p
	}
	for name := range r.Header {
		if isIdentityHeader(name, names) && (st == nil || !st.headers.has(name)) {
			delete(r.Header, name)
		}
	}
}

// idTokenOnly is the identity header of an application whose blocks are
// not known yet.
var idTokenOnly = []string{idTokenHeader}

// isIdentityHeader reports whether a request header named name is, to a
// CGI backend, one of the identity headers names.
func isIdentityHeader(name string, names []string) bool {
	for _, n := range names {
		if sameCGIName(name, n) {
			return true
		}
	}
	return false
}

// sameCGIName reports whether two header names reach a CGI or FastCGI
// backend (PHP's $_SERVER included) as the same variable: ASCII case
// aside, "-", "_" and "." alike. Header names are tokens, ASCII only: Go's
// HTTP/1, HTTP/2 and HTTP/3 servers refuse any other.
func sameCGIName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if x, y := a[i], b[i]; x != y && cgiFold(x) != cgiFold(y) {
			return false
		}
	}
	return true
}

func cgiFold(c byte) byte {
	switch {
	case c == '_' || c == '.':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// headerField is a request header set for the handlers that follow.
type headerField struct {
	name, value string
	// key is the placeholder when value is one and nothing else
	// ("{http.auth.user.id}", the usual case): its value is then used as
	// it is, where ReplaceAll would build a copy on every request.
	key string
}

// expand is the field's value for this request, as ReplaceAll gives it.
func (f headerField) expand(repl *caddy.Replacer) string {
	if f.key != "" {
		v, _ := repl.GetString(f.key) // ToString(nil) is "", as ReplaceAll makes an unknown one
		return v
	}
	return repl.ReplaceAll(f.value, "")
}

// newHeaderField compiles a header_up field.
func newHeaderField(name, value string) headerField {
	f := headerField{name: http.CanonicalHeaderKey(name), value: value}
	if key, ok := strings.CutPrefix(value, "{"); ok {
		if key, ok = strings.CutSuffix(key, "}"); ok && key != "" &&
			!strings.ContainsAny(key, `{}\`) && !strings.HasPrefix(key, "file.") {
			// Braces or escapes inside, or {file.*} (which ReplaceAll
			// memoizes), are left to ReplaceAll.
			f.key = key
		}
	}
	return f
}

// privateIfCookie makes a response that sets a cookie (a new, refreshed,
// re-sealed or cleared session) uncacheable by shared caches: a CDN in front
// of Caddy must never hand one user's session cookie to another. The
// header is set now, for error responses written by handle_errors, and
// again when the response is written, since what follows (an upstream, a
// `header` directive) may set its own Cache-Control. Responses that set no
// cookie are left alone, and cost one map lookup.
func privateIfCookie(w http.ResponseWriter) http.ResponseWriter {
	if !markPrivate(w.Header()) {
		return w
	}
	return &privateWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
}

// markPrivate forces Cache-Control private on a response that sets a
// cookie, and reports whether it did.
func markPrivate(h http.Header) bool {
	if len(h["Set-Cookie"]) == 0 {
		return false
	}
	forcePrivate(h)
	return true
}

// privateWriter forces Cache-Control: private when the header is written.
type privateWriter struct {
	*caddyhttp.ResponseWriterWrapper
	wrote bool
}

func (pw *privateWriter) WriteHeader(status int) {
	if !pw.wrote && status >= 200 {
		pw.wrote = true
		forcePrivate(pw.Header())
	}
	pw.ResponseWriterWrapper.WriteHeader(status)
}

func (pw *privateWriter) Write(b []byte) (int, error) {
	if !pw.wrote {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriterWrapper.Write(b)
}

func (pw *privateWriter) ReadFrom(r io.Reader) (int64, error) {
	if !pw.wrote {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriterWrapper.ReadFrom(r)
}

// forcePrivate keeps what Cache-Control says for the browser (max-age,
// no-cache, ...) but takes away what lets a shared cache store it.
func forcePrivate(h http.Header) {
	if v := h["Cache-Control"]; len(v) == 1 && (v[0] == "no-store" || v[0] == "private") {
		return // already what the loop below would make of it
	}
	var keep []string
	private := false
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			d = strings.TrimSpace(d)
			name, _, _ := strings.Cut(strings.ToLower(d), "=")
			switch name {
			case "":
				continue
			case "public", "s-maxage", "proxy-revalidate":
				continue
			case "private", "no-store":
				private = true
			}
			keep = append(keep, d)
		}
	}
	if !private {
		keep = append([]string{"private"}, keep...)
	}
	h.Set("Cache-Control", strings.Join(keep, ", "))
}
