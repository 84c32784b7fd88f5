// Package e2e holds the end-to-end tests of caddy-logto: a real Caddy binary
// built with the module, the dev IdP from examples/devidp (a Logto stand-in
// on node-oidc-provider), and a real headless Chromium driven by chromedp.
//
//	go test ./examples/e2e/ -count=1 -v
//
// They need node (for the IdP) and /usr/bin/chromium. Without them the tests
// skip, unless CI=true, where they fail. Set E2E_SCREENSHOTS=1 to write what
// the browser sees to testdata/screenshots/.
package e2e
