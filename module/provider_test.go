package logto

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
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

// cachedUser is a decoded session of id at generation gen, last seen at
// seen, with its own ID token.
func cachedUser(id string, gen int, seen int64, idToken string) *user {
	return &user{s: session{ID: id, Gen: gen, Seen: seen, IDToken: idToken}}
}

// TestUserCacheKeepsNewestPerSession: the decoded-session cache keeps
// one cookie value per session, its newest; a value a newer state
// replaced stays supersededGrace (a request in flight still carries it),
// then goes, and its ID token is handed back to be forgotten unless the
// newer state carries the same one (an idle-tracking re-seal).
func TestUserCacheKeepsNewestPerSession(t *testing.T) {
	grace := int64(supersededGrace / time.Second)
	uc := newUserCache(100)
	if got := uc.put("c1", cachedUser("s", 1, 0, "t1"), 0); got != "" {
		t.Fatalf("first put superseded %q", got)
	}
	if got := uc.put("c1'", cachedUser("s", 1, 5, "t1"), 5); got != "" {
		t.Errorf("a re-seal with the same ID token superseded %q", got)
	}
	if got := uc.put("c2", cachedUser("s", 2, 5, "t2"), 6); got != "t1" {
		t.Errorf("a refresh superseded %q, want t1", got)
	}
	// An old cookie seen after the newest (dropped earlier, decoded again).
	if got := uc.put("c0", cachedUser("s", 0, 0, "t0"), 7); got != "t0" {
		t.Errorf("an older state put after the newest superseded %q, want t0", got)
	}
	for _, v := range []string{"c1", "c1'", "c2", "c0"} {
		if uc.get(v) == nil {
			t.Errorf("%s gone within the grace", v)
		}
	}
	uc.put("other", cachedUser("o", 1, 0, "x"), 7+grace)
	if uc.get("c1") != nil || uc.get("c1'") != nil || uc.get("c0") != nil {
		t.Error("superseded values still cached after the grace")
	}
	if uc.get("c2") == nil || uc.len() != 2 {
		t.Errorf("cache holds %d values; want the newest of each session", uc.len())
	}
	if len(uc.retired) != 0 {
		t.Errorf("%d retired values still queued", len(uc.retired))
	}

	uc.forgetSession("s")
	if uc.get("c2") != nil || uc.newest["s"] != "" {
		t.Error("forgetSession left the session cached")
	}
	tokens := uc.sweep(100, func(id string) bool { return false })
	if uc.len() != 0 || len(uc.newest) != 0 || !slices.Equal(tokens, []string{"x"}) {
		t.Errorf("sweep of idle sessions left %d values, returned %v", uc.len(), tokens)
	}
}

// TestUserCacheBounded: past max distinct sessions the cache drops some,
// and its index of newest values never points at a dropped one.
func TestUserCacheBounded(t *testing.T) {
	uc := newUserCache(100)
	for i := range 1000 {
		uc.put(fmt.Sprint("c", i), cachedUser(fmt.Sprint("s", i), 1, 0, ""), 0)
	}
	if uc.len() > 100 {
		t.Errorf("%d values cached, max 100", uc.len())
	}
	for id, v := range uc.newest {
		if uc.m[v] == nil || uc.m[v].s.ID != id {
			t.Fatalf("newest[%s] = %s, not cached", id, v)
		}
	}
	if len(uc.newest) != uc.len() {
		t.Errorf("%d sessions indexed for %d values", len(uc.newest), uc.len())
	}
}

// TestMemoryFollowsLiveSessions: a soak test against a real Logto saw
// each instance's memory grow by about 9 KB a refresh (every refresh's
// new cookie value got a cache entry, and the one it replaced stayed).
// Users sign in and refresh round after round, each also sending its
// pre-refresh cookie once more (a request in flight): every request
// passes, and what the instance keeps stays one entry per session, not
// one per refresh. Sessions no longer used are let go.
func TestMemoryFollowsLiveSessions(t *testing.T) {
	const users, rounds = 20, 8
	s := newSoak(t, users, 20*time.Second, nil)
	c := s.hx.h.client
	for range rounds {
		s.round(20*time.Second, true)
	}
	s.hx.clock.Advance(supersededGrace)
	c.sweep() // drops what the last round retired
	if n := c.users.len(); n != users {
		t.Errorf("%d decoded sessions cached after %d refreshes of %d users, want %d", n, rounds, users, users)
	}
	if n := len(c.verified.m); n != users {
		t.Errorf("%d verified ID tokens kept, want %d (the current one of each session)", n, users)
	}
	if n := len(c.live.m); n != users {
		t.Errorf("%d live sessions, want %d", n, users)
	}

	// A pre-refresh cookie past the grace still works: decrypted again
	// (once) and answered with the session's newest state.
	old := s.cookies[0]
	s.round(20*time.Second, false)
	s.hx.clock.Advance(supersededGrace)
	c.sweep()
	opens := sessionOpens.Load()
	if !s.request(0, old) {
		t.Fatal("a pre-refresh cookie past the grace was refused")
	}
	if n := sessionOpens.Load() - opens; n != 1 {
		t.Errorf("%d decryptions for a pre-refresh cookie, want 1", n)
	}

	s.hx.clock.Advance(liveIdle + time.Second)
	c.sweep()
	if c.users.len() != 0 || len(c.live.m) != 0 || len(c.verified.m) != 0 {
		t.Errorf("after every session went idle: %d cached, %d live, %d verified; want none",
			c.users.len(), len(c.live.m), len(c.verified.m))
	}
	if !s.request(1, "") {
		t.Error("an idle session's cookie was refused after the sweep")
	}
}

// TestSessionCacheMissCost: with more sessions than the decoded-session
// cache holds, a request whose cookie is not cached costs one decryption
// and one lookup of its ID token among those verified, never a signature
// check (the instance verified them before), and a cached one costs none.
func TestSessionCacheMissCost(t *testing.T) {
	hx := newHarness(t, nil, nil)
	hx.startSignIn(newBrowser(), "/") // discovery
	cookies := mintSessions(t, hx, 60, 60, hx.clock.Now().Add(time.Hour))
	c := hx.h.client
	c.users = newUserCache(20)
	var misses, hits int
	for round := range 3 {
		for i, v := range cookies {
			cached := c.users.get(v) != nil
			opens, lookups, sigs := sessionOpens.Load(), storedChecks.lookups.Load(), storedChecks.signatures.Load()
			res := hx.serve(http.MethodGet, "/", nil, fetchAPI(), withHeader("Cookie", sessionCookie+"="+v))
			mustPass(t, res, fmt.Sprintf("user-m%d", i))
			dOpens, dLookups, dSigs := sessionOpens.Load()-opens, storedChecks.lookups.Load()-lookups, storedChecks.signatures.Load()-sigs
			want := int64(1)
			if cached {
				want, hits = 0, hits+1
			} else {
				misses++
			}
			if dOpens != want || dLookups != want || dSigs != 0 {
				t.Fatalf("round %d, session %d (cached %v): %d decryptions, %d verified-set lookups, %d signature checks; want %d, %d, 0",
					round, i, cached, dOpens, dLookups, dSigs, want, want)
			}
		}
	}
	if c.users.len() > 20 || misses == 0 || hits == 0 {
		t.Errorf("%d cached (max 20), %d misses, %d hits", c.users.len(), misses, hits)
	}
	t.Logf("%d misses (one decryption and one lookup each), %d hits, no signature check", misses, hits)
}
