package e2e

// Plain-HTTP tests: no browser, but a real Caddy with the module and the
// real dev IdP; the visitor walks every redirect itself so each hop can be
// checked.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// expectSignedOut checks that a request carrying cookieHeader is treated as
// anonymous on the static site: a navigation to /private/ is sent to the
// IdP, a fetch gets 401, and nothing answers 500.
func expectSignedOut(t *testing.T, s *site, cookieHeader string) {
	t.Helper()
	v := newVisitor(t)
	nav := v.navigate(s.URL+"/private/", "Cookie", cookieHeader)
	if nav.StatusCode != http.StatusFound || !strings.HasPrefix(nav.location(), s.idp.base+"/oidc/auth") {
		t.Errorf("navigation to /private/: %s Location %q, want 302 to the IdP\n%s", nav.Status, nav.location(), tail(nav.body, 300))
	}
	f := newVisitor(t).fetch(s.URL+"/private/", "Cookie", cookieHeader)
	if f.StatusCode != http.StatusUnauthorized || f.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("fetch /private/: %s (WWW-Authenticate %q), want 401 with WWW-Authenticate", f.Status, f.Header.Get("WWW-Authenticate"))
	}
	home := newVisitor(t).navigate(s.URL+"/", "Cookie", cookieHeader)
	if home.StatusCode != http.StatusOK || !strings.Contains(home.body, "Not authenticated") {
		t.Errorf("home page: %s, want 200 Not authenticated\n%s", home.Status, tail(home.body, 300))
	}
}

