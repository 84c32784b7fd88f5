package logto

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzBearerRequest sends arbitrary Authorization headers (one or two) and
// query strings to a bearer block. Whatever they hold, the handler must not
// panic or answer 500, must never redirect or set a cookie, and may only let
// a request through with the genuine token, alone, in one Authorization
// header.
func FuzzBearerRequest(f *testing.F) {
	hx := newHarness(f, nil, func(h *Handler) { h.Bearer = []string{bearerAPI} })
	good := hx.idp.accessToken(nil)
	forged := good[:strings.LastIndexByte(good, '.')+1] + "AAAA"
	for _, seed := range []struct{ a, b, q string }{
		{"Bearer " + good, "", ""},
		{"bearer " + good, "", ""},
		{"Bearer " + good, "Bearer " + good, ""},
		{"Bearer", "", ""},
		{"Bearer " + good + " x", "", ""},
		{"Bearer " + forged, "", ""},
		{"Bearer " + good[:40], "", ""},
		{"Basic YTpi", "", ""},
		{"", "", "access_token=" + good},
		{"Bearer a.b.c", "", "access_token=x"},
		{"Bearer e30.e30.", "", ""},
		{"Bearer ..", "", ""},
		{"Bearer \x00", "", ""},
	} {
		f.Add(seed.a, seed.b, seed.q)
	}
	f.Fuzz(func(t *testing.T, a, b, query string) {
		fx := *hx
		fx.t = t
		r, repl, w := newRequest(http.MethodGet, "/api", nil, fetchAPI())
		r.URL.RawQuery = query
		for _, v := range []string{a, b} {
			if v != "" {
				r.Header.Add("Authorization", v)
			}
		}
		res := fx.serveRequest(r, repl, w, nil)
		if loc := res.rec.Header().Get("Location"); loc != "" {
			t.Fatalf("redirected to %q", loc)
		}
		if sc := res.rec.Header().Values("Set-Cookie"); len(sc) > 0 {
			t.Fatalf("set cookies %q", sc)
		}
		if !res.next {
			return
		}
		cred := bearerCredentials(r.Header["Authorization"], r)
		if cred.kind != credToken || cred.token != good {
			t.Fatalf("let through Authorization %q, %q, query %q", a, b, query)
		}
	})
}

// FuzzAccessTokenParse feeds arbitrary strings to the access token parser
// and verifier: no panic, and nothing but a token signed by the tenant is
// ever accepted.
func FuzzAccessTokenParse(f *testing.F) {
	hx := newHarness(f, nil, func(h *Handler) { h.Bearer = []string{bearerAPI} })
	good := hx.idp.accessToken(nil)
	for _, seed := range []string{good, good[:len(good)-1], "a.b.c", "e30.e30.e30", "..", strings.Repeat("A", 9000)} {
		f.Add(seed)
	}
	accept := func(string) bool { return true }
	f.Fuzz(func(t *testing.T, raw string) {
		_, _ = parseJWS(raw)
		tok, err := hx.h.client.verifyBearer(t.Context(), raw, accept)
		if err == nil && raw != good {
			t.Fatalf("accepted %q (sub %q)", raw, tok.sub)
		}
	})
}
