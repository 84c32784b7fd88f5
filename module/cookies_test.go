package logto

import (
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const testSession = "__Host-logto_session"

var testOpts = CookieOptions{Secure: true, MaxAge: 1209600, Path: "/", SameSite: http.SameSiteLaxMode}

func cookieHeader(lines ...string) http.Header {
	return http.Header{"Cookie": lines}
}

// jar is a minimal browser cookie store: it applies Set-Cookie lines the way
// a browser does (Max-Age=0 deletes) and renders a Cookie header.
type jar struct {
	names  []string
	values map[string]string
}

func newJar() *jar { return &jar{values: map[string]string{}} }

func (j *jar) apply(t testing.TB, w http.Header) {
	t.Helper()
	for _, line := range w.Values("Set-Cookie") {
		if len(line) >= 4096 {
			t.Errorf("Set-Cookie line of %d bytes; browsers drop it", len(line))
		}
	}
	for _, c := range (&http.Response{Header: w}).Cookies() {
		if c.MaxAge < 0 {
			delete(j.values, c.Name)
			j.names = slices.DeleteFunc(j.names, func(n string) bool { return n == c.Name })
			continue
		}
		if _, ok := j.values[c.Name]; !ok {
			j.names = append(j.names, c.Name)
		}
		j.values[c.Name] = c.Value
	}
}

func (j *jar) header() http.Header {
	var b strings.Builder
	for _, n := range j.names {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(n + "=" + j.values[n])
	}
	if b.Len() == 0 {
		return http.Header{}
	}
	return cookieHeader(b.String())
}

// value is a base64url-looking test value of n bytes.
func value(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[(i*7+i/64)%64]
	}
	return string(b)
}

func TestCookieChunkingRoundTrip(t *testing.T) {
	longName := strings.Repeat("n", 64)
	for _, tt := range []struct {
		name   string
		value  string
		chunks int
	}{
		{testSession, "", 1},
		{testSession, value(1), 1},
		{testSession, value(3799), 1},
		{testSession, value(3800), 1},
		{testSession, value(3801), 2},
		{testSession, value(7598), 2},
		{testSession, value(7599), 3},
		{testSession, value(20000), 6},
		{testSession, value(maxChunks*maxCookieValue - 2), maxChunks},
		{longName, value(20000), 6},
		// Values that look like a chunk header are escaped, not misread.
		{testSession, "3*abc", 1},
		{testSession, "9*", 1},
		{testSession, "0*" + value(3798), 2},
		{testSession, "1*" + value(3799), 2},
	} {
		t.Run(strconv.Itoa(len(tt.value))+"/"+tt.value[:min(3, len(tt.value))], func(t *testing.T) {
			w := http.Header{}
			if err := writeCookie(w, http.Header{}, tt.name, tt.value, testOpts); err != nil {
				t.Fatal(err)
			}
			lines := w.Values("Set-Cookie")
			if len(lines) != tt.chunks {
				t.Errorf("%d Set-Cookie lines, want %d", len(lines), tt.chunks)
			}
			for _, line := range lines {
				for _, attr := range []string{"; Path=/", "; Max-Age=1209600", "; HttpOnly", "; Secure", "; SameSite=Lax"} {
					if !strings.Contains(line, attr) {
						t.Errorf("line %.40q... lacks %q", line, attr)
					}
				}
			}
			j := newJar()
			j.apply(t, w)
			got, ok := readCookie(j.header(), tt.name)
			if !ok || got != tt.value {
				t.Fatalf("readCookie = %d bytes, %v; want %d bytes", len(got), ok, len(tt.value))
			}
		})
	}
}

func TestWriteCookieErrors(t *testing.T) {
	for _, tt := range []struct {
		test, name, value string
	}{
		{"too large", testSession, value(maxChunks*maxCookieValue - 1)},
		{"space", testSession, "a b"},
		{"semicolon", testSession, "a;b=c"},
		{"quote", testSession, `"ab"`},
		{"comma", testSession, "a,b"},
		{"non-ASCII", testSession, "é"},
		{"control", testSession, "a\x00"},
		{"empty name", "", "v"},
		{"name with =", "a=b", "v"},
		{"name too long", strings.Repeat("n", 257), "v"},
	} {
		t.Run(tt.test, func(t *testing.T) {
			w := http.Header{}
			req := cookieHeader(testSession + "=old; " + testSession + ".1=old")
			if err := writeCookie(w, req, tt.name, tt.value, testOpts); err == nil {
				t.Fatal("writeCookie succeeded")
			}
			// Whatever was there must not survive a failed update.
			for _, line := range w.Values("Set-Cookie") {
				if !strings.Contains(line, "=; ") || !strings.Contains(line, "Max-Age=0") {
					t.Errorf("failed write set %.60q", line)
				}
			}
		})
	}
}

