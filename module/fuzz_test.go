package logto

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzCodecOpen checks that Open never panics on any name and value, and
// never opens anything but an exact (name, value) pair produced by Seal: no
// forgery, no malleable encoding, no name confusion.
func FuzzCodecOpen(f *testing.F) {
	// Seal's nonces are random, and fuzzing runs in several processes, so
	// the known sealed values are the fixed golden ones.
	c := mustCodec(f, "session", codecGoldenSecrets...)
	sealed := map[[2]string]string{}
	for _, g := range codecGolden {
		sealed[[2]string{g.name, g.value}] = g.plaintext
		if len(g.value) < 100 { // large seeds make minimization crawl
			f.Add(g.name, g.value)
		}
	}
	f.Add("s", "")
	f.Add("s", "AQ")
	f.Add("", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")

	f.Fuzz(func(t *testing.T, name, value string) {
		got, err := c.Open(name, value)
		want, ok := sealed[[2]string{name, value}]
		switch {
		case err != nil && err != ErrBadCookie:
			t.Fatalf("Open returned %v, not ErrBadCookie", err)
		case err == nil && !ok:
			t.Fatalf("Open accepted a value Seal did not produce: %q for %q", value, name)
		case err != nil && ok:
			t.Fatalf("Open rejected a sealed value: %v", err)
		case err == nil && string(got) != want:
			t.Fatalf("Open = %q, want %q", got, want)
		}
	})
}

// FuzzReadCookie checks that readCookie never panics on any header, that
// what it returns for a single cookie comes from the header itself, and that
// any value writeCookie accepts reads back unchanged from what a browser
// would send.
func FuzzReadCookie(f *testing.F) {
	// The value written is val repeated to size bytes: long values without
	// long inputs, which the fuzzer is slow to minimize.
	f.Add("a=1; s=v", "s", "value", uint16(5))
	f.Add(`s="2*ab"; s.1=cd; s.1=ef`, "s", "1*x", uint16(3801))
	f.Add("s=8*;s.1=;s.7=x;;=;\x00", "s", "", uint16(0))
	f.Add("s.1=x; s", "s.", "A", uint16(30398))
	f.Add("", "", "AB", uint16(30399))
	f.Fuzz(func(t *testing.T, header, name, val string, size uint16) {
		h := cookieHeader(header, header)
		if v, ok := readCookie(h, name); ok && len(v) > maxChunks*maxCookieValue {
			t.Fatalf("read %d bytes", len(v))
		}
		cookieNames(h, name)

		// Round trip, with the value mapped onto cookie-octets.
		name = "__Host-s"
		if val == "" {
			val = "A"
		}
		val = strings.Repeat(val, int(size)/len(val)+1)[:size]
		b := []byte(val)
		for i := range b {
			if !isCookieOctet(b[i]) {
				b[i] = 'A' + b[i]%26
			}
		}
		val = string(b)
		w := http.Header{}
		err := writeCookie(w, h, name, val, testOpts)
		if err != nil {
			if len(val) <= maxChunks*maxCookieValue-2 {
				t.Fatalf("writeCookie(%d bytes): %v", len(val), err)
			}
			return
		}
		var sent []string
		for _, c := range (&http.Response{Header: w}).Cookies() {
			if len(c.String()) >= 4096-len("Set-Cookie: ") {
				t.Fatalf("Set-Cookie of %d bytes", len(c.String()))
			}
			if c.MaxAge >= 0 {
				sent = append(sent, c.Name+"="+c.Value)
			}
		}
		// A browser sends our cookies along with whatever else it holds.
		req := cookieHeader(strings.Join(sent, "; "), header)
		if got, ok := readCookie(req, name); !ok || got != val {
			t.Fatalf("round trip of %d bytes: got %d bytes, %v", len(val), len(got), ok)
		}
	})
}

// FuzzStripCookies checks that stripCookies never panics, leaves no cookie
// with the prefix (by the most permissive reading of a name), and keeps
// every other cookie, in order.
func FuzzStripCookies(f *testing.F) {
	f.Add("a=1; __Host-logto_s=x; b=2", "", "__Host-logto")
	f.Add(" ;\t__Host-logto ; x=\"y\";;", "__Host-logto_tx=1", "__Host-logto")
	f.Add("p=1;p;pp=2", "q=1", "p")
	f.Add("a=1; b=2; __Host-logto=x", "__Host-logto=x; a=1;b=2", "__Host-logto")
	f.Add("a=1;  __Host-logto=x", "a=1; __Host-logto=x; b=2", "__Host-logto")
	f.Add("__Host-logto ; __Host-logto=\"2*ab\"", "__Host-logto.1=cd; __Host-logto=z", "__Host-logto")
	f.Fuzz(func(t *testing.T, line1, line2, prefix string) {
		if prefix == "" {
			return // strips everything by definition
		}
		in := []string{line1, line2}
		h := cookieHeader(in...)
		// The gate's scan reads the cookie named prefix as readCookie does,
		// chunks included, in the pass that strips.
		sc := cookieScan{want: prefix}
		kept, _ := sc.strip(h["Cookie"], func(n string) bool { return strings.HasPrefix(n, prefix) }, nil)
		gotV, gotOK := cookieValue(h, prefix, sc.first, sc.found)
		if wantV, wantOK := readCookie(h, prefix); gotV != wantV || gotOK != wantOK {
			t.Fatalf("scan read %q %v, readCookie %q %v", gotV, gotOK, wantV, wantOK)
		}
		stripCookies(h, prefix)
		if !slices.Equal(kept, h["Cookie"]) {
			t.Fatalf("scan kept %q, stripCookies %q", kept, h["Cookie"])
		}
		var want, got []string
		for _, line := range in {
			want = append(want, keptParts(line, prefix)...)
		}
		for _, line := range h["Cookie"] {
			for _, part := range strings.Split(line, ";") {
				if n, _, _ := parseCookiePair(part); strings.HasPrefix(n, prefix) {
					t.Fatalf("%q still holds a %q cookie", line, prefix)
				}
			}
			got = append(got, keptParts(line, prefix)...)
		}
		// The upstream's view, through a parser other than ours.
		for _, c := range (&http.Request{Header: h}).Cookies() {
			if strings.HasPrefix(c.Name, prefix) {
				t.Fatalf("net/http still sees cookie %q", c.Name)
			}
		}
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("kept %q, want %q", got, want)
		}
		if v, ok := h["Cookie"]; ok && len(v) == 0 {
			t.Fatal("empty Cookie header left")
		}
		// Byte for byte what a plain split-and-join makes of each line,
		// whether the scan answered with a substring or built a string.
		var ref []string
		for _, line := range in {
			owned := false
			for _, part := range strings.Split(line, ";") {
				if n, _, _ := parseCookiePair(part); n != "" && strings.HasPrefix(n, prefix) {
					owned = true
				}
			}
			if !owned {
				ref = append(ref, line)
			} else if joined := strings.Join(keptParts(line, prefix), "; "); joined != "" {
				ref = append(ref, joined)
			}
		}
		if !slices.Equal(h["Cookie"], ref) {
			t.Fatalf("stripped to %q, want %q", h["Cookie"], ref)
		}
	})
}

