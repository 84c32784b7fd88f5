package logto

import (
	"errors"
	"iter"
	"net"
	"net/http"
	"strings"
)

// Chunked cookies.
//
// Browsers drop a cookie whose name and value exceed about 4096 bytes, and a
// session (tokens for a user in many organizations) can be bigger, so a long
// value is split across several cookies:
//
//	name=value                 when value fits in one cookie, or else
//	name=<n>*<part 0>          n chunks, 2 <= n <= maxChunks, one digit
//	name.1=<part 1>
//	...
//	name.<n-1>=<part n-1>
//
// where value = part 0 + part 1 + ... + part n-1, and "<n>*<part 0>" and
// every other part are at most maxCookieValue bytes. The codec's output is
// base64url and never contains '*', so "<digit>*" at the start of the first
// cookie unambiguously marks a chunked value. Any other value that happens to
// start that way is written in the chunked form even if it fits in one
// cookie ("1*value"), so every value round-trips.
//
// Reading takes the count from the first cookie and needs exactly chunks
// 1..n-1; a missing one means no value at all. Chunks numbered n or more are
// ignored rather than rejected: two overlapping responses (one growing the
// session, one shrinking it) can leave such a stale chunk behind, and the
// value is still whole without it. Mixing chunks of different values is
// caught by the codec, which authenticates the reassembled value.

const (
	// maxCookieValue is the largest value one cookie carries. With the
	// module's names and attributes the longest Set-Cookie line is then
	//
	//	"Set-Cookie: " (12) + name (<= 64) + "=" (1) + value (3800)
	//	+ "; Path=/" (8) + "; Max-Age=" and 10 digits (20)
	//	+ "; HttpOnly" (10) + "; Secure" (8) + "; SameSite=Lax" (14)
	//
	// = 3937 bytes, safely under the 4096 bytes browsers accept for a cookie
	// (RFC 6265 section 6.1, and Chrome's name+value limit). Longer names or
	// paths get smaller chunks: no line exceeds maxSetCookieLine.
	maxCookieValue = 3800

	// minCookieValue is the smallest chunk writeCookie accepts to use when a
	// long name or path eats into the line; below it the options are absurd.
	minCookieValue = 1024

	// maxChunks caps how many cookies one value spans, and how many readCookie
	// ever looks for. 8 chunks carry about 30 KB, and a browser sends all
	// cookies of a site on every request, so a session should never come near.
	maxChunks = 8

	// maxSetCookieLine is the longest Set-Cookie field value writeCookie emits.
	maxSetCookieLine = 4000
)

var (
	errCookieTooLarge = errors.New("logto: cookie value too large")
	errCookieValue    = errors.New("logto: cookie value has bytes not allowed in a cookie")
	errCookieName     = errors.New("logto: invalid cookie name")
)

// CookieOptions are the attributes of the module's cookies. HttpOnly is
// always set: no script ever needs to read them.
type CookieOptions struct {
	Secure   bool          // Secure attribute
	MaxAge   int           // seconds; 0 = session cookie
	Path     string        // "/" normally; empty also means "/"
	SameSite http.SameSite // http.SameSiteLaxMode normally
}

// readCookie returns the value of the cookie named name from the request's
// Cookie header(s), reassembling chunks. When a name is repeated the first
// occurrence wins, as in browsers and net/http. ok is false if the cookie is
// absent, or chunked with chunks missing, empty or too long.
//
// The single-chunk case returns a substring of the header and does not
// allocate, scanning the headers once; a chunked cookie costs a second
// scan (readChunks) and the reassembled value. It runs on
// every request, deep in Caddy's middleware chain, so it keeps a small
// stack frame and leaves chunks to readChunks: a frame that pushes the
// request's goroutine past its stack size costs a stack copy, again after
// every GC cycle that shrinks the stack.
func readCookie(h http.Header, name string) (value string, ok bool) {
	var first string
	found := false
	for _, line := range h["Cookie"] {
		for line != "" && !found {
			var part string
			part, line, _ = strings.Cut(line, ";")
			if n, v, eq := parseCookiePair(part); eq && n == name {
				first, found = v, true
			}
		}
	}
	return cookieValue(h, name, first, found)
}

