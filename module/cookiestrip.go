package logto

import (
	"net/http"
	"strings"
)

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
