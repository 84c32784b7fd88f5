package logto

import "fmt"

// validResource accepts what Logto accepts as an API resource indicator in
// resources and token_resource: an absolute URI. Unlike bearer's, the word
// "organization" is not one, and placeholders are not expanded in these
// options, so "{env.API}" would reach Logto as it is written.
func validResource(s string) bool {
	return s != organizationIndicator && validIndicator(s)
}

// errResource says why a resource indicator cannot be used.
func errResource(opt, value string) error {
	return fmt.Errorf("logto: %s: %q is not an API resource indicator (an absolute URI such as https://api.example.com)", opt, value)
}

// checkResources rejects resource indicators Logto would refuse. Every
// sign-in of the application asks for the resources of all its blocks, so
// one bad value would make Logto answer invalid_target to every sign-in,
// long after startup. Called from Validate, so JSON configs get it too.
func (h *Handler) checkResources() error {
	if h.TokenResource != "" && !validResource(h.TokenResource) {
		return errResource("token_resource", h.TokenResource)
	}
	for _, r := range h.Resources {
		if !validResource(r) {
			return errResource("resources", r)
		}
	}
	return nil
}