// TestWriteCookieTooLargeSignsOut stops a stale session from outliving a
// failed update: if the new value cannot be stored, the old one (perhaps
// another user's, or holding a refresh token already rotated) is expired.
func TestWriteCookieTooLargeSignsOut(t *testing.T) {
	j := newJar()
	w := http.Header{}
	if err := writeCookie(w, j.header(), testSession, value(10000), testOpts); err != nil {
		t.Fatal(err)
	}
	j.apply(t, w)
	w = http.Header{}
	if err := writeCookie(w, j.header(), testSession, value(40000), testOpts); err == nil {
		t.Fatal("writeCookie succeeded")
	}
	j.apply(t, w)
	if len(j.names) != 0 {
		t.Fatalf("cookies left: %v", j.names)
	}
}

// TestCookieShrinkExpiresStaleChunks stops a stale tail of an old, larger
// session from lingering in the browser (sent upstream-stripped on every
// request, and a trap if the count is ever misread).
func TestCookieShrinkExpiresStaleChunks(t *testing.T) {
	j := newJar()
	j.values["other"] = "1"
	j.names = append(j.names, "other")
	steps := []struct {
		size   int
		cookie []string
	}{
		{20000, []string{testSession, testSession + ".1", testSession + ".2", testSession + ".3", testSession + ".4", testSession + ".5", "other"}},
		{5000, []string{testSession, testSession + ".1", "other"}},
		{9000, []string{testSession, testSession + ".1", testSession + ".2", "other"}},
		{100, []string{testSession, "other"}},
	}
	for _, s := range steps {
		w := http.Header{}
		if err := writeCookie(w, j.header(), testSession, value(s.size), testOpts); err != nil {
			t.Fatal(err)
		}
		j.apply(t, w)
		if got := slices.Sorted(slices.Values(j.names)); !reflect.DeepEqual(got, s.cookie) {
			t.Fatalf("after writing %d bytes: cookies %v, want %v", s.size, got, s.cookie)
		}
		if got, ok := readCookie(j.header(), testSession); !ok || got != value(s.size) {
			t.Fatalf("after writing %d bytes: read %d bytes, %v", s.size, len(got), ok)
		}
	}
}

// TestClearCookieRemovesAllChunks stops a session from surviving sign-out
// in part: every chunk the browser holds is expired, with the attributes it
// was set with (a __Host- cookie is only replaced by a Secure, Path=/ one).
func TestClearCookieRemovesAllChunks(t *testing.T) {
	j := newJar()
	w := http.Header{}
	if err := writeCookie(w, j.header(), testSession, value(25000), testOpts); err != nil {
		t.Fatal(err)
	}
	j.apply(t, w)
	j.values["keep"] = "1"
	j.names = append(j.names, "keep")

	w = http.Header{}
	clearCookie(w, j.header(), testSession, testOpts)
	for _, line := range w.Values("Set-Cookie") {
		for _, attr := range []string{"=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"} {
			if !strings.Contains(line, attr) {
				t.Errorf("%q lacks %q", line, attr)
			}
		}
	}
	j.apply(t, w)
	if !reflect.DeepEqual(j.names, []string{"keep"}) {
		t.Fatalf("cookies left: %v", j.names)
	}

	// Without the cookie in the request, the cookie itself is still expired.
	w = http.Header{}
	clearCookie(w, http.Header{}, testSession, testOpts)
	if got := w.Values("Set-Cookie"); len(got) != 1 || !strings.HasPrefix(got[0], testSession+"=;") {
		t.Fatalf("Set-Cookie = %q", got)
	}
}