// cookieValue is readCookie's answer once the first cookie named name has
// been found (or not): first itself, or the chunks it heads reassembled.
func cookieValue(h http.Header, name, first string, found bool) (string, bool) {
	if !found || len(first) > maxCookieValue {
		return "", false
	}
	count, chunked := chunkCount(first)
	if !chunked {
		return first, true
	}
	if count < 1 || count > maxChunks {
		return "", false
	}
	if count == 1 {
		return first[2:], true
	}
	return readChunks(h, name, first[2:], count)
}

// readChunks reassembles a cookie split into count chunks, first being the
// part the cookie itself holds. The first occurrence of each chunk wins.
//
//go:noinline
func readChunks(h http.Header, name, first string, count int) (string, bool) {
	var (
		chunks [maxChunks]string
		have   uint
	)
	for i, v := range chunksIn(h, name) {
		if have&(1<<i) == 0 {
			chunks[i] = v
			have |= 1 << i
		}
	}
	size := len(first)
	for i := 1; i < count; i++ {
		if have&(1<<i) == 0 || chunks[i] == "" || len(chunks[i]) > maxCookieValue {
			return "", false
		}
		size += len(chunks[i])
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(first)
	for i := 1; i < count; i++ {
		b.WriteString(chunks[i])
	}
	return b.String(), true
}

// writeCookie sets name=value on the response, split into chunks when longer
// than maxCookieValue (less for very long names or paths), and expires the chunk cookies that req carries and
// the new value does not use (left by a previous, larger value).
//
// value must consist of cookie-octets (RFC 6265 section 4.1.1), as the
// codec's base64url output does. If the value cannot be written (invalid
// bytes, or more than maxChunks cookies), the cookie and its chunks are
// expired instead, so that a previous value never outlives a failed update,
// and the error says why.
func writeCookie(w http.Header, req http.Header, name, value string, o CookieOptions) error {
	if !validCookieName(name) {
		return errCookieName
	}
	var lines [maxChunks]string
	n, err := cookieLines(&lines, name, value, o)
	if err != nil {
		clearCookie(w, req, name, o)
		return err
	}
	for _, line := range lines[:n] {
		w.Add("Set-Cookie", line)
	}
	held := heldChunks(req, name)
	for i := n; i < maxChunks; i++ {
		if held&(1<<i) != 0 {
			w.Add("Set-Cookie", expiredCookie(chunkName(name, i), o))
		}
	}
	return nil
}

// cookieLines renders the Set-Cookie lines carrying value into lines and
// returns how many there are.
func cookieLines(lines *[maxChunks]string, name, value string, o CookieOptions) (int, error) {
	for i := 0; i < len(value); i++ {
		if !isCookieOctet(value[i]) {
			return 0, errCookieValue
		}
	}
	size := chunkSize(name, o)
	if size < minCookieValue {
		return 0, errCookieTooLarge
	}
	if _, looksChunked := chunkCount(value); len(value) <= size && !looksChunked {
		lines[0] = setCookie(name, value, o)
		return 1, nil
	}
	// The "<n>*" prefix is two bytes since n has one digit.
	n := (len(value) + 2 + size - 1) / size
	if n > maxChunks {
		return 0, errCookieTooLarge
	}
	whole := string(rune('0'+n)) + "*" + value
	for i := range n {
		lines[i] = setCookie(chunkName(name, i), whole[i*size:min((i+1)*size, len(whole))], o)
	}
	return n, nil
}

// chunkSize is the most value bytes one cookie of name carries: long names
// or paths leave less room for the value in a line.
func chunkSize(name string, o CookieOptions) int {
	return min(maxCookieValue, maxSetCookieLine-len(setCookie(chunkName(name, maxChunks-1), "", o)))
}

// clearCookie expires the cookie and all its chunks that the request
// carries. The cookie itself is expired even if the request lacks it: a
// cookie the browser did not send (another path, a race) is still removed.
func clearCookie(w http.Header, req http.Header, name string, o CookieOptions) {
	if !validCookieName(name) {
		return
	}
	w.Add("Set-Cookie", expiredCookie(name, o))
	held := heldChunks(req, name)
	for i := 1; i < maxChunks; i++ {
		if held&(1<<i) != 0 {
			w.Add("Set-Cookie", expiredCookie(chunkName(name, i), o))
		}
	}
}

// cookieNames returns the names of all cookies in the request with the given
// prefix, each once, in the order they first appear (used to find sign-in
// transaction cookies, one per attempt). It returns nil if there are none.
func cookieNames(h http.Header, prefix string) []string {
	var (
		names []string
		seen  map[string]struct{} // only once names grows, to keep the common case cheap
	)
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			n, _, eq := parseCookiePair(part)
			if !eq || !strings.HasPrefix(n, prefix) {
				continue
			}
			if seen != nil {
				if _, dup := seen[n]; dup {
					continue
				}
				seen[n] = struct{}{}
			} else {
				dup := false
				for _, m := range names {
					if m == n {
						dup = true
						break
					}
				}
				if dup {
					continue
				}
				if len(names) == 8 {
					// A hostile header may hold thousands of names; keep
					// deduplication linear.
					seen = make(map[string]struct{}, 16)
					for _, m := range names {
						seen[m] = struct{}{}
					}
					seen[n] = struct{}{}
				}
			}
			names = append(names, n)
		}
	}
	return names
}