// keptParts lists the non-empty parts of a Cookie line without the prefix.
func keptParts(line, prefix string) []string {
	var parts []string
	for _, part := range strings.Split(line, ";") {
		part = trimCookieSpace(part)
		if n, _, _ := parseCookiePair(part); part != "" && !strings.HasPrefix(n, prefix) {
			parts = append(parts, part)
		}
	}
	return parts
}

// FuzzDecodeSession checks that decodeSession never panics on any payload
// (it runs only on payloads the codec authenticated, but a bug in a future
// writer must not crash readers), and that what it accepts encodes back to
// a payload that decodes to the same session.
func FuzzDecodeSession(f *testing.F) {
	f.Add(encodeSession(session{ID: "AAAAAAAAAAAAAAAAAAAAAA", IDToken: "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ1In0.c2ln", Refresh: "r", Created: 1, Expires: 2}))
	f.Add(encodeSession(session{ID: "x", IDToken: "a.b=.c", Gen: 3}))
	f.Add(encodeSession(session{ID: "y", IDToken: "a.b.c", Scopes: []string{"email", "o:r"}, Resources: []string{"https://api.example.com"}, StepUp: true}))
	f.Add([]byte(`{"i":"x","t":"a.b.c","e":1}`))
	f.Add([]byte{sessionFormat, 0x80})
	f.Fuzz(func(t *testing.T, plain []byte) {
		s, err := decodeSession(plain)
		if err != nil {
			return
		}
		again, err := decodeSession(encodeSession(s))
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, s)
		}
	})
}