// TestBadSessionCookiesMeanSignedOut stops cookie tampering and cookie
// bombs from doing anything but signing the visitor out: a session cookie
// with one byte flipped, cut short, sealed by another Caddy with another
// cookie_secret, 8 KB of garbage, or fake chunks, is "not signed in" (a
// redirect to the IdP or 401), never a 500 and never a session.
func TestBadSessionCookiesMeanSignedOut(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")
	good := newVisitor(t).session(s, "alice")

	// The control: the untouched cookie is a session.
	r := newVisitor(t).navigate(s.URL+"/private/", "Cookie", sessionCookie+"="+good)
	if r.StatusCode != http.StatusOK || !strings.Contains(r.body, s.idp.userID(t, "alice")) {
		t.Fatalf("the untouched session cookie does not work: %s\n%s", r.Status, tail(r.body, 300))
	}

	other := newSite(t, env.idp)
	other.start(gatedCaddyfile("\t\tcookie_secret "+randomHex(32)), "", nil)
	foreign := newVisitor(t).session(other, "alice")

	flip := func(v string, i int) string {
		b := []byte(v)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	garbage := make([]byte, 6144)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	big := base64.RawURLEncoding.EncodeToString(garbage) // 8192 bytes
	cases := map[string]string{
		"byte flipped in the middle":   sessionCookie + "=" + flip(good, len(good)/2),
		"byte flipped at the end":      sessionCookie + "=" + flip(good, len(good)-1),
		"byte flipped in the header":   sessionCookie + "=" + flip(good, 2),
		"truncated to half":            sessionCookie + "=" + good[:len(good)/2],
		"truncated by one byte":        sessionCookie + "=" + good[:len(good)-1],
		"from another cookie_secret":   sessionCookie + "=" + foreign,
		"8 KB of garbage":              sessionCookie + "=" + big,
		"garbage split in fake chunks": sessionCookie + "=3*" + big[:3000] + "; " + sessionCookie + ".1=" + big[3000:6000] + "; " + sessionCookie + ".2=" + big[6000:],
		"chunk count without chunks":   sessionCookie + "=8*" + good,
		"not base64":                   sessionCookie + "=%00%ff<script>",
		"empty":                        sessionCookie + "=",
		"attempt cookie as session":    sessionCookie + "-signin-AAAAAAAAAAAA=" + good + "; " + sessionCookie + "=" + good[len(good)/3:],
	}
	for name, cookie := range cases {
		t.Run(name, func(t *testing.T) {
			expectSignedOut(t, s, cookie)
		})
	}
	for _, out := range []string{s.output(), other.output()} {
		if strings.Contains(out, "panic") {
			t.Errorf("Caddy logged a panic:\n%s", tail(out, 3000))
		}
	}
}

// TestCookieSecretRotation proves key rotation works as documented: a
// session sealed with cookie_secret A still opens after a restart with
// "cookie_secret B A" (new key first, old key kept), and no longer opens
// once A is dropped ("cookie_secret B"): then it is a clean sign-out.
func TestCookieSecretRotation(t *testing.T) {
	t.Parallel()
	requireStack(t)
	a, b := randomHex(32), randomHex(32)
	s := newSite(t, env.idp)
	s.start(gatedCaddyfile("\t\tcookie_secret "+a), "", nil)
	sub := s.idp.userID(t, "alice")
	v := newVisitor(t)
	sealedWithA := v.session(s, "alice")

	signedIn := func(step string) {
		t.Helper()
		r := newVisitor(t).navigate(s.URL+"/private/x", "Cookie", sessionCookie+"="+sealedWithA)
		if r.StatusCode != http.StatusOK || !strings.Contains(r.body, sub) {
			t.Errorf("%s: %s, want 200 for alice\n%s", step, r.Status, tail(r.body, 300))
		}
	}
	signedIn("cookie_secret A")

	s.start(gatedCaddyfile("\t\tcookie_secret "+b+" "+a), "", nil)
	signedIn("cookie_secret B A")

	s.start(gatedCaddyfile("\t\tcookie_secret "+b), "", nil)
	nav := newVisitor(t).navigate(s.URL+"/private/x", "Cookie", sessionCookie+"="+sealedWithA)
	if nav.StatusCode != http.StatusFound || !strings.HasPrefix(nav.location(), s.idp.base+"/oidc/auth") {
		t.Errorf("cookie_secret B: navigation %s Location %q, want 302 to the IdP", nav.Status, nav.location())
	}
	f := newVisitor(t).fetch(s.URL+"/private/x", "Cookie", sessionCookie+"="+sealedWithA)
	if f.StatusCode != http.StatusUnauthorized {
		t.Errorf("cookie_secret B: fetch %s, want 401", f.Status)
	}
}

// TestNoOpenRedirectAfterSignIn stops the sign-in endpoint from being an
// open redirect: whatever ?redirect= names another site (absolute URLs,
// scheme-relative //host, backslash and tab tricks, userinfo@host,
// javascript:, percent-encoded slashes), the browser ends on this site's
// home page after signing in; a same-site path is honoured.
func TestNoOpenRedirectAfterSignIn(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")
	host := strings.TrimPrefix(s.URL, "http://")
	v := newVisitor(t)

	// Raw query values, sent exactly as written.
	cases := []struct{ raw, want string }{
		{url.QueryEscape("https://evil.example/"), "/"},
		{url.QueryEscape("//evil.example"), "/"},
		{url.QueryEscape(`/\evil.example`), "/"},
		{url.QueryEscape(`\\evil.example`), "/"},
		{url.QueryEscape("javascript:alert(1)"), "/"},
		{url.QueryEscape("http://" + host + "@evil.example"), "/"},
		{url.QueryEscape("http://" + host + "@evil.example/private/"), "/"},
		{"%2F%2Fevil.example", "/"},
		{"%252F%252Fevil.example", "/"},
		{url.QueryEscape("/%2F/evil.example"), "/"},
		{url.QueryEscape("/\t/evil.example"), "/"},
		{url.QueryEscape("https:evil.example"), "/"},
		{url.QueryEscape("evil.example"), "/"},
		{url.QueryEscape("/private/x?y=1"), "/private/x?y=1"},
		{url.QueryEscape(s.URL + "/private/z?q=2"), "/private/z?q=2"},
	}
	for _, c := range cases {
		start := v.navigate(s.URL + "/logto/sign-in?redirect=" + c.raw)
		if !start.isRedirect() || !strings.HasPrefix(start.location(), s.idp.base+"/oidc/auth") {
			t.Errorf("redirect=%s: sign-in answered %s Location %q, want 302 to the IdP", c.raw, start.Status, start.location())
			continue
		}
		cb := v.loginAtIdP(start.location(), s.URL+"/logto/sign-in-callback", "alice", "alice")
		r := v.navigate(cb)
		if !r.isRedirect() {
			t.Errorf("redirect=%s: callback answered %s\n%s", c.raw, r.Status, tail(r.body, 300))
			continue
		}
		final := resolve(r.Request.URL, r.location())
		if final != s.URL+c.want {
			t.Errorf("redirect=%s: after sign-in the browser goes to %q (Location %q), want %q", c.raw, final, r.location(), s.URL+c.want)
		}
	}
}

// TestForgedOrReplayedCallback stops login CSRF and callback replay: a
// callback whose state matches no attempt of this browser (forged, or
// replayed after it completed) is a 400, never a session and never a 500;
// a signed-in browser replaying its own old callback is just sent home.
func TestForgedOrReplayedCallback(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")

	forged := newVisitor(t).navigate(s.URL + "/logto/sign-in-callback?code=x&state=" + randomState() + "&iss=" + url.QueryEscape(s.idp.base+"/oidc"))
	if forged.StatusCode != http.StatusBadRequest {
		t.Errorf("forged state: %s, want 400", forged.Status)
	}
	for _, q := range []string{"", "?code=x", "?state=short", "?code=x&state=" + strings.Repeat("%00", 32), "?error=access_denied&state=" + randomState()} {
		r := newVisitor(t).navigate(s.URL + "/logto/sign-in-callback" + q)
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("callback%s: %s, want 400", q, r.Status)
		}
	}

	v := newVisitor(t)
	cb, r := v.signIn(s, "/private/", "alice", "alice")
	if !r.isRedirect() || r.location() != "/private/" {
		t.Fatalf("real callback: %s Location %q, want 302 to /private/", r.Status, r.location())
	}

	// A browser that never started this sign-in (the link was stolen, or a
	// login CSRF): no attempt cookie, no session.
	replay := newVisitor(t).navigate(cb)
	if replay.StatusCode != http.StatusBadRequest {
		t.Errorf("callback replayed in a fresh browser: %s, want 400\n%s", replay.Status, tail(replay.body, 300))
	}
	if _, ok := v.jar.get(sessionCookie); !ok {
		t.Fatal("lost the session")
	}
	// The same browser, back button: signed in, sent home.
	again := v.navigate(cb)
	if again.StatusCode != http.StatusFound || again.location() != "/" {
		t.Errorf("callback replayed with the session: %s Location %q, want 302 to /", again.Status, again.location())
	}
	// The attempt is spent: its cookie is gone even though the session
	// remains, and the code was redeemed once.
	for _, name := range v.jar.names() {
		if strings.HasPrefix(name, sessionCookie+"-signin-") {
			t.Errorf("attempt cookie %s still held after its callback", name)
		}
	}
}

