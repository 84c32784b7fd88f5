package logto

import (
	"net/http"
	"strings"
	"testing"
)

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