// FuzzCallbackQuery sends arbitrary raw query strings to the sign-in
// callback, with and without a genuine attempt cookie. Whatever the query,
// the handler must not panic or answer 500, and a session may only come
// out of a code the IdP issued, presented with the attempt's own state.
func FuzzCallbackQuery(f *testing.F) {
	hx := newHarness(f, nil, nil)
	b := newBrowser()
	auth := hx.startSignIn(b, "/fuzz")
	state := auth.Query().Get("state")
	cookie := b.header()
	code := hx.idp.issueCode(auth, "user-1")
	iss := url.QueryEscape(hx.idp.issuer)

	for _, seed := range []string{
		"",
		"code=" + code + "&state=" + state + "&iss=" + iss,
		"code=x&state=" + state + "&iss=" + iss,
		"code=x&state=" + state,
		"state=" + state + "&error=access_denied&error_description=no",
		"state=" + state + "&state=" + state + "&code=a&code=b",
		"code=%00&state=" + state + "&iss=" + iss,
		"state=%zz",
		"state=" + state[:31] + "%C3%A9",
		";;;&&&===",
		"code=" + code + "&state=" + state + "&iss=" + iss + "&iss=https://evil",
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, raw string, withCookie bool) {
		fx := *hx
		fx.t = t
		r, repl, w := newRequest(http.MethodGet, "/logto/sign-in-callback", nil)
		r.URL.RawQuery = raw
		if withCookie {
			r.Header.Set("Cookie", cookie)
		}
		res := fx.serveRequest(r, repl, w, nil)
		if !res.newSession(t) {
			return
		}
		q, _ := url.ParseQuery(raw)
		if !withCookie || q.Get("state") != state || !hx.idp.wasIssued(q.Get("code")) {
			t.Fatalf("query %q (cookie %v) made a session", raw, withCookie)
		}
	})
}

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

// FuzzIdentityHeaderName checks the comparison that decides which request
// headers are a client's copy of an identity header: for header names
// (tokens, the only names Go's HTTP/1, HTTP/2 and HTTP/3 servers hand on)
// it must agree with the variable a PHP backend reads, Caddy's php_fastcgi
// making HTTP_<NAME> of strings.ToUpper with "-" turned to "_", and PHP
// turning "." to "_" as well; and stripIdentity must remove a header
// exactly when it names an identity header in that sense, and leave others
// alone.
func FuzzIdentityHeaderName(f *testing.F) {
	for _, seed := range [][2]string{
		{"X_User_Id", "X-User-Id"}, {"x_user_id", "X-User-Id"}, {"Logto_id_token", "X-User-Id"},
		{"X-User-Ids", "X-User-Id"}, {"X-User-I", "X-User-Id"}, {"X-User-Iſ", "X-User-Is"},
		{"X.User.Id", "X-User-Id"}, {"", ""}, {"Accept", "accept"},
	} {
		f.Add(seed[0], seed[1])
	}
	cgi := func(name string) string {
		return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
	}
	f.Fuzz(func(t *testing.T, sent, configured string) {
		same := sameCGIName(sent, configured)
		if same != sameCGIName(configured, sent) {
			t.Fatalf("sameCGIName(%q, %q) is not symmetric", sent, configured)
		}
		if !isHeaderToken(sent) || !isHeaderToken(configured) {
			return
		}
		if want := cgi(sent) == cgi(configured); same != want {
			t.Fatalf("sameCGIName(%q, %q) = %v, but PHP sees HTTP_%s and HTTP_%s", sent, configured, same, cgi(sent), cgi(configured))
		}
		h := &Handler{client: &client{}}
		names := []string{http.CanonicalHeaderKey(configured), idTokenHeader}
		h.client.blocks.headers.Store(&names)
		r := &http.Request{Header: http.Header{sent: {"forged"}}}
		h.stripIdentity(r, nil)
		_, kept := r.Header[sent]
		if identity := same || cgi(sent) == cgi(idTokenHeader); kept == identity {
			t.Fatalf("header %q with identity headers %q: kept = %v", sent, names, kept)
		}
	})
}

// isHeaderToken reports whether s is a header field name (RFC 9110 token).
func isHeaderToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