// TestCookieLongNameOrPath keeps every line under the browser limit when a
// long cookie_name or path leaves less room: chunks get smaller instead of
// being dropped by the browser.
func TestCookieLongNameOrPath(t *testing.T) {
	long := CookieOptions{Secure: true, MaxAge: 1 << 30, Path: "/" + strings.Repeat("p", 300), SameSite: http.SameSiteLaxMode}
	for _, name := range []string{"__Host-" + strings.Repeat("n", 64) + "-signin-abcdefghijkl", strings.Repeat("n", 256)} {
		for _, size := range []int{100, 3700, 3800, 20000} {
			w := http.Header{}
			if err := writeCookie(w, nil, name, value(size), long); err != nil {
				t.Fatal(err)
			}
			j := newJar()
			j.apply(t, w) // fails on a line of 4096 bytes or more
			for _, line := range w.Values("Set-Cookie") {
				if len(line) > maxSetCookieLine {
					t.Errorf("line of %d bytes", len(line))
				}
			}
			if got, ok := readCookie(j.header(), name); !ok || got != value(size) {
				t.Fatalf("%d bytes: read %d bytes, %v", size, len(got), ok)
			}
		}
	}
	absurd := CookieOptions{Path: "/" + strings.Repeat("p", 3000)}
	if err := writeCookie(http.Header{}, nil, "s", "v", absurd); err == nil {
		t.Fatal("writeCookie accepted a 3000-byte path")
	}
}