func randomState() string {
	return base64.RawURLEncoding.EncodeToString([]byte(randomHex(12)))[:32]
}

// echoUpstream is an app behind reverse_proxy that answers with the
// request headers and cookies it received.
type echoReply struct {
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Cookies []string          `json:"cookies"` // name=value
}

func echoUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := echoReply{Path: r.URL.Path, Headers: map[string]string{}}
		for k, v := range r.Header {
			if k != "Cookie" {
				e.Headers[k] = strings.Join(v, ", ")
			}
		}
		for _, c := range r.Cookies() {
			e.Cookies = append(e.Cookies, c.Name+"="+c.Value)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func readEcho(t *testing.T, r *response) echoReply {
	t.Helper()
	var e echoReply
	if r.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.body), &e) != nil {
		t.Fatalf("upstream answer: %s\n%s", r.Status, tail(r.body, 500))
	}
	return e
}

func (e echoReply) moduleCookies() []string {
	var out []string
	for _, c := range e.Cookies {
		if strings.HasPrefix(c, "__Host-logto") || strings.HasPrefix(c, "logto") {
			out = append(out, c)
		}
	}
	return out
}

func (e echoReply) hasCookie(c string) bool {
	for _, have := range e.Cookies {
		if have == c {
			return true
		}
	}
	return false
}

