package e2e

// Logto going away and coming back while a real Caddy serves signed-in
// users: what outage_grace promises, end to end. The dev IdP keeps its
// grants in memory, so it is not restarted; a TCP proxy in front of it is
// closed and opened again on the same port instead.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards a local port to the dev IdP and can be cut off (the
// listener and every connection closed: connections refused) and opened
// again on the same port.
type tcpProxy struct {
	t      *testing.T
	addr   string // 127.0.0.1:<port>, the same across close and open
	target string // 127.0.0.1:<the IdP's port>

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newTCPProxy(t *testing.T) *tcpProxy {
	p := &tcpProxy{t: t, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

// base is the URL the IdP is known by (DEVIDP_BASE, the site's endpoint).
func (p *tcpProxy) base() string {
	_, port, _ := net.SplitHostPort(p.addr)
	return "http://localhost:" + port
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false // closed meanwhile
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *tcpProxy) pipe(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, u) {
		c.Close()
		u.Close()
		return
	}
	go func() {
		_, _ = io.Copy(u, c)
		u.Close()
	}()
	_, _ = io.Copy(c, u)
	c.Close()
}

// close makes the IdP unreachable: new connections are refused, open ones
// (Caddy's keep-alive connections) are cut.
func (p *tcpProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// open listens again on the same port.
func (p *tcpProxy) open() {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("cannot listen on %s again: %v", p.addr, err)
}

// mustKeepSession checks a response does not clear the session cookie and
// the visitor still holds it.
func mustKeepSession(t *testing.T, what string, v *visitor, r *response) {
	t.Helper()
	for _, line := range r.Header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err == nil && isSessionCookie(c.Name) && (c.MaxAge < 0 || c.Value == "") {
			t.Errorf("%s: the session cookie was cleared: %s", what, c.Name)
		}
	}
	if _, ok := v.jar.get(sessionCookie); !ok {
		t.Errorf("%s: the visitor lost its session cookie", what)
	}
}

// TestOutageGraceEndToEnd: a signed-in user whose ID token expires while
// Logto is unreachable is served for outage_grace past that expiry, then
// gets 503 with Retry-After, navigation and API alike, without losing the
// session cookie; a new sign-in meanwhile gets a prompt 502, not a
// redirect to a Logto that does not answer; and once Logto is back, the
// same cookie is served again after one refresh, with no new sign-in.
func TestOutageGraceEndToEnd(t *testing.T) {
	t.Parallel()
	requireStack(t)
	const idTokenTTL, grace = 5 * time.Second, 8 * time.Second
	proxy := newTCPProxy(t)
	idp := startTestIdP(t, map[string]string{"DEVIDP_BASE": proxy.base(), "DEVIDP_ID_TOKEN_TTL": strconv.Itoa(int(idTokenTTL / time.Second))})
	proxy.target = fmt.Sprintf("127.0.0.1:%d", idp.port)
	s := newSite(t, idp)
	s.start(gatedCaddyfile(fmt.Sprintf("\t\toutage_grace %v", grace)), "", nil)

	v := newVisitor(t)
	_, r := v.signIn(s, "/", "alice", "alice")
	signedIn := time.Now() // the ID token expires at most idTokenTTL from now
	if !r.isRedirect() {
		t.Fatalf("sign-in: %s\n%s", r.Status, tail(r.body, 300))
	}
	alice := idp.userID(t, "alice")
	served := func(what string, r *response) {
		t.Helper()
		if r.StatusCode != http.StatusOK || !strings.Contains(r.body, alice) {
			t.Fatalf("%s: %s, want 200 for alice\n%s", what, r.Status, tail(r.body, 300))
		}
	}
	served("signed in", v.navigate(s.URL+"/"))
	codeGrants := idp.tokenStats(t).AuthorizationCodeGrants

	proxy.close()
	time.Sleep(time.Until(signedIn.Add(idTokenTTL + 1500*time.Millisecond)))
	for _, r := range []*response{v.navigate(s.URL + "/"), v.fetch(s.URL + "/")} {
		served("past the ID token's expiry, within outage_grace", r)
		mustKeepSession(t, "within outage_grace", v, r)
	}

	// A newcomer: Logto just failed to answer, so a sign-in is refused at
	// once rather than sent to it.
	start := time.Now()
	r = newVisitor(t).navigate(s.URL + "/private/")
	if took := time.Since(start); r.StatusCode != http.StatusBadGateway || took > 10*time.Second {
		t.Errorf("new sign-in while Logto is down: %s after %v, want a prompt 502 (Location %q)", r.Status, took.Round(time.Millisecond), r.location())
	}

	time.Sleep(time.Until(signedIn.Add(idTokenTTL + grace + 2*time.Second)))
	var retryAfter time.Duration
	for name, r := range map[string]*response{"navigation": v.navigate(s.URL + "/"), "API": v.fetch(s.URL + "/")} {
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if r.StatusCode != http.StatusServiceUnavailable || err != nil || ra <= 0 || r.location() != "" {
			t.Fatalf("%s past outage_grace: %s, Retry-After %q, Location %q; want 503 with Retry-After and no redirect",
				name, r.Status, r.Header.Get("Retry-After"), r.location())
		}
		retryAfter = time.Duration(ra) * time.Second
		mustKeepSession(t, name+" past outage_grace", v, r)
	}

	// Logto is back, grants and all. After Retry-After the same cookie is
	// served again: one refresh, no new sign-in.
	proxy.open()
	time.Sleep(retryAfter)
	deadline := time.Now().Add(15 * time.Second)
	for {
		r = v.navigate(s.URL + "/")
		if r.StatusCode == http.StatusOK || time.Now().After(deadline) {
			break
		}
		if r.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("Logto back: %s (Location %q), want 503 until the refresh, then 200", r.Status, r.location())
		}
		time.Sleep(500 * time.Millisecond)
	}
	served("Logto back, after Retry-After", r)
	mustKeepSession(t, "Logto back", v, r)
	if st := idp.tokenStats(t); st.AuthorizationCodeGrants != codeGrants || st.RefreshTokenGrants < 1 {
		t.Errorf("Logto back: %d new sign-ins and %d refreshes, want no sign-in and a refresh", st.AuthorizationCodeGrants-codeGrants, st.RefreshTokenGrants)
	}
}
