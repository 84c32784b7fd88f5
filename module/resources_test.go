package logto

import (
	"strings"
	"testing"
)

// TestValidateRejectsBadResources: a JSON config (no Caddyfile parse) with
// a resource indicator Logto would refuse is rejected at load, naming the
// option and the value. Otherwise every sign-in of the application, which
// asks for the resources of all its blocks, would fail at Logto with
// invalid_target, long after the config loaded.
func TestValidateRejectsBadResources(t *testing.T) {
	for _, c := range []struct {
		name     string
		h        Handler
		opt, val string
	}{
		{"resource without scheme", Handler{Resources: []string{"https://api.example.com", "api.example.com"}}, "resources", "api.example.com"},
		{"resource placeholder", Handler{Resources: []string{"{env.API}"}}, "resources", "{env.API}"},
		{"resource with fragment", Handler{Resources: []string{"https://api.example.com/#x"}}, "resources", "https://api.example.com/#x"},
		{"resource organization", Handler{Resources: []string{"organization"}}, "resources", "organization"},
		{"token_resource not a URI", Handler{TokenResource: "api"}, "token_resource", "api"},
		{"token_resource organization", Handler{TokenResource: "organization"}, "token_resource", "organization"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := c.h
			h.CookieName, h.PathPrefix = "logto", "/logto"
			err := h.Validate()
			if err == nil || !strings.Contains(err.Error(), c.opt) || !strings.Contains(err.Error(), `"`+c.val+`"`) {
				t.Fatalf("Validate error = %v, want one naming %s and %q", err, c.opt, c.val)
			}
		})
	}
	ok := Handler{CookieName: "logto", PathPrefix: "/logto",
		Resources:     []string{"https://api.example.com", "urn:logto:resource:organizations"},
		TokenResource: "https://billing.example.com/v1"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate refused good resources: %v", err)
	}
}
