package e2e

// The HTTP visitor: a scripted browser without a browser, which navigates,
// fetches and posts forms with its cookie jar (cookiejar_test.go) and signs
// in at the dev IdP by plain HTTP.

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// visitor is a browser without a browser: a cookie jar and a client that
// does not follow redirects, so every hop can be checked.
type visitor struct {
	t   *testing.T
	jar *cookieJar
	hc  *http.Client
}

func newVisitor(t *testing.T) *visitor {
	return &visitor{
		t:   t,
		jar: &cookieJar{cookies: map[[2]string]*http.Cookie{}},
		hc: &http.Client{
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// response is an answer with its body read.
type response struct {
	*http.Response
	body string
}

func (r *response) location() string { return r.Header.Get("Location") }

func (r *response) isRedirect() bool {
	return r.StatusCode >= 300 && r.StatusCode < 400 && r.location() != ""
}

// do sends req with the jar's cookies (plus any Cookie header req already
// has) and keeps the cookies of the answer.
func (v *visitor) do(req *http.Request) *response {
	v.t.Helper()
	if c := v.jar.header(req.URL.Path); c != "" {
		if have := req.Header.Get("Cookie"); have != "" {
			c = have + "; " + c
		}
		req.Header.Set("Cookie", c)
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		v.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	v.jar.store(resp)
	return &response{Response: resp, body: string(b)}
}

// navigate is a top-level browser navigation (GET, Sec-Fetch-Mode:
// navigate, Accept: text/html).
func (v *visitor) navigate(u string, hdr ...string) *response {
	v.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		v.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	req.Header.Set("Sec-Fetch-Dest", "document")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return v.do(req)
}

// fetch is what a script's fetch() sends.
func (v *visitor) fetch(u string, hdr ...string) *response {
	v.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		v.t.Fatal(err)
	}
	req.Header.Set("Accept", "*/*")
	req.Header.Set("Sec-Fetch-Mode", "cors")
	req.Header.Set("Sec-Fetch-Dest", "empty")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return v.do(req)
}

func (v *visitor) postForm(u string, form url.Values) *response {
	v.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		v.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	return v.do(req)
}

var formAction = regexp.MustCompile(`<form method="post" action="(/interaction/[^"]+/(login|register|kakao))"`)

// loginAtIdP walks the IdP from an authorization URL to the redirect back
// to the site, filling the login form as username/password when it comes,
// and returns the callback URL without visiting it. A browser that already
// has an IdP session goes straight through.
func (v *visitor) loginAtIdP(authURL, callbackPrefix, username, password string) string {
	v.t.Helper()
	next := authURL
	for range 20 {
		if strings.HasPrefix(next, callbackPrefix) {
			return next
		}
		r := v.navigate(next)
		switch {
		case r.isRedirect():
			next = resolve(r.Request.URL, r.location())
		case r.StatusCode == http.StatusOK && formAction.MatchString(r.body):
			action := formAction.FindStringSubmatch(r.body)[1]
			if !strings.HasSuffix(action, "/login") {
				v.t.Fatalf("IdP page at %s has no login form (found %s)", next, action)
			}
			r = v.postForm(resolve(r.Request.URL, action), url.Values{"username": {username}, "password": {password}})
			if !r.isRedirect() {
				v.t.Fatalf("IdP login as %q: %s\n%s", username, r.Status, tail(r.body, 800))
			}
			next = resolve(r.Request.URL, r.location())
		default:
			v.t.Fatalf("unexpected IdP answer at %s: %s\n%s", next, r.Status, tail(r.body, 800))
		}
	}
	v.t.Fatalf("no way back to %s from the IdP after 20 hops", callbackPrefix)
	return ""
}

// signIn navigates to path on the site, expects to be sent to the IdP,
// signs in there and returns the callback URL and Caddy's answer to it.
func (v *visitor) signIn(s *site, path, username, password string) (callback string, r *response) {
	v.t.Helper()
	first := v.navigate(s.URL + path)
	if !first.isRedirect() || !strings.HasPrefix(first.location(), s.idp.base+"/oidc/auth") {
		v.t.Fatalf("GET %s: want a redirect to the IdP, got %s Location=%q\n%s", path, first.Status, first.location(), tail(first.body, 500))
	}
	callback = v.loginAtIdP(first.location(), s.URL+"/logto/sign-in-callback", username, password)
	return callback, v.navigate(callback)
}

// session signs in (through /logto/sign-in) and returns the session
// cookie's value.
func (v *visitor) session(s *site, username string) string {
	v.t.Helper()
	_, r := v.signIn(s, "/logto/sign-in", username, username)
	if !r.isRedirect() {
		v.t.Fatalf("sign-in callback: %s\n%s", r.Status, tail(r.body, 500))
	}
	c, ok := v.jar.get(sessionCookie)
	if !ok {
		v.t.Fatalf("no %s cookie after sign-in; cookies: %v", sessionCookie, v.jar.names())
	}
	return c
}

func resolve(base *url.URL, ref string) string {
	u, err := base.Parse(ref)
	if err != nil {
		return ref
	}
	return u.String()
}
