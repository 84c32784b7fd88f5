package e2e

// What the tests send, besides the harness's browsers: visitors for
// *.localhost hosts, a sign-in by plain HTTP, the session cookies a visitor
// holds, and forged or replayed back-channel logout tokens.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// --- visitors ----------------------------------------------------------------------

// dialLoopback resolves localhost and every *.localhost name to 127.0.0.1,
// as browsers do (RFC 6761), whatever the system resolver thinks.
func dialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// loopbackVisitor is a visitor for one *.localhost host name. The harness's
// jar keeps cookies per browser, not per host, so a test uses one visitor
// per host to keep host-only cookies apart, as a browser would.
func loopbackVisitor(t *testing.T) *visitor {
	v := newVisitor(t)
	v.hc.Transport = &http.Transport{DialContext: dialLoopback, MaxIdleConnsPerHost: 64}
	return v
}

// signInAs navigates to siteURL+path, expects to be sent to the IdP, signs
// in there as username and follows the callback; it returns the callback's
// answer (whose Set-Cookie lines carry the new session).
func signInAs(t *testing.T, v *visitor, siteURL, idpBase, path, username string) *response {
	t.Helper()
	first := v.navigate(siteURL + path)
	if !first.isRedirect() || !strings.HasPrefix(first.location(), idpBase+"/oidc/auth") {
		t.Fatalf("GET %s%s: want a redirect to the IdP, got %s Location=%q\n%s", siteURL, path, first.Status, first.location(), tail(first.body, 500))
	}
	callback := v.loginAtIdP(first.location(), siteURL+"/logto/sign-in-callback", username, username)
	r := v.navigate(callback)
	if !r.isRedirect() {
		t.Fatalf("sign-in callback for %s at %s: %s\n%s", username, siteURL, r.Status, tail(r.body, 500))
	}
	if _, ok := v.jar.get(sessionCookie); !ok {
		t.Fatalf("no %s cookie after %s signed in at %s; cookies: %v", sessionCookie, username, siteURL, v.jar.names())
	}
	return r
}

// isSessionCookie tells the session cookie and its chunks
// (__Host-logto.1, ...) from the other cookies.
func isSessionCookie(name string) bool {
	rest, ok := strings.CutPrefix(name, sessionCookie)
	return ok && (rest == "" || len(rest) == 2 && rest[0] == '.' && rest[1] >= '1' && rest[1] <= '9')
}

// sessionCookieHeader is a snapshot of the session cookie and its chunks as a
// Cookie header value.
func sessionCookieHeader(t testing.TB, v *visitor) string {
	t.Helper()
	v.jar.mu.Lock()
	defer v.jar.mu.Unlock()
	var parts []string
	for k, c := range v.jar.cookies {
		if isSessionCookie(k[0]) {
			parts = append(parts, c.Name+"="+c.Value)
		}
	}
	if len(parts) == 0 {
		t.Fatalf("the visitor holds no session cookie")
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// requestWithCookie sends a request with exactly the given Cookie header (no
// jar), as a client replaying a copied or stale cookie does.
func requestWithCookie(t *testing.T, method, u, cookie string, hdr ...string) *response {
	t.Helper()
	v := loopbackVisitor(t)
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Sec-Fetch-Mode", "cors")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return v.do(req)
}

// sessionSetCookies are the Set-Cookie lines of an answer that set the
// session cookie or its chunks (not those that expire them).
func sessionSetCookies(r *response) []string {
	var out []string
	for _, line := range r.Header.Values("Set-Cookie") {
		name, _, _ := strings.Cut(line, "=")
		if isSessionCookie(name) && !strings.Contains(strings.ToLower(line), "max-age=0") {
			out = append(out, line)
		}
	}
	return out
}

// longestSetCookie is the longest Set-Cookie line of an answer.
func longestSetCookie(r *response) int {
	n := 0
	for _, line := range r.Header.Values("Set-Cookie") {
		n = max(n, len(line))
	}
	return n
}

// --- logout tokens -----------------------------------------------------------------

// logoutCatcher is a back-channel logout URI of our own: it keeps every
// logout token the IdP sends and, when forward is set, passes it on to a
// Caddy (so genuine tokens for that Caddy's application can be replayed
// later) and answers with Caddy's status.
type logoutCatcher struct {
	srv     *httptest.Server
	forward string
	mu      sync.Mutex
	tokens  []string
	status  []int
}

func newLogoutCatcher(t *testing.T, forward string) *logoutCatcher {
	c := &logoutCatcher{forward: forward}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		tok := r.PostForm.Get("logout_token")
		status := http.StatusOK
		if c.forward != "" {
			resp, err := http.PostForm(c.forward, url.Values{"logout_token": {tok}})
			if err != nil {
				status = http.StatusBadGateway
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
		}
		c.mu.Lock()
		c.tokens = append(c.tokens, tok)
		c.status = append(c.status, status)
		c.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *logoutCatcher) received() ([]string, []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.tokens), slices.Clone(c.status)
}

// forgedLogoutToken is a logout token with every claim right, signed by a
// key of our own (ES384, an unknown kid).
func forgedLogoutToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "ES384", "typ": "logout+jwt", "kid": "forged-" + randomHex(4)}) + "." + enc(claims)
	sum := sha512.Sum384([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 96)
	r.FillBytes(sig[:48])
	s.FillBytes(sig[48:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// logoutClaims are the claims of a logout token for sub.
func logoutClaims(issuer, aud, sub string) map[string]any {
	return map[string]any{
		"iss":    issuer,
		"aud":    aud,
		"sub":    sub,
		"iat":    time.Now().Unix(),
		"exp":    time.Now().Add(2 * time.Minute).Unix(),
		"jti":    randomHex(12),
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
}

// postLogoutToken sends a logout token to a Caddy's back-channel endpoint.
func postLogoutToken(t testing.TB, siteURL, token string) int {
	t.Helper()
	resp, err := http.PostForm(siteURL+"/logto/backchannel-logout", url.Values{"logout_token": {token}})
	if err != nil {
		t.Fatalf("POST %s/logto/backchannel-logout: %v", siteURL, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// eventually polls cond every 100 ms until it holds or the time is up, and
// returns how long it took.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