func TestCookieEmptyPathMeansRoot(t *testing.T) {
	w := http.Header{}
	if err := writeCookie(w, nil, "c", "v", CookieOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := w.Get("Set-Cookie"); got != "c=v; Path=/; HttpOnly" {
		t.Fatalf("Set-Cookie = %q", got)
	}
}

func TestReadCookie(t *testing.T) {
	const s = "s"
	for _, tt := range []struct {
		test   string
		header []string
		want   string
		ok     bool
	}{
		{"absent", nil, "", false},
		{"empty header", []string{""}, "", false},
		{"only", []string{"s=v"}, "v", true},
		{"among others", []string{"a=1; s=v; b=2"}, "v", true},
		{"no space", []string{"a=1;s=v;b=2"}, "v", true},
		{"extra space", []string{"a=1 ;  s = v  ; b=2"}, "v", true},
		{"tabs", []string{"a=1;\ts=v\t;b=2"}, "v", true},
		{"empty value", []string{"s="}, "", true},
		{"quoted", []string{`s="v"`}, "v", true},
		{"one quote pair only", []string{`s=""v""`}, `"v"`, true},
		{"lone quote", []string{`s="`}, `"`, true},
		{"value with =", []string{"s=a=b"}, "a=b", true},
		{"first wins", []string{"s=1; s=2"}, "1", true},
		{"first wins across lines", []string{"a=1; s=1", "s=2"}, "1", true},
		{"second line", []string{"a=1", "b=2; s=v"}, "v", true},
		{"no =", []string{"s; a=1"}, "", false},
		{"no = then real", []string{"s; s=v"}, "v", true},
		{"longer name", []string{"ss=v; s2=v"}, "", false},
		{"shorter name", []string{"=v"}, "", false},
		{"case matters", []string{"S=v"}, "", false},
		{"empty parts", []string{";;; s=v ;;"}, "v", true},
		{"too long", []string{"s=" + value(maxCookieValue+1)}, "", false},
		{"chunked", []string{"s=3*ab; s.1=cd; s.2=ef"}, "abcdef", true},
		{"chunked out of order", []string{"s.2=ef; s.1=cd", "s=3*ab"}, "abcdef", true},
		{"chunked quoted", []string{`s="2*ab"; s.1="cd"`}, "abcd", true},
		{"one chunk", []string{"s=1*ab"}, "ab", true},
		{"stale chunk ignored", []string{"s=2*ab; s.1=cd; s.2=zz"}, "abcd", true},
		{"chunk first wins", []string{"s=2*ab; s.1=cd; s.1=zz"}, "abcd", true},
		{"missing middle chunk", []string{"s=3*ab; s.2=ef"}, "", false},
		{"missing last chunk", []string{"s=3*ab; s.1=cd"}, "", false},
		{"empty chunk", []string{"s=2*ab; s.1="}, "", false},
		{"chunk without =", []string{"s=2*ab; s.1"}, "", false},
		{"chunks without head", []string{"s.1=cd; s.2=ef"}, "", false},
		{"count zero", []string{"s=0*ab"}, "", false},
		{"count over max", []string{"s=9*ab; s.1=a; s.2=a; s.3=a; s.4=a; s.5=a; s.6=a; s.7=a; s.8=a"}, "", false},
		{"chunk too long", []string{"s=2*ab; s.1=" + value(maxCookieValue+1)}, "", false},
		{"other cookie's chunks", []string{"s=2*ab; t.1=cd"}, "", false},
		{"chunk names are exact", []string{"s=2*ab; s.01=cd; s.1x=cd; s..1=cd"}, "", false},
	} {
		t.Run(tt.test, func(t *testing.T) {
			h := http.Header{}
			if tt.header != nil {
				h["Cookie"] = tt.header
			}
			got, ok := readCookie(h, s)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("readCookie = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestReadCookieAgreesWithNetHTTP keeps the module's reading of a single
// cookie the same as net/http's, so the module and anything else parsing the
// same header (another handler, the upstream) never disagree on a value.
func TestReadCookieAgreesWithNetHTTP(t *testing.T) {
	for _, line := range []string{
		"a=1; s=v; b=2",
		"s=1; s=2",
		`s="quoted"`,
		"x=1;s=v2",
		"s=",
		// Not compared: "s=  v", where net/http keeps the leading spaces and
		// readCookie trims them as RFC 6265bis says. Browsers never send it.
	} {
		r := &http.Request{Header: cookieHeader(line)}
		want, err := r.Cookie("s")
		got, ok := readCookie(r.Header, "s")
		if (err == nil) != ok || (ok && got != want.Value) {
			t.Errorf("%q: readCookie = %q, %v; net/http = %v, %v", line, got, ok, want, err)
		}
	}
}

// TestReadCookieHostileHeader stops a request from costing more than a scan
// of its own headers: thousands of cookies, huge values or many bogus chunks
// are read once, and nothing larger than maxChunks cookies is assembled.
func TestReadCookieHostileHeader(t *testing.T) {
	var b strings.Builder
	for i := range 20000 {
		b.WriteString("s." + strconv.Itoa(i%10) + "=" + value(50) + "; ")
	}
	b.WriteString("s=8*" + value(maxCookieValue-2) + "; big=" + value(1<<20))
	h := cookieHeader(b.String(), b.String())
	got, ok := readCookie(h, "s")
	if !ok || len(got) != maxCookieValue-2+7*50 {
		t.Fatalf("readCookie = %d bytes, %v", len(got), ok)
	}
	if n := len(cookieNames(h, "s.")); n != 10 {
		t.Fatalf("cookieNames found %d names", n)
	}
}

// TestReadCookieNoAlloc keeps the per-request cost of reading the session
// down: the common single-cookie case returns a substring of the header.
func TestReadCookieNoAlloc(t *testing.T) {
	h := cookieHeader("a=1; b=2; "+testSession+"="+value(1500)+"; c=3", "d=4")
	if n := testing.AllocsPerRun(100, func() { readCookie(h, testSession) }); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func TestStripCookies(t *testing.T) {
	const p = "__Host-logto"
	for _, tt := range []struct {
		test string
		in   []string
		want []string // nil: header deleted
	}{
		{"no header", nil, nil},
		{"nothing to strip", []string{"a=1;b=2 ;  c"}, []string{"a=1;b=2 ;  c"}},
		{"only ours", []string{p + "_session=x; " + p + "_session.1=y"}, nil},
		{"mixed", []string{"a=1; " + p + "_session=x; b=2; " + p + "_tx_1=y; c=3"}, []string{"a=1; b=2; c=3"}},
		{"others kept as sent", []string{`a="q 1";` + p + `_s=x;  b = 2 ;c`}, []string{`a="q 1"; b = 2; c`}},
		{"several lines", []string{"a=1", p + "_s=x", "b=2; " + p + "_t=y"}, []string{"a=1", "b=2"}},
		{"all lines ours", []string{p + "_s=x", p + "_t=y"}, nil},
		{"no =", []string{p + "_s; a=1"}, []string{"a=1"}},
		{"whitespace around name", []string{"a=1; \t" + p + "_s =x"}, []string{"a=1"}},
		{"control characters around name", []string{"a=1;\v" + p + "_s\f=x"}, []string{"a=1"}},
		{"bare prefix", []string{p + "=x; b=2"}, []string{"b=2"}},
		{"empty parts dropped", []string{";;a=1;;" + p + "_s=x;;"}, []string{"a=1"}},
		{"prefix elsewhere kept", []string{"x" + p + "=1; a=" + p + "_s"}, []string{"x" + p + "=1; a=" + p + "_s"}},
		{"case differs kept", []string{"__host-logto_s=1"}, []string{"__host-logto_s=1"}},
		{"empty line kept", []string{"", p + "_s=x"}, []string{""}},
		{"ours last", []string{"a=1; b=2; " + p + "_s=x"}, []string{"a=1; b=2"}},
		{"ours first", []string{p + "_s=x; a=1; b=2"}, []string{"a=1; b=2"}},
		{"ours at both ends", []string{p + "_s=x; a=1; b=2; " + p + "_t=y"}, []string{"a=1; b=2"}},
		{"tight separator rejoined", []string{"a=1;b=2; " + p + "_s=x"}, []string{"a=1; b=2"}},
		{"wide separator rejoined", []string{"a=1;  b=2; " + p + "_s=x"}, []string{"a=1; b=2"}},
		{"empty part inside rejoined", []string{"a=1; ; b=2; " + p + "_s=x"}, []string{"a=1; b=2"}},
	} {
		t.Run(tt.test, func(t *testing.T) {
			h := http.Header{"Other": {"x"}}
			var orig []string
			if tt.in != nil {
				orig = slices.Clone(tt.in)
				h["Cookie"] = tt.in
			}
			stripCookies(h, p)
			got, present := h["Cookie"]
			if tt.want == nil && present {
				t.Fatalf("Cookie = %q, want deleted", got)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Cookie = %q, want %q", got, tt.want)
			}
			if !slices.Equal(tt.in, orig) {
				t.Fatalf("input slice modified: %q", tt.in)
			}
			if h.Get("Other") != "x" {
				t.Fatal("other header touched")
			}
		})
	}
}

// TestStripCookiesNeverForwardsSession stops the session, a bearer
// credential for this proxy holding the user's tokens, from reaching the
// upstream app or its logs, whatever shape the client gave the header.
func TestStripCookiesNeverForwardsSession(t *testing.T) {
	j := newJar()
	w := http.Header{}
	if err := writeCookie(w, nil, testSession, value(9000), testOpts); err != nil {
		t.Fatal(err)
	}
	if err := writeCookie(w, nil, "__Host-logto_tx_abc", value(100), testOpts); err != nil {
		t.Fatal(err)
	}
	j.apply(t, w)
	h := j.header()
	h.Add("Cookie", "app=1; __Host-logto_tx_def=z")
	stripCookies(h, "__Host-logto")
	r := &http.Request{Header: h}
	var names []string
	for _, c := range r.Cookies() {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, []string{"app"}) {
		t.Fatalf("upstream sees cookies %v", names)
	}
	if v := strings.Join(h.Values("Cookie"), ";"); strings.Contains(v, value(100)) || strings.Contains(v, "logto") {
		t.Fatalf("upstream Cookie header %q", v)
	}
}

func TestStripCookiesHostile(t *testing.T) {
	var b strings.Builder
	for i := range 10000 {
		if i%2 == 0 {
			b.WriteString("__Host-logto_tx_" + strconv.Itoa(i) + "=x;")
		} else {
			b.WriteString("k" + strconv.Itoa(i) + "=v;")
		}
	}
	h := cookieHeader(b.String(), b.String())
	stripCookies(h, "__Host-logto")
	lines := h["Cookie"]
	if len(lines) != 2 || strings.Contains(lines[0], "logto") || strings.Count(lines[0], ";") != 4999 {
		t.Fatalf("got %d lines, %d separators", len(lines), strings.Count(lines[0], ";"))
	}
}

// TestStripCookiesNoAlloc keeps stripping free for the requests that carry
// none of the module's cookies (API clients, assets).
func TestStripCookiesNoAlloc(t *testing.T) {
	for _, h := range []http.Header{{}, cookieHeader("a=1; b=2", "c=3")} {
		before := slices.Clone(h["Cookie"])
		if n := testing.AllocsPerRun(100, func() { stripCookies(h, "__Host-logto") }); n != 0 {
			t.Fatalf("%v allocations", n)
		}
		if !slices.Equal(h["Cookie"], before) {
			t.Fatalf("header changed to %q", h["Cookie"])
		}
	}
}

// TestStripAtEitherEndAllocatesNothing: a signed-in browser's Cookie line
// has the session at one end; what is kept is then a substring of the line,
// and with the request's one-line buffer stripping allocates nothing.
func TestStripAtEitherEndAllocatesNothing(t *testing.T) {
	session := testSession + "=" + strings.Repeat("A", 1200)
	match := func(n string) bool { return ownsCookie(n, testSession) }
	for _, line := range []string{
		session + "; theme=dark; _ga=GA1.2.3",
		"theme=dark; _ga=GA1.2.3; " + session,
		session + "; theme=dark; _ga=GA1.2.3; " + testSession + ".1=x",
	} {
		h := http.Header{}
		var buf [1]string
		if n := testing.AllocsPerRun(100, func() {
			h["Cookie"] = []string{line}
			stripMatching(h, match, &buf)
		}); n != 1 { // the test's own []string{line}
			t.Errorf("stripping %.30q...: %v allocations, want only the test's own", line, n)
		}
		if got := h["Cookie"]; len(got) != 1 || got[0] != "theme=dark; _ga=GA1.2.3" {
			t.Fatalf("stripped %.30q... to %q", line, got)
		}
	}
}

func TestCookieNames(t *testing.T) {
	for _, tt := range []struct {
		test   string
		header []string
		want   []string
	}{
		{"none", nil, nil},
		{"no match", []string{"a=1; b=2"}, nil},
		{"in order", []string{"tx_b=1; a=2; tx_a=3", "tx_c=4"}, []string{"tx_b", "tx_a", "tx_c"}},
		{"deduplicated", []string{"tx_a=1; tx_a=2", "tx_a=3"}, []string{"tx_a"}},
		{"no = skipped", []string{"tx_a; tx_b="}, []string{"tx_b"}},
		{"trimmed", []string{"  tx_a = 1"}, []string{"tx_a"}},
	} {
		t.Run(tt.test, func(t *testing.T) {
			if got := cookieNames(cookieHeader(tt.header...), "tx_"); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("cookieNames = %q, want %q", got, tt.want)
			}
		})
	}

	// Past the small linear case, deduplication switches to a map.
	var b strings.Builder
	var want []string
	for i := range 50 {
		want = append(want, "tx_"+strconv.Itoa(i))
		b.WriteString("tx_" + strconv.Itoa(i) + "=1; tx_" + strconv.Itoa(i/2) + "=2; ")
	}
	if got := cookieNames(cookieHeader(b.String()), "tx_"); !reflect.DeepEqual(got, want) {
		t.Fatalf("cookieNames = %q", got)
	}
}

func benchHeader() http.Header {
	var b strings.Builder
	for i := range 10 {
		b.WriteString("other" + strconv.Itoa(i) + "=" + value(30) + "; ")
	}
	b.WriteString(testSession + "=" + value(1650))
	return cookieHeader(b.String())
}

func BenchmarkReadCookie(b *testing.B) {
	h := benchHeader()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := readCookie(h, testSession); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkReadCookieChunked(b *testing.B) {
	j := newJar()
	w := http.Header{}
	if err := writeCookie(w, nil, testSession, value(9000), testOpts); err != nil {
		b.Fatal(err)
	}
	j.apply(b, w)
	h := j.header()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := readCookie(h, testSession); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkStripCookies(b *testing.B) {
	b.Run("none", func(b *testing.B) {
		h := cookieHeader("a=1; b=2; c=3")
		b.ReportAllocs()
		for b.Loop() {
			stripCookies(h, "__Host-logto")
		}
	})
	b.Run("session", func(b *testing.B) {
		line := benchHeader().Get("Cookie")
		h := http.Header{}
		b.ReportAllocs()
		for b.Loop() {
			h["Cookie"] = []string{line}
			stripCookies(h, "__Host-logto")
		}
	})
}

// TestStripOwnCookiesKeepsApplicationCookies: the module removes its own
// cookies from every request, but an application's cookie that merely
// starts like them (logto_theme, logtoLang) is the application's and must
// reach it.
func TestStripKeepsApplicationCookies(t *testing.T) {
	for _, c := range []struct {
		name  string
		strip bool
	}{
		{"logto", true},
		{"logto.1", true},
		{"logto-signin-AbCdEfGhIjKl", true},
		{"logto_theme", false},
		{"logtoLang", false},
		{"logto-settings", false},
		{"__Host-logto", false}, // another base name, stripped by its own call
		{"app", false},
	} {
		h := http.Header{"Cookie": {"keep=1; " + c.name + "=v"}}
		stripMatching(h, func(n string) bool { return ownsCookie(n, "logto") }, nil)
		got := strings.Join(h["Cookie"], "; ")
		if stripped := !strings.Contains(got, c.name+"=v"); stripped != c.strip {
			t.Errorf("%s: stripped=%v, want %v (Cookie %q)", c.name, stripped, c.strip, got)
		}
		if !strings.Contains(got, "keep=1") {
			t.Errorf("%s: the unrelated cookie was removed: %q", c.name, got)
		}
	}
}

// stripCookies strips the cookies whose name has prefix.
func stripCookies(h http.Header, prefix string) {
	stripMatching(h, func(n string) bool { return strings.HasPrefix(n, prefix) }, nil)
}

// TestGateUsesTheFirstSessionCookie: the gate reads the session cookie in
// the pass that strips the module's cookies. It must pick the very cookie
// readCookie picks (the first of the name, as browsers and net/http do): a
// second session cookie slipped in after the real one (by a script on a
// sibling site or a proxy) must neither replace the user nor reach the
// upstream, and one slipped in before it decides, as it always has, so a
// forged first cookie signs the request out rather than being skipped.
func TestGateUsesTheFirstSessionCookie(t *testing.T) {
	hx := newHarness(t, nil, nil)
	forged := "__Host-logto=" + strings.Repeat("A", 200)

	b := hx.signedIn()
	b.extra = "a=1"
	after := func(r *http.Request) { r.Header.Set("Cookie", r.Header.Get("Cookie")+"; "+forged+"; b=2") }
	res := hx.serve(http.MethodGet, "/", b, fetchAPI(), after)
	mustPass(t, res, "user-1")
	if got := strings.Join(res.nextReq.Header.Values("Cookie"), "; "); got != "a=1; b=2" {
		t.Errorf("cookies upstream = %q", got)
	}

	b.extra = forged
	res = hx.serve(http.MethodGet, "/", b, fetchAPI())
	if res.next {
		t.Fatal("a forged session cookie before the real one was skipped")
	}
	res.mustHandlerError(t, http.StatusUnauthorized)
}

// bytesPerRun is the heap bytes f allocates per call, averaged over n calls
// (an allocation count, like testing.AllocsPerRun, not a timing).
func bytesPerRun(n int, f func()) uint64 {
	f()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(n)
}

// TestStripSessionAllocatesWhatItKeeps: removing a signed-in user's session
// cookie, on every request, must not copy the whole Cookie line (a kilobyte
// or more of session) to keep the few short cookies beside it. More heap per
// request means more garbage collection under load.
func TestStripSessionAllocatesWhatItKeeps(t *testing.T) {
	session := testSession + "=" + strings.Repeat("A", 1200)
	for _, line := range []string{
		session + "; theme=dark; _ga=GA1.2.3",
		"theme=dark; " + session + "; _ga=GA1.2.3",
		"theme=dark; _ga=GA1.2.3; " + session,
	} {
		h := http.Header{}
		got := bytesPerRun(200, func() {
			h["Cookie"] = []string{line}
			stripCookies(h, testSession)
		})
		if want := "theme=dark; _ga=GA1.2.3"; h.Get("Cookie") != want {
			t.Fatalf("stripped %q to %q, want %q", line, h.Get("Cookie"), want)
		}
		// The kept line (23 bytes, rounded up to a size class) and the new
		// one-element slice of lines.
		if got > 128 {
			t.Errorf("stripping the session from %.40q... allocates %d bytes a request, want at most 128", line, got)
		}
	}
}
