package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestSigningAlgorithms: new Logto tenants sign ID tokens with ES384, and
// tenants older than 1.0 with RS256; P-256 and P-521 keys give ES256 and
// ES512. Each must sign in, and the key rotation of the tenant (a new kid)
// must be picked up without a restart.
func TestSigningAlgorithms(t *testing.T) {
	t.Parallel()
	requireStack(t)
	for _, alg := range []string{"RS256", "ES256", "ES512"} {
		t.Run(alg, func(t *testing.T) {
			idp := startTestIdP(t, map[string]string{"DEVIDP_ALG": alg})
			s := staticSite(t, idp, "")
			v := newVisitor(t)
			v.session(s, "alice")
			if r := v.fetch(s.URL + "/logto/user"); r.StatusCode != http.StatusOK {
				t.Fatalf("/logto/user after an %s sign-in: %s", alg, r.Status)
			}

			// Logto rotates its key: the next sign-in's ID token has a kid
			// the module has not seen.
			idp.admin(t, http.MethodPost, "/__dev/rotate-keys?drop_old=1", nil, nil)
			w := newVisitor(t)
			w.session(s, "bob")
			r := w.fetch(s.URL + "/logto/user")
			var claims map[string]any
			if r.StatusCode != http.StatusOK || json.Unmarshal([]byte(r.body), &claims) != nil {
				t.Fatalf("/logto/user after the key rotation: %s\n%s", r.Status, tail(r.body, 300))
			}
			if claims["username"] != "bob" {
				t.Errorf("signed in as %v, want bob", claims["username"])
			}
		})
	}
}
