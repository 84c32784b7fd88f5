package logto

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterDirective("logto", parseCaddyfile)
	// Authentication runs before basic_auth and everything that serves,
	// so no "order" line is needed.
	httpcaddyfile.RegisterDirectiveOrder("logto", httpcaddyfile.Before, "basic_auth")
}

// parseCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	logto [<matcher>] {
//		endpoint       <url>
//		app_id         <id>
//		app_secret     <secret>
//		cookie_secret  <secret> [<older secret>...]
//		cookie_name    <name>
//		path_prefix    <path>
//		pass
//		scopes         <scope>...
//		resources      <indicator>...
//		prompt         <prompt>...
//		first_screen   <screen>
//		identifiers    <email|phone|username>...
//		direct_sign_in <social:target|sso:connector>
//		login_hint     <hint>
//		ui_locales     <locale>...
//		organization_id <id>
//		extra_param    <name> <value>
//		post_sign_out_redirect <path|url>
//		base_url       <scheme://host>
//		session_lifetime <duration>
//		idle_timeout   <duration>
//		sign_in_timeout <duration>
//		header         <field> <value>
//		token_resource <indicator>
//		organization   <id|placeholder>
//		require        role|scope|organization|organization_role <value>...
//		require        claim <name> <value>...
//		revocation_poll <duration>
//		outage_grace   <duration>
//		bearer         <resource indicator|organization>...
//		bearer_only
//	}
//
// The directive's matcher selects what is protected; the flow endpoints
// under path_prefix are served whatever the matcher, so sign-in works when
// only part of a site is protected, and the module's cookies are removed
// from every request. Placeholders are kept as written (the
// adapted JSON never holds an expanded secret) and expanded at provision.
func parseCaddyfile(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	h.Next() // the directive name
	userSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	var l Handler
	if err := l.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}

	// The matcher goes into the handler, not onto the route: the handler
	// must see every request of the site, to serve the flow endpoints and to
	// remove its cookies before anything is proxied, protected or not.
	if userSet != nil {
		l.ProtectRaw = caddyhttp.RawMatcherSets{userSet}
	}
	return h.NewRoute(nil, &l), nil
}

