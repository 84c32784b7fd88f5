package logto

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
)

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
