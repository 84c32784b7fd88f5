package e2e

// The session's idle timeout and absolute lifetime, enforced by Caddy on
// the cookie whatever the browser keeps.

import (
	"net/http"
	"testing"
	"time"
)

// startTimeoutSite runs a gated site with the given logto options against
// the shared IdP.
func startTimeoutSite(t *testing.T, opts string) string {
	t.Helper()
	requireStack(t)
	port, siteURL, a := localSite(t, env.idp)
	runCaddy(t, "timeouts", port, caddyGlobals(t.TempDir(), "")+gatedCaddyfile(opts), caddyVars(env.idp, a, "SITE_ADDRESS", siteURL))
	return siteURL
}

// TestIdleTimeout: with idle_timeout 3s a session used every second lives
// on past the timeout, and one left alone for 4 s is signed out, also when
// its last cookie is presented again (the cookie outlives the idle timeout,
// so the server must refuse it).
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	siteURL := startTimeoutSite(t, "\t\tidle_timeout 3s")
	v := newVisitor(t)
	signInAs(t, v, siteURL, env.idp.base, "/", "alice")
	start := time.Now()
	for time.Since(start) < 6*time.Second {
		time.Sleep(time.Second)
		if r := v.fetch(siteURL + "/"); r.StatusCode != http.StatusOK {
			t.Fatalf("used every second, at %v: %s, want 200", time.Since(start).Round(100*time.Millisecond), r.Status)
		}
	}
	last := sessionCookieHeader(t, v)
	time.Sleep(4 * time.Second)
	if r := requestWithCookie(t, http.MethodGet, siteURL+"/", last); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("unused for 4 s, the last cookie: %s, want 401", r.Status)
	}
	if r := v.navigate(siteURL + "/"); r.StatusCode != http.StatusFound {
		t.Errorf("unused for 4 s, navigation: %s, want 302 to sign in", r.Status)
	}
}

// TestSessionLifetime: with session_lifetime 4s a session ends 4 s after
// sign-in however busy it is, and its cookie presented again afterwards is
// refused (a browser would have dropped it; an attacker who copied it would
// not).
func TestSessionLifetime(t *testing.T) {
	t.Parallel()
	siteURL := startTimeoutSite(t, "\t\tsession_lifetime 4s")
	v := newVisitor(t)
	signInAs(t, v, siteURL, env.idp.base, "/", "alice")
	signedIn := time.Now()
	cookie := sessionCookieHeader(t, v)
	var endedAt time.Duration
	for time.Since(signedIn) < 7*time.Second {
		r := requestWithCookie(t, http.MethodGet, siteURL+"/", cookie)
		at := time.Since(signedIn)
		if r.StatusCode == http.StatusUnauthorized {
			endedAt = at
			break
		}
		if r.StatusCode != http.StatusOK {
			t.Fatalf("at %v: %s, want 200 or 401", at, r.Status)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("session_lifetime 4s: signed out %v after sign-in", endedAt.Round(100*time.Millisecond))
	// Lifetimes are kept in whole seconds, so the end falls within a
	// second before the configured lifetime.
	if endedAt < 3*time.Second || endedAt > 5*time.Second {
		t.Errorf("session ended %v after sign-in (0 = never within 7 s), want about 4 s", endedAt)
	}
}
