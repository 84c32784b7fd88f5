package logto

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestSessionWireRoundTrip: every session, whatever its tokens look like
// (canonical base64url or not, empty), comes back exactly; the ID token
// byte for byte, since its signature covers it.
func TestSessionWireRoundTrip(t *testing.T) {
	hx := newHarness(t, nil, nil)
	genuine := hx.idp.sign(hx.idp.idClaims("user-1", "n"))
	for _, s := range []session{
		{ID: randomString(16), IDToken: genuine, Refresh: randomString(32), Created: 1764400000123, Seen: 1764400000, Idle: 12, Expires: 1765600000, Gen: 7},
		{ID: "not base64!", IDToken: "a.b.c", Created: 1},
		{ID: "x", IDToken: genuine + "=", Refresh: "padded=="},
		{ID: "x", IDToken: strings.Replace(genuine, ".", "..", 1)},
		{ID: "AB", IDToken: "AB.AB.AB"}, // non-canonical trailing bits
		{ID: "x", IDToken: genuine, Scopes: []string{"email", "o:r", ""}, Resources: []string{"https://api.example.com"}, StepUp: true},
		{ID: "x", IDToken: genuine, Access: randomString(43), AccessExp: 1764403600},
		{ID: "x", IDToken: genuine, Access: "opaque, not base64", StepUp: true},
		{},
	} {
		got, err := decodeSession(encodeSession(s))
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Errorf("round trip of %+v: %+v, %v", s, got, err)
		}
	}
}

// TestOldSessionFormatMeansSignedOut: a cookie of the previous format (JSON,
// still sealed with a key this instance holds) is "signed out", not a 500.
func TestOldSessionFormatMeansSignedOut(t *testing.T) {
	hx := newHarness(t, nil, nil)
	now := hx.clock.Now()
	old, _ := json.Marshal(map[string]any{
		"i": randomString(16), "t": hx.idp.sign(hx.idp.idClaims("user-1", "")), "r": randomString(32),
		"c": now.UnixMilli(), "s": now.Unix(), "e": now.Unix() + 3600,
	})
	b := newBrowser()
	b.set(sessionCookie, hx.h.client.sessions.Seal(sessionAAD, old))
	hx.mustBeSignedOut(t, b)
	if res := hx.serve(http.MethodGet, "/logto/user", b); res.status() != http.StatusUnauthorized {
		t.Errorf("/logto/user: %d", res.status())
	}
}