// parseCookiePair splits one ';'-separated part of a Cookie header into name
// and value, trimming surrounding whitespace and one pair of double quotes
// around the value (RFC 6265 section 4.1.1). eq is false if the part has no
// '='; name is then the whole trimmed part.
func parseCookiePair(part string) (name, value string, eq bool) {
	name, value, eq = strings.Cut(part, "=")
	name = trimCookieSpace(name)
	if !eq {
		return name, "", false
	}
	value = trimCookieSpace(value)
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		value = value[1 : len(value)-1]
	}
	return name, value, true
}

// trimCookieSpace trims spaces and control characters, more than browsers
// send: some servers upstream trim that much, and a name they would see as
// one of ours must be stripped.
func trimCookieSpace(s string) string {
	for len(s) > 0 && s[0] <= ' ' {
		s = s[1:]
	}
	for len(s) > 0 && s[len(s)-1] <= ' ' {
		s = s[:len(s)-1]
	}
	return s
}

// chunkCount reports whether v starts with the "<digit>*" chunk marker and
// the digit's value.
func chunkCount(v string) (n int, chunked bool) {
	if len(v) >= 2 && v[1] == '*' && '0' <= v[0] && v[0] <= '9' {
		return int(v[0] - '0'), true
	}
	return 0, false
}

// chunkIndex returns i if n is the name of chunk i (1..maxChunks-1) of the
// cookie name, and 0 otherwise.
func chunkIndex(n, name string) int {
	if len(n) != len(name)+2 || n[len(name)] != '.' || n[:len(name)] != name {
		return 0
	}
	if d := n[len(name)+1]; '1' <= d && d < '0'+maxChunks {
		return int(d - '0')
	}
	return 0
}

// chunkName is the name of chunk i; chunk 0 is the cookie itself.
func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + "." + string(rune('0'+i))
}

// heldChunks returns a bit set of the chunks 1..maxChunks-1 of name that
// the request carries.
func heldChunks(req http.Header, name string) uint {
	var held uint
	for i := range chunksIn(req, name) {
		held |= 1 << i
	}
	return held
}

// chunksIn yields the index (1..maxChunks-1) and value of every chunk of
// name in the request's Cookie header, in the order sent.
func chunksIn(h http.Header, name string) iter.Seq2[int, string] {
	return func(yield func(int, string) bool) {
		for _, line := range h["Cookie"] {
			for line != "" {
				var part string
				part, line, _ = strings.Cut(line, ";")
				n, v, eq := parseCookiePair(part)
				if !eq {
					continue
				}
				if i := chunkIndex(n, name); i > 0 && !yield(i, v) {
					return
				}
			}
		}
	}
}

