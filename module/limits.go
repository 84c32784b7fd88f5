package logto

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
)

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
