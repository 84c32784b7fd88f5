package logto

import (
	"bytes"
	"encoding/json"
	"strings"
)

// sealAttempt seals a for its cookie, keeping it to one cookie when the
// return URL is what makes it too large. An attempt carries a return URL of
// up to maxReturnURL bytes on top of what the sign-in asks for and the
// request's sign-in parameters, which together can exceed one cookie; a
// chunked attempt costs several cookies per tab on every request for an
// hour. So when the sealed attempt would not fit, the return URL falls back
// to its path (query and fragment dropped), and then to "/": the sign-in
// still completes, landing on a page of the site rather than the exact URL.
// If even that does not fit (a very long Host, huge scope lists), the
// attempt is written chunked, and expireAttempt clears the chunks.
func (h *Handler) sealAttempt(a *attempt, name string, o CookieOptions) string {
	var sealed string
	for _, ret := range returnFallbacks(a.Return) {
		a.Return = ret
		sealed = h.client.attempts.Seal(attemptAAD, marshalAttempt(a))
		if fitsOneCookie(name, sealed, o) {
			break
		}
	}
	return sealed
}

// fitsOneCookie reports whether writeCookie would write value as a single
// cookie, without chunks.
func fitsOneCookie(name, value string, o CookieOptions) bool {
	_, looksChunked := chunkCount(value)
	return len(value) <= chunkSize(name, o) && !looksChunked
}

// returnFallbacks lists ret, then shorter forms of it, ending with "/".
func returnFallbacks(ret string) []string {
	out := []string{ret}
	path, _, _ := strings.Cut(ret, "?")
	path, _, _ = strings.Cut(path, "#")
	if path != ret && path != "" {
		out = append(out, path)
	}
	if path != "/" {
		out = append(out, "/")
	}
	return out
}

// marshalAttempt encodes a without HTML escaping: a return URL's '&', '<'
// and '>' would otherwise take six bytes each (\u0026), up to six times
// the URL's length.
func marshalAttempt(a *attempt) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(a) // an attempt always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
