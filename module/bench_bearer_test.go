package logto

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

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
