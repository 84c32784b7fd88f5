package logto

import (
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

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