// TestIdentityHeadersCannotBeSpoofed stops a client from passing itself off
// as a user to the app behind the proxy, and stops the module's cookies
// (sealed tokens) from leaking to it: identity headers the client sends are
// removed (anonymous or not), also under names a CGI or PHP backend reads as
// the same (X_User_Id, Logto.ID.Token), the real ones are set for a
// signed-in user, and no __Host-logto*/logto* cookie reaches the upstream
// while the app's own cookies do. Caddy drops header names with "_" or "."
// before any handler runs, unless the server lets them in; the second run
// lets them in, as an operator whose apps need such headers does, and the
// module must remove the lookalikes itself.
func TestIdentityHeadersCannotBeSpoofed(t *testing.T) {
	t.Parallel()
	requireStack(t)
	for name, globals := range map[string]string{
		"Caddy's defaults": "",
		"underscore and dot headers allowed": "\tservers {\n\t\texpected_underscore_headers X_User_Id Logto_ID_Token\n" +
			"\t\texpected_dot_headers X.User.Id Logto.ID.Token\n\t}\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			identityHeadersCannotBeSpoofed(t, globals)
		})
	}
}

func identityHeadersCannotBeSpoofed(t *testing.T, globals string) {
	up := echoUpstream(t)
	s := newSite(t, env.idp)
	s.start(`{$SITE_ADDRESS} {
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		pass
		header Logto-ID-Token {http.auth.logto.id_token}
		header X-User-Id {http.auth.user.id}
	}
	reverse_proxy `+up.Listener.Addr().String()+`
}
`, globals, nil)
	sub := s.idp.userID(t, "alice")
	spoof := []string{
		"X-User-Id", "admin", "x-user-id", "root", "Logto-ID-Token", "forged",
		// Lookalikes a FastCGI backend (PHP) reads as HTTP_X_USER_ID and
		// HTTP_LOGTO_ID_TOKEN.
		"X_User_Id", "admin", "Logto_ID_Token", "forged", "X.User.Id", "admin", "Logto.ID.Token", "forged",
		"Cookie", "theme=dark; logto=forged; __Host-logto-signin-AAAAAAAAAAAA=x; logto.1=y",
	}

	anon := readEcho(t, newVisitor(t).navigate(s.URL+"/app", append(spoof, "Cookie", "__Host-logto=forged; __Host-logto.1=x")...))
	if v, ok := anon.Headers["X-User-Id"]; ok {
		t.Errorf("anonymous: upstream got X-User-Id %q", v)
	}
	if v, ok := anon.Headers["Logto-Id-Token"]; ok {
		t.Errorf("anonymous: upstream got Logto-ID-Token %q", v)
	}
	anon.mustHaveNoLookalikes(t, "anonymous")
	if mc := anon.moduleCookies(); len(mc) > 0 {
		t.Errorf("anonymous: upstream got the module's cookies %v", mc)
	}
	if !anon.hasCookie("theme=dark") {
		t.Errorf("anonymous: upstream lost the app's own cookie: %v", anon.Cookies)
	}

	v := newVisitor(t)
	v.session(s, "alice")
	me := readEcho(t, v.navigate(s.URL+"/app", spoof...))
	if got := me.Headers["X-User-Id"]; got != sub {
		t.Errorf("signed in: upstream X-User-Id %q, want %q", got, sub)
	}
	tok := me.Headers["Logto-Id-Token"]
	if strings.Contains(tok, "forged") || strings.Count(tok, ".") != 2 {
		t.Errorf("signed in: upstream Logto-ID-Token %q, want the user's ID token", tail(tok, 60))
	} else if claims := jwtPayload(t, tok); claims["sub"] != sub || claims["iss"] != s.idp.base+"/oidc" || claims["aud"] != s.appID {
		t.Errorf("signed in: Logto-ID-Token claims sub=%v iss=%v aud=%v", claims["sub"], claims["iss"], claims["aud"])
	}
	me.mustHaveNoLookalikes(t, "signed in")
	if mc := me.moduleCookies(); len(mc) > 0 {
		t.Errorf("signed in: upstream got the module's cookies %v", mc)
	}
	if !me.hasCookie("theme=dark") {
		t.Errorf("signed in: upstream lost the app's own cookie: %v", me.Cookies)
	}
}