func setCookie(name, value string, o CookieOptions) string {
	c := http.Cookie{
		Name:     name,
		Value:    value,
		Path:     o.Path,
		MaxAge:   o.MaxAge,
		Secure:   o.Secure,
		HttpOnly: true,
		SameSite: o.SameSite,
	}
	if c.Path == "" {
		// Without a Path the browser scopes the cookie to the request's
		// directory, and chunks set from different pages would not meet.
		c.Path = "/"
	}
	return c.String()
}

// expiredCookie removes a cookie. The attributes must match the ones it was
// set with: a __Host- cookie without Secure and Path=/ is rejected outright.
func expiredCookie(name string, o CookieOptions) string {
	o.MaxAge = -1 // net/http writes Max-Age=0
	return setCookie(name, "", o)
}

// validCookieName reports whether name is a token (RFC 9110) of sane
// length; net/http would silently drop a cookie with any other name.
func validCookieName(name string) bool {
	if name == "" || len(name) > 256 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// isCookieOctet reports whether c may appear in a cookie value unquoted
// (RFC 6265 section 4.1.1): net/http would quote or drop anything else.
func isCookieOctet(c byte) bool {
	return 0x20 < c && c < 0x7f && c != '"' && c != ',' && c != ';' && c != '\\'
}

// sessionAAD binds sealed session values to their purpose, whatever the
// cookie's name on the wire.
const sessionAAD = "session"

// cookieSet is the names and attributes of the module's cookies for one
// kind of request (HTTPS or plain HTTP).
type cookieSet struct {
	session string // the session cookie; every module cookie's name starts with it
	attempt string // prefix of the per-attempt sign-in cookies
	opts    CookieOptions
}

type cookieJarNames struct{ secure, plain cookieSet }

func newCookieNames(base string) cookieJarNames {
	mk := func(prefix string, secure bool) cookieSet {
		return cookieSet{
			session: prefix,
			attempt: prefix + "-signin-",
			opts:    CookieOptions{Secure: secure, Path: "/", SameSite: http.SameSiteLaxMode},
		}
	}
	return cookieJarNames{secure: mk("__Host-"+base, true), plain: mk(base, false)}
}

// cookiesFor picks the cookie set: "__Host-" cookies with the Secure
// attribute on HTTPS and on localhost (which browsers treat as a secure
// context), plain ones on plain HTTP elsewhere, where browsers would drop
// Secure cookies.
func (h *Handler) cookiesFor(r *http.Request) *cookieSet {
	if r.TLS != nil || strings.HasPrefix(h.BaseURL, "https://") || isLoopback(r.Host) {
		return &h.cookie.secure
	}
	return &h.cookie.plain
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Removing the module's cookies from requests, so that they never reach
// what follows the gate (a file server, an upstream app, handle_errors):
// the session holds the user's tokens.

// stripMatching removes from the request every cookie whose name match
// accepts (the module's session, its chunks, sign-in transaction cookies),
// so they are never forwarded upstream. Other cookies are kept
// byte-for-byte and in order; a Cookie line with nothing left is dropped,
// and the header is deleted when no line is left.
//
// A part without '=' counts as a cookie named by the whole part: some
// servers parse it that way, so it is stripped if match accepts that.
//
// It does not allocate when no cookie matches. The header's slice is
// replaced, not modified, since it may be shared with a copy of the header.
// buf is as for cookieScan.strip.
func stripMatching(h http.Header, match func(string) bool, buf *[1]string) {
	var sc cookieScan
	if kept, changed := sc.strip(h["Cookie"], match, buf); changed {
		setCookieLines(h, kept)
	}
}

// setCookieLines replaces the request's Cookie lines, deleting the header
// when none is left.
func setCookieLines(h http.Header, lines []string) {
	if len(lines) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = lines
}

// cookieScan is one pass over a request's Cookie lines that finds what to
// strip and, on the way, the first cookie named want (when want is set),
// which is what readCookie would find: the gate reads the session cookie
// and strips the module's cookies in a single pass. (match is a parameter,
// not a field: the first value found goes on to the session cache, and a
// field would take the match function to the heap with it.)
type cookieScan struct {
	want  string
	first string // the first value of want, when found
	found bool
}

// strip returns the lines without the cookies whose name match accepts,
// and whether any was removed (lines itself is returned when none was).
// Each line is scanned once when what is kept is a substring of it.
//
// buf, when not nil, holds the result's only line when there is one line
// (as HTTP/1.1 requests have, and HTTP/2 ones once net/http has joined
// them), saving the slice's allocation on every signed-in request; it must
// live as long as the request and must not be handed out twice.
func (sc *cookieScan) strip(lines []string, match func(string) bool, buf *[1]string) ([]string, bool) {
	for i, line := range lines {
		stripped, changed := sc.line(line, match)
		if !changed {
			continue
		}
		var kept []string
		if len(lines) == 1 && buf != nil {
			kept = buf[:0]
		} else {
			kept = make([]string, 0, len(lines))
			kept = append(kept, lines[:i]...)
		}
		if stripped != "" {
			kept = append(kept, stripped)
		}
		for _, line := range lines[i+1:] {
			if s, changed := sc.line(line, match); !changed {
				kept = append(kept, line)
			} else if s != "" {
				kept = append(kept, s)
			}
		}
		return kept, true
	}
	return lines, false
}

// ownsCookie reports whether the cookie named n is one of the module's
// cookies of the given base name: the session itself, one of its chunks
// (base.N) or a sign-in attempt (base-signin-...). An application's own
// cookie that merely starts the same way (logto_theme) is not.
func ownsCookie(n, base string) bool {
	if !strings.HasPrefix(n, base) {
		return false
	}
	rest := n[len(base):]
	return rest == "" || rest[0] == '.' || strings.HasPrefix(rest, "-signin-")
}

// line returns line without the cookies whose name match accepts, the
// others joined by "; ", and whether any was removed (line itself is
// returned when none was).
//
// One pass finds what is stripped and the span of what is kept. A browser
// separates cookies with exactly "; ", and the module's cookies usually
// sit at one end of the line (the session is set last), so what is kept is
// then that span, a substring: no allocation, and no copy of a line that
// holds a kilobyte of session. Only otherwise (cookies of ours between
// others, odd spacing, empty parts) does joinKept build a new string.
func (sc *cookieScan) line(line string, match func(string) bool) (string, bool) {
	changed := false
	start, end := -1, -1 // the span from the first kept part to the last
	tidy := true         // kept parts in the span are separated by exactly "; "
	for off := 0; off < len(line); {
		partEnd := strings.IndexByte(line[off:], ';')
		if partEnd < 0 {
			partEnd = len(line)
		} else {
			partEnd += off
		}
		s, e := off, partEnd
		off = partEnd + 1
		for s < e && line[s] <= ' ' {
			s++
		}
		for e > s && line[e-1] <= ' ' {
			e--
		}
		if s == e {
			continue // empty parts are dropped; one inside the span untidies it
		}
		n, v, eq := parseCookiePair(line[s:e])
		if eq && !sc.found && n == sc.want && sc.want != "" {
			sc.first, sc.found = v, true
		}
		if match(n) {
			changed = true
			continue
		}
		if start < 0 {
			start = s
		} else if line[end:s] != "; " {
			tidy = false // a stripped or empty part, or other spacing, between
		}
		end = e
	}
	switch {
	case !changed:
		return line, false
	case start < 0:
		return "", true
	case tidy:
		return line[start:end], true
	}
	return joinKept(line, match), true
}

// joinKept builds cookieScan.line's result when it is not a substring of the
// line. The first pass measures what is kept, so the only allocation is
// the size of the result, not of the line.
func joinKept(line string, match func(string) bool) string {
	size, kept := 0, 0
	for rest := line; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, ";")
		if part = trimCookieSpace(part); part == "" {
			continue
		}
		if n, _, _ := parseCookiePair(part); !match(n) {
			size += len(part)
			kept++
		}
	}
	var b strings.Builder
	b.Grow(size + 2*max(kept-1, 0))
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = trimCookieSpace(part)
		if part == "" {
			continue
		}
		if n, _, _ := parseCookiePair(part); match(n) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	return b.String()
}