// UnmarshalCaddyfile reads the directive and its block (a matcher, if any,
// has been taken out already). Unknown or repeated options and missing
// arguments are errors naming the option and its line.
func (l *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	directiveLine := d.Line()
	if d.NextArg() {
		return d.Errf("logto: unexpected argument %q; options go in a block: logto { endpoint ... }", d.Val())
	}
	seen := map[string]bool{}
	var requireLines []int
	bearerOnlyLine := 0
	for d.NextBlock(0) {
		opt := d.Val()
		if !repeatable[opt] {
			if seen[opt] {
				return d.Errf("logto: option %q given twice", opt)
			}
			seen[opt] = true
		}
		args := d.RemainingArgs()
		need := func(n int) error {
			if len(args) != n {
				return d.Errf("logto: option %q takes %d argument(s), got %d", opt, n, len(args))
			}
			return nil
		}
		atLeast := func(n int) error {
			if len(args) < n {
				return d.Errf("logto: option %q needs at least %d argument(s)", opt, n)
			}
			return nil
		}
		duration := func(dst *caddy.Duration) error {
			if err := need(1); err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur < 0 {
				return d.Errf("logto: option %q: %q is not a duration (e.g. 30m, 12h, 14d)", opt, args[0])
			}
			*dst = caddy.Duration(dur)
			return nil
		}
		one := func(dst *string) error {
			if err := need(1); err != nil {
				return err
			}
			*dst = args[0]
			return nil
		}
		list := func(dst *[]string) error {
			if err := atLeast(1); err != nil {
				return err
			}
			*dst = append(*dst, args...)
			return nil
		}
		var err error
		switch opt {
		case "endpoint":
			if err = one(&l.Endpoint); err == nil && !hasPlaceholder(l.Endpoint) && !validBaseURL(l.Endpoint, true) {
				err = d.Errf("logto: option %q: %q is not an absolute http(s) URL such as https://your-tenant.logto.app", opt, l.Endpoint)
			}
		case "app_id":
			err = one(&l.AppID)
		case "app_secret":
			err = one(&l.AppSecret)
		case "cookie_secret":
			if err = list(&l.CookieSecrets); err == nil {
				for _, sec := range l.CookieSecrets {
					// Placeholders are checked when expanded, at provision.
					if !hasPlaceholder(sec) && len(sec) < minCookieSecret {
						err = d.Errf("logto: option %q: a secret of %d bytes is too short; use at least %d random bytes, e.g. the output of `openssl rand -base64 32`", opt, len(sec), minCookieSecret)
						break
					}
				}
			}
		case "cookie_name":
			if err = one(&l.CookieName); err == nil && !validCookieNameOpt(l.CookieName) {
				err = d.Errf("logto: option %q: %q is not a valid cookie name", opt, l.CookieName)
			}
		case "path_prefix":
			if err = one(&l.PathPrefix); err == nil && (!strings.HasPrefix(l.PathPrefix, "/") || strings.Trim(l.PathPrefix, "/") == "") {
				err = d.Errf("logto: option %q must be a path below the root, such as /logto or /app/auth", opt)
			}
		case "pass":
			if err = need(0); err == nil {
				l.Pass = true
			}
		case "scopes":
			err = list(&l.Scopes)
		case "resources":
			if err = list(&l.Resources); err == nil {
				for _, res := range args {
					if !validResource(res) {
						return d.Errf("logto: option %q: %q is not an API resource indicator (an absolute URI such as https://api.example.com; placeholders are not expanded here)", opt, res)
					}
				}
			}
		case "prompt":
			if err = atLeast(1); err == nil {
				l.Prompt = strings.Join(args, " ")
				if !validConfigPrompt(l.Prompt) {
					err = d.Errf("logto: option %q: %q is not made of consent, login, none, select_account", opt, l.Prompt)
				}
			}
		case "first_screen":
			if err = one(&l.FirstScreen); err == nil && !validFirstScreen(l.FirstScreen) {
				err = d.Errf("logto: option %q: %q is not one of sign_in, register, identifier:sign_in, identifier:register, single_sign_on, reset_password", opt, l.FirstScreen)
			}
		case "identifiers":
			if err = list(&l.Identifiers); err == nil && !validIdentifiers(strings.Join(l.Identifiers, " ")) {
				err = d.Errf("logto: option %q takes email, phone or username, got %q", opt, strings.Join(args, " "))
			}
		case "direct_sign_in":
			if err = one(&l.DirectSignIn); err == nil && !validDirectSignIn(l.DirectSignIn) {
				err = d.Errf("logto: option %q: %q is not like social:kakao or sso:<connector id>", opt, l.DirectSignIn)
			}
		case "login_hint":
			err = one(&l.LoginHint)
		case "ui_locales":
			err = list(&l.UILocales)
		case "organization_id":
			err = one(&l.SignInOrganization)
		case "extra_param":
			if err = need(2); err == nil {
				if l.ExtraParams == nil {
					l.ExtraParams = map[string]string{}
				}
				if _, dup := l.ExtraParams[args[0]]; dup {
					return d.Errf("logto: option %q: parameter %q given twice", opt, args[0])
				}
				if reservedParams[args[0]] {
					return d.Errf("logto: option %q: parameter %q is set by the module itself (use the option of that name, if any)", opt, args[0])
				}
				l.ExtraParams[args[0]] = args[1]
			}
		case "post_sign_out_redirect":
			if err = one(&l.PostSignOutRedirect); err == nil && !hasPlaceholder(l.PostSignOutRedirect) && !validLanding(l.PostSignOutRedirect) {
				err = d.Errf("logto: option %q: %q must be a path (/signed-out) or an absolute URL", opt, l.PostSignOutRedirect)
			}
		case "base_url":
			if err = one(&l.BaseURL); err == nil && !hasPlaceholder(l.BaseURL) && !validBaseURL(l.BaseURL, false) {
				err = d.Errf("logto: option %q: %q must be a scheme and host such as https://example.com", opt, l.BaseURL)
			}
		case "session_lifetime":
			err = duration(&l.SessionLifetime)
		case "idle_timeout":
			err = duration(&l.IdleTimeout)
		case "sign_in_timeout":
			err = duration(&l.SignInTimeout)
		case "revocation_poll":
			err = duration(&l.RevocationPoll)
		case "outage_grace":
			// A pointer: 0 (no grace) is not the default.
			var grace caddy.Duration
			if err = duration(&grace); err == nil {
				l.OutageGrace = &grace
			}
		case "header":
			if err = need(2); err == nil {
				if l.Headers == nil {
					l.Headers = map[string]string{}
				}
				field := http.CanonicalHeaderKey(args[0])
				if _, dup := l.Headers[field]; dup {
					return d.Errf("logto: option %q: field %q given twice", opt, args[0])
				}
				l.Headers[field] = args[1]
			}
		case "token_resource":
			if err = one(&l.TokenResource); err == nil && !validResource(l.TokenResource) {
				err = d.Errf("logto: option %q: %q is not an API resource indicator (an absolute URI such as https://api.example.com; placeholders are not expanded here)", opt, l.TokenResource)
			}
		case "organization":
			err = one(&l.Organization)
		case "require":
			requireLines = append(requireLines, d.Line())
			err = l.parseRequire(d, args)
		case "bearer":
			if err = list(&l.Bearer); err == nil {
				for i, ind := range args {
					if slices.Contains(args[:i], ind) {
						return d.Errf("logto: option %q: indicator %q given twice", opt, ind)
					}
					if !hasPlaceholder(ind) && !validIndicator(ind) {
						return d.Errf("logto: option %q: %q is not a resource indicator (an absolute URI such as https://api.example.com, or %q)", opt, ind, organizationIndicator)
					}
				}
			}
		case "bearer_only":
			if err = need(0); err == nil {
				l.BearerOnly = true
				bearerOnlyLine = d.Line()
			}
		default:
			return d.Errf("logto: unknown option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	if l.BearerOnly && len(l.Bearer) == 0 {
		return fmt.Errorf("logto: option \"bearer_only\" needs bearer <resource indicator>..., at %s:%d", d.File(), bearerOnlyLine)
	}
	for _, req := range []struct{ name, val string }{
		{"endpoint", l.Endpoint}, {"app_id", l.AppID}, {"app_secret", l.AppSecret},
	} {
		if req.val == "" && (req.name == "endpoint" || !l.BearerOnly) {
			return d.Errf("logto: option %q is required (in the logto block starting at line %d)", req.name, directiveLine)
		}
	}
	// Rules that depend on other options are checked here, so the error
	// names the line, rather than only at provision.
	for i, r := range l.Require {
		if err := l.checkRule(r); err != nil {
			return fmt.Errorf("%w, at %s:%d", err, d.File(), requireLines[i])
		}
	}
	return nil
}

// repeatable options may appear on several lines.
var repeatable = map[string]bool{
	"scopes": true, "resources": true, "ui_locales": true, "identifiers": true,
	"extra_param": true, "header": true, "require": true,
}

func (l *Handler) parseRequire(d *caddyfile.Dispenser, args []string) error {
	if len(args) < 1 {
		return d.Errf("logto: option \"require\" needs a kind: role, scope, organization, organization_role or claim")
	}
	r := Rule{Kind: args[0]}
	switch r.Kind {
	case "role", "scope", "organization_role":
		if len(args) < 2 {
			return d.Errf("logto: require %s needs at least one value", r.Kind)
		}
		r.Values = args[1:]
	case "organization":
		r.Values = args[1:]
	case "claim":
		if len(args) < 3 {
			return d.Errf("logto: require claim needs a claim name and at least one value")
		}
		r.Claim, r.Values = args[1], args[2:]
	default:
		return d.Errf("logto: require: unknown kind %q (want role, scope, organization, organization_role or claim)", r.Kind)
	}
	l.Require = append(l.Require, r)
	return nil
}

func validCookieNameOpt(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)

func hasPlaceholder(s string) bool { return strings.Contains(s, "{") }
