package logto

import (
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// privateIfCookie makes a response that sets a cookie (a new, refreshed,
// re-sealed or cleared session) uncacheable by shared caches: a CDN in front
// of Caddy must never hand one user's session cookie to another. The
// header is set now, for error responses written by handle_errors, and
// again when the response is written, since what follows (an upstream, a
// `header` directive) may set its own Cache-Control. Responses that set no
// cookie are left alone, and cost one map lookup.
func privateIfCookie(w http.ResponseWriter) http.ResponseWriter {
	if !markPrivate(w.Header()) {
		return w
	}
	return &privateWriter{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
}

// markPrivate forces Cache-Control private on a response that sets a
// cookie, and reports whether it did.
func markPrivate(h http.Header) bool {
	if len(h["Set-Cookie"]) == 0 {
		return false
	}
	forcePrivate(h)
	return true
}

// privateWriter forces Cache-Control: private when the header is written.
type privateWriter struct {
	*caddyhttp.ResponseWriterWrapper
	wrote bool
}

func (pw *privateWriter) WriteHeader(status int) {
	if !pw.wrote && status >= 200 {
		pw.wrote = true
		forcePrivate(pw.Header())
	}
	pw.ResponseWriterWrapper.WriteHeader(status)
}

func (pw *privateWriter) Write(b []byte) (int, error) {
	if !pw.wrote {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriterWrapper.Write(b)
}

func (pw *privateWriter) ReadFrom(r io.Reader) (int64, error) {
	if !pw.wrote {
		pw.WriteHeader(http.StatusOK)
	}
	return pw.ResponseWriterWrapper.ReadFrom(r)
}

// forcePrivate keeps what Cache-Control says for the browser (max-age,
// no-cache, ...) but takes away what lets a shared cache store it.
func forcePrivate(h http.Header) {
	if v := h["Cache-Control"]; len(v) == 1 && (v[0] == "no-store" || v[0] == "private") {
		return // already what the loop below would make of it
	}
	var keep []string
	private := false
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			d = strings.TrimSpace(d)
			name, _, _ := strings.Cut(strings.ToLower(d), "=")
			switch name {
			case "":
				continue
			case "public", "s-maxage", "proxy-revalidate":
				continue
			case "private", "no-store":
				private = true
			}
			keep = append(keep, d)
		}
	}
	if !private {
		keep = append([]string{"private"}, keep...)
	}
	h.Set("Cache-Control", strings.Join(keep, ", "))
}