// mustHaveNoLookalikes checks the upstream got no identity header under a
// name other than the one the module sets.
func (e echoReply) mustHaveNoLookalikes(t *testing.T, who string) {
	t.Helper()
	for k, v := range e.Headers {
		switch strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(k)) {
		case "x-user-id", "logto-id-token":
			if k != "X-User-Id" && k != "Logto-Id-Token" {
				t.Errorf("%s: upstream got %s: %q", who, k, v)
			}
		}
	}
}

// TestModuleCookiesNeverReachUnprotectedUpstream stops the sealed session
// (refresh token inside) from leaking to an app on a path the logto
// matcher does not cover: with only /app/* protected and everything proxied,
// a signed-in browser's request to /public still must not carry the
// module's cookies upstream ("our own cookies are never forwarded
// upstream").
func TestModuleCookiesNeverReachUnprotectedUpstream(t *testing.T) {
	t.Parallel()
	requireStack(t)
	up := echoUpstream(t)
	s := newSite(t, env.idp)
	s.start(`{$SITE_ADDRESS} {
	logto /app/* {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
	}
	reverse_proxy `+up.Listener.Addr().String()+`
}
`, "", nil)
	v := newVisitor(t)
	v.session(s, "alice")
	for _, p := range []string{"/app/x", "/public"} {
		e := readEcho(t, v.navigate(s.URL+p, "Cookie", "theme=dark"))
		if mc := e.moduleCookies(); len(mc) > 0 {
			t.Errorf("%s: upstream got the module's cookies %v", p, names(mc))
		}
		if !e.hasCookie("theme=dark") {
			t.Errorf("%s: upstream lost the app's own cookie", p)
		}
	}
}

func names(cookies []string) []string {
	out := make([]string, len(cookies))
	for i, c := range cookies {
		out[i], _, _ = strings.Cut(c, "=")
	}
	return out
}

// idpProxy fronts a dedicated IdP, so a test can make Logto unreachable
// (close it) and see every token Logto handed out (to check none is
// logged).
type idpProxy struct {
	srv    *httptest.Server
	target atomic.Value // "127.0.0.1:<port>"
	mu     sync.Mutex
	tokens []string
}

func newIdPProxy(t *testing.T) *idpProxy {
	p := &idpProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = p.target.Load().(string)
			r.Out.Host = r.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.URL.Path != "/oidc/token" {
				return nil
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			var tr map[string]any
			if json.Unmarshal(b, &tr) == nil {
				p.mu.Lock()
				for _, k := range []string{"access_token", "refresh_token", "id_token"} {
					if s, ok := tr[k].(string); ok && s != "" {
						p.tokens = append(p.tokens, s)
					}
				}
				p.mu.Unlock()
			}
			resp.Body = io.NopCloser(strings.NewReader(string(b)))
			return nil
		},
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idpProxy) base() string {
	return fmt.Sprintf("http://localhost:%d", p.srv.Listener.Addr().(*net.TCPAddr).Port)
}

func (p *idpProxy) seenTokens() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tokens...)
}

