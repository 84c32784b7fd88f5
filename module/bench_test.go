package logto

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// benchRequest is a browser request as Caddy hands it to the handler,
// with realistic headers and a few cookies of the site besides ours.
func benchRequest(b *testing.B, cookie string) *http.Request {
	b.Helper()
	r := httptest.NewRequest(http.MethodGet, testSite+"/docs/getting-started?tab=2", nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36")
	r.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8")
	r.Header.Set("Accept-Language", "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7")
	r.Header.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	r.Header.Set("Sec-Fetch-Mode", "navigate")
	r.Header.Set("Sec-Fetch-Dest", "document")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	r.Header.Set("Referer", testSite+"/docs/")
	c := "_ga=GA1.1.123456789.1700000000; theme=dark; consent=analytics%3D0%26ads%3D0"
	if cookie != "" {
		c += "; " + cookie
	}
	r.Header.Set("Cookie", c)
	return r
}

// benchContext is what Caddy gives each request: a fresh replacer and a
// fresh map of request variables (reusing either would carry one
// iteration's state, the signed-in user included, into the next), shaped as
// Caddy's PrepareRequest makes them: the replacer has its http.* provider
// mapped and the variables hold the client IP and trusted-proxy flag, so
// that whether the handler's own Map and SetVar grow them is as in Caddy.
func benchContext(base *http.Request) *http.Request {
	repl := caddy.NewReplacer()
	repl.Map(benchHTTPVars)
	ctx := context.WithValue(base.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.TrustedProxyVarKey: false,
		caddyhttp.ClientIPVarKey:     "192.0.2.1",
	})
	return base.WithContext(ctx)
}

// benchHTTPVars stands for Caddy's {http.*} provider.
func benchHTTPVars(string) (any, bool) { return nil, false }

// serveBench runs the handler as Caddy does per request; the request's
// Cookie header is restored first, since the handler strips our cookies
// from it.
func serveBench(b *testing.B, h *Handler, base *http.Request, cookies []string, w http.ResponseWriter, next caddyhttp.Handler) {
	r := benchContext(base)
	r.Header["Cookie"] = cookies
	if err := h.ServeHTTP(w, r, next); err != nil {
		b.Fatal(err)
	}
}

var nopNext = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// BenchmarkGateSignedIn is the hot path: a signed-in user's request with a
// session cookie this instance has already seen.
func BenchmarkGateSignedIn(b *testing.B) {
	hx := newHarness(b, nil, func(h *Handler) {
		h.Headers = map[string]string{"X-Auth-User": "{http.auth.user.id}"}
	})
	br := newBrowser()
	hx.signIn(br, "/", "user-1")
	base := benchRequest(b, sessionCookie+"="+br.get(sessionCookie))
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	cookies := base.Header["Cookie"]
	w := discardWriter{h: http.Header{}}
	serveBench(b, hx.h, base, cookies, w, nopNext) // warm the caches
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		serveBench(b, hx.h, base, cookies, w, nopNext)
	}
}

// BenchmarkGateRedirect is an anonymous navigation, sent to sign in, with
// Logto's discovery already cached.
func BenchmarkGateRedirect(b *testing.B) {
	hx := newHarness(b, nil, nil)
	hx.startSignIn(newBrowser(), "/") // caches discovery
	base := benchRequest(b, "")
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	cookies := base.Header["Cookie"]
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		w := discardWriter{h: http.Header{}}
		serveBench(b, hx.h, base, cookies, w, nopNext)
	}
}

// BenchmarkGateRequestSetup is what the two benchmarks above spend outside
// the handler (replacer, variables, request copy), to subtract.
func BenchmarkGateRequestSetup(b *testing.B) {
	base := benchRequest(b, "")
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = benchContext(base)
	}
}

// discardWriter is a ResponseWriter that keeps headers and drops the body.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// BenchmarkGateBearerCached is an API client's request with a Logto
// access token this instance has verified before: a hash, a cache hit,
// the audience and a scope rule, the placeholders and one header.
func BenchmarkGateBearerCached(b *testing.B) {
	hx := newHarness(b, nil, func(h *Handler) {
		h.Bearer = []string{bearerAPI}
		h.BearerOnly = true
		h.Require = []Rule{{Kind: "scope", Values: []string{"read:data"}}}
		h.Headers = map[string]string{"X-Auth-User": "{http.auth.user.id}"}
	})
	tok := hx.idp.m2mToken("read:data write:data")
	base := httptest.NewRequest(http.MethodGet, testSite+"/api/v1/items?page=2", nil)
	base.Header.Set("User-Agent", "okhttp/4.12.0")
	base.Header.Set("Accept", "application/json")
	base.Header.Set("Accept-Encoding", "gzip")
	base.Header.Set("Authorization", "Bearer "+tok)
	base = caddyhttp.PrepareRequest(base, caddy.NewReplacer(), httptest.NewRecorder(), nil)
	w := discardWriter{h: http.Header{}}
	serveBench(b, hx.h, base, nil, w, nopNext) // verifies and caches the token
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		serveBench(b, hx.h, base, nil, w, nopNext)
	}
}
