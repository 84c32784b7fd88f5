package logto

import (
	"net"
	"net/http"
	"strings"
)

// sessionAAD binds sealed session values to their purpose, whatever the
// cookie's name on the wire.
const sessionAAD = "session"

// cookieSet is the names and attributes of the module's cookies for one
// kind of request (HTTPS or plain HTTP).
type cookieSet struct {
	session string // the session cookie; every module cookie's name starts with it
	attempt string // prefix of the per-attempt sign-in cookies
	opts    CookieOptions
}

type cookieJarNames struct{ secure, plain cookieSet }

func newCookieNames(base string) cookieJarNames {
	mk := func(prefix string, secure bool) cookieSet {
		return cookieSet{
			session: prefix,
			attempt: prefix + "-signin-",
			opts:    CookieOptions{Secure: secure, Path: "/", SameSite: http.SameSiteLaxMode},
		}
	}
	return cookieJarNames{secure: mk("__Host-"+base, true), plain: mk(base, false)}
}

// cookiesFor picks the cookie set: "__Host-" cookies with the Secure
// attribute on HTTPS and on localhost (which browsers treat as a secure
// context), plain ones on plain HTTP elsewhere, where browsers would drop
// Secure cookies.
func (h *Handler) cookiesFor(r *http.Request) *cookieSet {
	if r.TLS != nil || strings.HasPrefix(h.BaseURL, "https://") || isLoopback(r.Host) {
		return &h.cookie.secure
	}
	return &h.cookie.plain
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