// TestLogtoUnavailable proves an IdP outage is contained: garbage or a 500
// from the token endpoint during a callback is a 502 (no panic, no 500); a
// site whose Logto cannot be reached answers new sign-ins with 502; an
// existing session keeps working while Logto is down; and none of the
// codes, tokens or cookie values of all this ends up in Caddy's log, even
// at debug level.
func TestLogtoUnavailable(t *testing.T) {
	t.Parallel()
	requireStack(t)
	proxy := newIdPProxy(t)
	// Short ID tokens, so the session below needs a refresh while Logto is
	// down.
	const idTokenTTL = 5 * time.Second
	idp := startTestIdP(t, map[string]string{"DEVIDP_BASE": proxy.base(), "DEVIDP_ID_TOKEN_TTL": "5"})
	proxy.target.Store(fmt.Sprintf("127.0.0.1:%d", idp.port))

	s := staticSite(t, idp, "\tdebug\n")
	var secrets []string // everything that must never be logged
	secrets = append(secrets, s.appSecret)

	v := newVisitor(t)
	signedInAt := time.Now()
	cb, r := v.signIn(s, "/private/", "alice", "alice")
	if !r.isRedirect() {
		t.Fatalf("sign-in: %s\n%s", r.Status, tail(r.body, 300))
	}
	codes := []string{queryParam(cb, "code")}
	session, _ := v.jar.get(sessionCookie)
	secrets = append(secrets, session)

	for _, mode := range []string{"garbage", "500"} {
		idp.admin(t, http.MethodPost, "/__dev/fail?endpoint=token&mode="+mode+"&count=1", nil, nil)
		w := newVisitor(t)
		cb, r := w.signIn(s, "/private/", "bob", "bob")
		codes = append(codes, queryParam(cb, "code"))
		secrets = append(secrets, w.jar.seenValues()...)
		if r.StatusCode != http.StatusBadGateway {
			t.Errorf("token endpoint answering %s during the callback: %s, want 502\n%s", mode, r.Status, tail(r.body, 300))
		}
	}
	secrets = append(secrets, v.jar.seenValues()...)

	// Logto goes away.
	proxy.srv.Close()
	idp.stop()
	for _, p := range []string{"/private/", "/private/index.html"} {
		r := v.navigate(s.URL + p)
		if r.StatusCode != http.StatusOK || !strings.Contains(r.body, "Private page") {
			t.Errorf("existing session while Logto is down, %s: %s, want 200\n%s", p, r.Status, tail(r.body, 300))
		}
	}
	if r := v.fetch(s.URL + "/logto/user"); r.StatusCode != http.StatusOK {
		t.Errorf("/logto/user while Logto is down: %s, want 200", r.Status)
	}
	// Past the ID token's expiry the session would be refreshed; Logto is
	// down, so it carries on as it is.
	time.Sleep(time.Until(signedInAt.Add(idTokenTTL + time.Second)))
	if r := v.navigate(s.URL + "/private/"); r.StatusCode != http.StatusOK || !strings.Contains(r.body, "Private page") {
		t.Errorf("existing session past its ID token's expiry while Logto is down: %s, want 200\n%s", r.Status, tail(r.body, 300))
	}

	// A site whose Logto has never been reachable: new sign-ins get 502.
	down := newSite(t, nil)
	down.start(mustRead(t, filepath.Join(env.root, "examples/static-site/Caddyfile")), "\tdebug\n", map[string]string{
		"LOGTO_ENDPOINT": fmt.Sprintf("http://localhost:%d", freePort(t)),
	})
	for _, p := range []string{"/private/", "/logto/sign-in", "/logto/sign-up"} {
		r := newVisitor(t).navigate(down.URL + p)
		if r.StatusCode != http.StatusBadGateway {
			t.Errorf("new sign-in (%s) with Logto unreachable: %s, want 502", p, r.Status)
		}
	}
	if r := newVisitor(t).navigate(down.URL + "/"); r.StatusCode != http.StatusOK {
		t.Errorf("public page with Logto unreachable: %s, want 200", r.Status)
	}

	secrets = append(secrets, proxy.seenTokens()...)
	if len(proxy.seenTokens()) < 3 {
		t.Errorf("the proxy saw too few tokens (%d) for the log check to mean anything", len(proxy.seenTokens()))
	}
	for name, out := range map[string]string{"caddy": s.output(), "caddy (unreachable Logto)": down.output()} {
		if strings.Contains(out, "panic") {
			t.Errorf("%s logged a panic", name)
		}
		for _, secret := range secrets {
			if len(secret) >= 8 && strings.Contains(out, secret) {
				line := out[max(0, strings.Index(out, secret)-300):min(len(out), strings.Index(out, secret)+100)]
				t.Errorf("%s logged a secret value (%s…): …%s…", name, secret[:6], line)
			}
		}
		// Caddy itself records every request's URI (a copy taken before any
		// handler runs), so the callback's code appears there; the README
		// shows the log filter that removes it. A logged code is useless on
		// its own: redeeming it needs the PKCE verifier, sealed in the
		// browser's attempt cookie, and the app secret. The module's own
		// lines must never carry it.
		withoutURIs := requestURIField.ReplaceAllString(out, `"uri":""`)
		for _, code := range codes {
			if len(code) >= 8 && strings.Contains(withoutURIs, code) {
				line := withoutURIs[max(0, strings.Index(withoutURIs, code)-300):min(len(withoutURIs), strings.Index(withoutURIs, code)+100)]
				t.Errorf("%s logged an authorization code outside the request URI (%s…): …%s…", name, code[:6], line)
			}
		}
	}
}

