package e2e

// The dev IdP (examples/devidp/server.js, a Logto stand-in): starting one,
// and its /__dev/ test hooks for registering clients, looking up users and
// reading what it counted and received.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// devIdP is one running examples/devidp/server.js.
type devIdP struct {
	base string // DEVIDP_BASE: the issuer is base + "/oidc"
	port int    // where it listens (differs from base's port behind a proxy)
	p    *proc
}

// startIdP starts the dev IdP on a free port and waits for its discovery
// document. node-oidc-provider has been seen to hang at start-up about once
// in ten starts, so a start that does not answer in 30 s is retried once.
// extra may set DEVIDP_BASE (to put a proxy in front) and TTLs.
func startIdP(extra map[string]string) (*devIdP, error) {
	var lastErr error
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		over := map[string]string{
			"DEVIDP_PORT": strconv.Itoa(port),
			"DEVIDP_BASE": fmt.Sprintf("http://localhost:%d", port),
		}
		for k, v := range extra {
			over[k] = v
		}
		p, err := startProc(env.root, environ(over), "node", "examples/devidp/server.js")
		if err != nil {
			return nil, err
		}
		idp := &devIdP{base: over["DEVIDP_BASE"], port: port, p: p}
		if lastErr = idp.waitReady(30 * time.Second); lastErr == nil {
			return idp, nil
		}
		p.stop()
		fmt.Fprintf(os.Stderr, "e2e: dev IdP did not start (%v); retrying once\n", lastErr)
		lastErr = fmt.Errorf("%w\n--- devidp output ---\n%s", lastErr, p.out.String())
	}
	return nil, lastErr
}

func (d *devIdP) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	disco := fmt.Sprintf("http://127.0.0.1:%d/oidc/.well-known/openid-configuration", d.port)
	c := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		if d.p.exited() {
			return errors.New("devidp exited during start-up")
		}
		if resp, err := c.Get(disco); err == nil {
			var md struct {
				Issuer string `json:"issuer"`
			}
			err = json.NewDecoder(resp.Body).Decode(&md)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && md.Issuer == d.base+"/oidc" {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("devidp did not serve its discovery document within %v", timeout)
}

func (d *devIdP) stop() { d.p.stop() }

// startTestIdP starts an IdP of the test's own, for tests that inject
// failures, stop it, or need other settings.
func startTestIdP(t *testing.T, extra map[string]string) *devIdP {
	t.Helper()
	idp, err := startIdP(extra)
	if err != nil {
		t.Fatalf("dedicated dev IdP: %v", err)
	}
	t.Cleanup(func() {
		idp.stop()
		if t.Failed() {
			t.Logf("--- dedicated devidp output ---\n%s", tail(idp.p.out.String(), 4000))
		}
	})
	return idp
}

// admin calls a /__dev/ test hook directly (not through any proxy).
func (d *devIdP) admin(t testing.TB, method, path string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", d.port, path), rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("devidp %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("devidp %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("devidp %s %s: %v: %s", method, path, err, b)
		}
	}
}

type idpStats struct {
	AuthorizationCodeGrants int `json:"authorization_code_grants"`
	RefreshTokenGrants      int `json:"refresh_token_grants"`
	InvalidGrants           int `json:"invalid_grants"`
	Revocations             int `json:"revocations"`
	EndSessions             int `json:"end_sessions"`
}

func (d *devIdP) stats(t testing.TB) idpStats {
	var s idpStats
	d.admin(t, http.MethodGet, "/__dev/stats", nil, &s)
	return s
}

// authRequests are the authorization requests the IdP received for one
// client, oldest first.
func (d *devIdP) authRequests(t testing.TB, clientID string) []map[string]any {
	var all []struct {
		Params map[string]any `json:"params"`
	}
	d.admin(t, http.MethodGet, "/__dev/requests", nil, &all)
	var out []map[string]any
	for _, r := range all {
		if r.Params["client_id"] == clientID {
			out = append(out, r.Params)
		}
	}
	return out
}

type idpUser struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Name     string `json:"name"`
	Email    string `json:"email"`
}

// userID is the sub of a demo user.
func (d *devIdP) userID(t testing.TB, username string) string {
	t.Helper()
	var users []idpUser
	d.admin(t, http.MethodGet, "/__dev/users", nil, &users)
	for _, u := range users {
		if u.Username == username {
			return u.ID
		}
	}
	t.Fatalf("devidp has no user %q", username)
	return ""
}
