package logto

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestCallbackErrorLogsLogtosWords: when Logto sends the browser back with
// an error, the log line carries its error and error_description. Both
// come from the query string, which anyone can write: a description with
// line breaks and a megabyte of text must not forge log lines or flood the
// log.
func TestCallbackErrorLogsLogtosWords(t *testing.T) {
	hx := newHarness(t, nil, nil)
	for _, tc := range []struct{ name, desc, want string }{
		{"Logto's words", "resource indicator is missing, or unknown", `"error_description":"resource indicator is missing, or unknown"`},
		{"forged log line", "x\n{\"level\":\"error\",\"msg\":\"forged\"}", `"error_description":"x {\"level\":`},
		{"overlong", strings.Repeat("a", 1<<20), `"error_description":"` + strings.Repeat("a", 200) + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser()
			auth := hx.startSignIn(b, "/")
			q := url.Values{"state": {auth.Query().Get("state")}, "error": {"invalid_target\n"}, "error_description": {tc.desc}}
			mark := len(capturedLogs.String())
			res := hx.serve(http.MethodGet, "/logto/sign-in-callback?"+q.Encode(), b, navigation())
			res.mustHandlerError(t, http.StatusUnauthorized)
			logs := capturedLogs.String()[mark:]
			if !strings.Contains(logs, `"error":"invalid_target"`) || !strings.Contains(logs, tc.want) {
				t.Errorf("log lacks Logto's error or %s:\n%.600s", tc.want, logs)
			}
			if strings.Count(logs, "\n") != 1 || strings.Contains(logs, strings.Repeat("a", 201)) {
				t.Errorf("one callback error wrote %d log lines / %d bytes:\n%.600s", strings.Count(logs, "\n"), len(logs), logs)
			}
		})
	}
}

// FuzzSanitizeText: whatever Logto or a stranger puts in a description,
// the log gets at most 200 bytes and no control character.
func FuzzSanitizeText(f *testing.F) {
	f.Add("resource indicator is missing, or unknown")
	f.Add("a\nb\r\x00\x7f")
	f.Fuzz(func(t *testing.T, s string) {
		out := sanitizeText(s)
		if len(out) > 200 {
			t.Fatalf("%d bytes", len(out))
		}
		for i := 0; i < len(out); i++ {
			if out[i] < 0x20 || out[i] == 0x7f {
				t.Fatalf("control byte %#x in %q", out[i], out)
			}
		}
	})
}