func queryParam(raw, name string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Query().Get(name)
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUserEndpoint proves /logto/user is the signed-in user's claims and
// nothing more: 401 without a session (no redirect, even for a browser),
// and for alice her sub, name and email without the token's protocol
// claims (nonce, at_hash).
func TestUserEndpoint(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := staticSite(t, env.idp, "")

	for _, r := range []*response{newVisitor(t).fetch(s.URL + "/logto/user"), newVisitor(t).navigate(s.URL + "/logto/user")} {
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("/logto/user without a session: %s, want 401", r.Status)
		}
	}

	v := newVisitor(t)
	v.session(s, "alice")
	r := v.fetch(s.URL + "/logto/user")
	var claims map[string]any
	if r.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.body), &claims) != nil {
		t.Fatalf("/logto/user: %s\n%s", r.Status, tail(r.body, 300))
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	want := map[string]any{"sub": s.idp.userID(t, "alice"), "name": "Alice Park", "email": "alice@example.com", "username": "alice"}
	for k, w := range want {
		if claims[k] != w {
			t.Errorf("claim %s = %v, want %v", k, claims[k], w)
		}
	}
	for _, k := range []string{"nonce", "at_hash"} {
		if _, ok := claims[k]; ok {
			t.Errorf("claim %s is exposed: %v", k, claims[k])
		}
	}
}

// TestAccessLogUserID proves the signed-in user reaches Caddy's access log:
// the user_id field of a signed-in request is alice's sub (and an
// anonymous request has none).
func TestAccessLogUserID(t *testing.T) {
	t.Parallel()
	requireStack(t)
	s := newSite(t, env.idp)
	logFile := filepath.Join(s.dir, "access.log")
	s.start(`{$SITE_ADDRESS} {
	log {
		output file `+logFile+`
		format json
	}
	logto {
		endpoint {env.LOGTO_ENDPOINT}
		app_id {env.LOGTO_APP_ID}
		app_secret {env.LOGTO_APP_SECRET}
		pass
	}
	respond "hello {http.auth.user.id}"
}
`, "", nil)
	sub := s.idp.userID(t, "alice")
	newVisitor(t).navigate(s.URL + "/anonymous")
	v := newVisitor(t)
	v.session(s, "alice")
	if r := v.navigate(s.URL + "/signed-in"); r.StatusCode != http.StatusOK || !strings.Contains(r.body, sub) {
		t.Fatalf("signed-in request: %s %q", r.Status, r.body)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logFile)
		var signedIn, anonymous map[string]any
		for _, l := range logLines(string(b)) {
			req, _ := l["request"].(map[string]any)
			switch req["uri"] {
			case "/signed-in":
				signedIn = l
			case "/anonymous":
				anonymous = l
			}
		}
		if signedIn != nil && anonymous != nil {
			if signedIn["user_id"] != sub {
				t.Errorf("access log user_id of the signed-in request = %v, want %q", signedIn["user_id"], sub)
			}
			if id, ok := anonymous["user_id"]; ok && id != "" {
				t.Errorf("access log user_id of the anonymous request = %v, want none", id)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log has no line for both requests:\n%s", tail(string(b), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requestURIField matches the "uri" of Caddy's request log objects.
var requestURIField = regexp.MustCompile(`"uri":"[^"]*"`)
