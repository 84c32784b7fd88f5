package e2e

// The cookie jar of the HTTP visitor (visitor_test.go): cookies kept as a
// browser keeps them for localhost.

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// cookieJar is a browser's cookie store for one host name, as browsers keep
// cookies: by name and path, shared by every port of localhost, Secure
// cookies included (Chromium treats http://localhost as a secure context,
// which net/http/cookiejar does not).
type cookieJar struct {
	mu      sync.Mutex
	cookies map[[2]string]*http.Cookie // {name, path}
	seen    []string                   // every value the module ever set
}

func (j *cookieJar) store(resp *http.Response) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range resp.Cookies() {
		if c.Path == "" {
			c.Path = defaultCookiePath(resp.Request.URL.Path)
		}
		key := [2]string{c.Name, c.Path}
		if c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			delete(j.cookies, key)
			continue
		}
		if strings.HasPrefix(c.Name, sessionCookie) {
			j.seen = append(j.seen, c.Value)
		}
		if c.MaxAge > 0 {
			c.Expires = time.Now().Add(time.Duration(c.MaxAge) * time.Second)
		}
		j.cookies[key] = c
	}
}

func defaultCookiePath(p string) string {
	i := strings.LastIndex(p, "/")
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// header is the Cookie header a browser sends to path.
func (j *cookieJar) header(path string) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var cs []*http.Cookie
	for _, c := range j.cookies {
		if !c.Expires.IsZero() && c.Expires.Before(time.Now()) {
			continue
		}
		if path == c.Path || strings.HasPrefix(path, strings.TrimSuffix(c.Path, "/")+"/") {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b *http.Cookie) int { return len(b.Path) - len(a.Path) })
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Name + "=" + c.Value
	}
	return strings.Join(parts, "; ")
}

func (j *cookieJar) get(name string) (string, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for k, c := range j.cookies {
		if k[0] == name {
			return c.Value, true
		}
	}
	return "", false
}

// seenValues are the values of every module cookie the jar was ever given.
func (j *cookieJar) seenValues() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.seen)
}

// names lists the cookie names held, for failure messages.
func (j *cookieJar) names() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []string
	for k := range j.cookies {
		out = append(out, k[0])
	}
	slices.Sort(out)
	return out
}

// sessionCookie is the module's session cookie on localhost (a secure
// context, so the __Host- form).
const sessionCookie = "__Host-logto"

// moduleCookiesIn lists the cookies of a Cookie header that are the
// module's (named "logto" or "__Host-logto", and their chunks and sign-in
// attempts). On localhost a browser sends the dev IdP's cookies to every
// port, Logto's `_logto` among them, so a test asking whether the module's
// cookies reached an upstream must look at names, not at the word.
func moduleCookiesIn(header string) []string {
	var own []string
	for _, part := range strings.Split(header, ";") {
		name, _, _ := strings.Cut(strings.TrimSpace(part), "=")
		base := strings.TrimPrefix(name, "__Host-")
		if base == "logto" || strings.HasPrefix(base, "logto.") || strings.HasPrefix(base, "logto-") {
			own = append(own, name)
		}
	}
	return own
}
