// Package logto is a Caddy HTTP handler that requires a Logto sign-in
// before the handlers that follow it run. It runs the whole OpenID Connect
// flow itself (sign-in, callback, sign-out, refresh, API-resource and
// organization tokens) and keeps the session in encrypted cookies.
package logto

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler requires a signed-in Logto user for the requests it matches and
// serves the sign-in flow endpoints under PathPrefix. Anonymous browser
// navigations are sent to Logto and come back to the page they asked for;
// other anonymous requests get 401. The signed-in user's identity is
// available to later handlers as placeholders ({http.auth.user.id} and
// friends).
type Handler struct {
	// The Logto endpoint, e.g. https://your-tenant.logto.app. The issuer is
	// this URL followed by /oidc. Required.
	Endpoint string `json:"endpoint,omitempty"`

	// The App ID of a "Traditional web" application in Logto Console.
	// Required. Placeholders such as {env.LOGTO_APP_ID} are expanded at
	// provision time.
	AppID string `json:"app_id,omitempty"`

	// The App Secret of that application. Required. Use a placeholder
	// ({env.LOGTO_APP_SECRET} or {file./path}) so the secret never sits in
	// the config; it is expanded at provision time only.
	AppSecret string `json:"app_secret,omitempty"`

	// Secrets from which the cookie encryption keys are derived. The first
	// one encrypts; all of them decrypt, so a secret can be rotated by
	// putting the new one first. Default: derived from app_secret, so every
	// instance with the same config shares the keys.
	CookieSecrets []string `json:"cookie_secrets,omitempty"`

	// Base name of the module's cookies. On HTTPS (and on localhost) the
	// session cookie is "__Host-<name>"; on plain HTTP it is "<name>".
	// Its chunks (<name>.1, ...) and sign-in attempts (<name>-signin-...)
	// follow it. All of them are removed from every request before it goes
	// on. Default: logto.
	CookieName string `json:"cookie_name,omitempty"`

	// Path under which the flow endpoints are served (sign-in, sign-up,
	// sign-in-callback, sign-out, user, backchannel-logout). Default: /logto.
	PathPrefix string `json:"path_prefix,omitempty"`

	// Which requests require a signed-in user: matcher sets, any of which
	// may match (the Caddyfile fills it from the directive's matcher).
	// Default: all. Requests that do not match are let through as in pass
	// mode: the user's identity is there if they are signed in, and the
	// module's cookies and client-sent identity headers are still removed,
	// so nothing upstream ever sees them.
	ProtectRaw caddyhttp.RawMatcherSets `json:"protect,omitempty" caddy:"namespace=http.matchers"`

	// Let requests without a signed-in user through instead of sending them
	// to sign in. Placeholders are then empty for anonymous requests, so a
	// page can show "Sign in" or "Signed in as ...". Default: false.
	Pass bool `json:"pass,omitempty"`

	// Scopes requested at sign-in in addition to the reserved
	// "openid offline_access profile", e.g. email, phone, roles,
	// custom_data, identities, urn:logto:scope:organizations,
	// urn:logto:scope:organization_roles, and API permissions such as
	// read:docs. Every sign-in of the application (same endpoint and
	// app_id) asks for the scopes and resources of all its handlers,
	// including what their rules and route tokens need, since Logto grants
	// nothing later that the sign-in did not ask for.
	Scopes []string `json:"scopes,omitempty"`

	// API resource indicators requested at sign-in, so their access tokens
	// can be obtained with the refresh token later (every handler's, as for
	// scopes).
	Resources []string `json:"resources,omitempty"`

	// The prompt sent to Logto. Default: consent, which Logto needs to issue
	// a refresh token.
	Prompt string `json:"prompt,omitempty"`

	// Logto's first screen: sign_in, register, identifier:sign_in,
	// identifier:register, single_sign_on or reset_password.
	FirstScreen string `json:"first_screen,omitempty"`

	// Identifiers the first screen offers (email, phone, username); sent as
	// Logto's "identifier" parameter.
	Identifiers []string `json:"identifiers,omitempty"`

	// Skip Logto's sign-in page and go straight to a connector, e.g.
	// social:kakao, social:google or sso:<connector id>.
	DirectSignIn string `json:"direct_sign_in,omitempty"`

	// Pre-fill the identifier on Logto's sign-in page.
	LoginHint string `json:"login_hint,omitempty"`

	// Languages for Logto's pages, e.g. ko-KR en.
	UILocales []string `json:"ui_locales,omitempty"`

	// Organization to sign in to (sent as organization_id at sign-in).
	SignInOrganization string `json:"organization_id,omitempty"`

	// Extra parameters added to the authorization request.
	ExtraParams map[string]string `json:"extra_params,omitempty"`

	// Where the user lands after signing out: a path on this site or an
	// absolute URL. It must be registered in Logto Console as a post
	// sign-out redirect URI (as an absolute URL). Default: /.
	PostSignOutRedirect string `json:"post_sign_out_redirect,omitempty"`

	// The absolute URL of this site (scheme and host), used to build the
	// redirect URIs when Caddy sits behind a proxy that terminates TLS.
	// Default: taken from each request.
	BaseURL string `json:"base_url,omitempty"`

	// How long a session lasts from sign-in, whatever the activity.
	// Default: 14d (Logto's refresh token lifetime).
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`

	// A session unused for this long ends. Default: 0 (no idle timeout).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// How long a user may stay on Logto's pages before the sign-in attempt
	// is started over. Default: 10m.
	SignInTimeout caddy.Duration `json:"sign_in_timeout,omitempty"`

	// Request headers set for the handlers that follow, e.g.
	// {"Logto-ID-Token": "{http.auth.logto.id_token}"}. Values may contain
	// placeholders. Whatever the client sent in these fields is removed
	// first, also for anonymous requests, under any name a CGI or FastCGI
	// backend reads as the same (case aside, "_" or "." for "-": X_User_Id
	// for X-User-Id), and so is a client's Logto-ID-Token.
	Headers map[string]string `json:"headers,omitempty"`

	// Obtain an access token for this API resource (one of resources,
	// added to them if missing) and expose it as
	// {http.auth.logto.access_token}. With organization set, the token is
	// scoped to that organization.
	TokenResource string `json:"token_resource,omitempty"`

	// The organization this route belongs to: an id, or a placeholder such
	// as {labels.2} or {http.request.header.X-Org}. Membership is checked
	// against the user's organizations; when token_resource is empty the
	// route's access token is the organization token.
	Organization string `json:"organization,omitempty"`

	// Rules a signed-in user must meet; all must hold. A user who fails one
	// gets 403.
	Require []Rule `json:"require,omitempty"`

	// API resource indicators whose Logto access tokens are accepted in
	// "Authorization: Bearer" (from single-page, mobile and
	// machine-to-machine apps). A request carrying one is judged on that
	// token alone: a JWT of type at+jwt signed by the tenant's keys, issuer
	// <endpoint>/oidc, audience one of these, not expired. The value
	// "organization" accepts organization tokens (audience
	// urn:logto:organization:<id>). A token for an API scoped to an
	// organization (an organization_id claim; its scope is what the
	// caller's roles in that organization grant) is accepted only when
	// organization is set, for that organization. Failures follow RFC
	// 6750 (401 invalid_token, 403 insufficient_scope), never a redirect
	// or a cookie. Default: none (bearer tokens are not looked at).
	Bearer []string `json:"bearer,omitempty"`

	// Accept only bearer tokens: no cookie sessions, no sign-in flow
	// endpoints for this block, and then app_id and app_secret are not
	// needed. Requests without a token get 401 with
	// "WWW-Authenticate: Bearer". Needs bearer. Default: false.
	BearerOnly bool `json:"bearer_only,omitempty"`

	// How long after its ID token expired a session is still served when
	// Logto cannot renew it (unreachable, failing, or in a cluster the
	// shared storage unreadable): meanwhile requests go on with what the
	// session holds. Past it, a request this block protects gets 503 with
	// Retry-After and a pass block lets it through as anonymous, until
	// Logto answers again; the cookie is kept either way, so the session
	// carries on without a new sign-in. The trade-off: a user revoked in
	// Logto keeps access for up to this long past their ID token while
	// Logto is down. 0 serves nothing past the ID token. Default: 5m.
	OutageGrace *caddy.Duration `json:"outage_grace,omitempty"`

	// How often the back-channel logout list in Caddy's storage is re-read,
	// so a logout received by another instance takes effect here.
	// Default: 10s.
	RevocationPoll caddy.Duration `json:"revocation_poll,omitempty"`

	protect  caddyhttp.MatcherSets
	client   *client
	logger   *zap.Logger
	cookie   cookieJarNames
	paths    flowPaths
	headerUp []headerField
	needs    *needs       // what this block's sign-in must ask for
	app      *application // the needs of every block of the application
	stepUp   bool         // a session lacking needs is sent to sign in again
	cleanup  []func()     // what Cleanup undoes of Provision

	outageGrace int64 // OutageGrace in seconds
}

// defaultOutageGrace is outage_grace when it is not set.
const defaultOutageGrace = 5 * time.Minute

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.logto",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision expands secrets, sets defaults and compiles rules. It never
// contacts Logto: discovery and keys are fetched on first use.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.logger == nil { // caddy logto check provisions with a logger of its own
		h.logger = ctx.Logger()
	}
	repl := caddy.NewReplacer()

	endpoint := strings.TrimRight(repl.ReplaceAll(h.Endpoint, ""), "/")
	appID := repl.ReplaceAll(h.AppID, "")
	appSecret := repl.ReplaceAll(h.AppSecret, "")
	if endpoint == "" {
		return errors.New("logto: endpoint is required")
	}
	if trimmed, ok := strings.CutSuffix(endpoint, "/oidc"); ok {
		// A common slip: the issuer given for the endpoint. Logto's
		// endpoint is the issuer without /oidc.
		h.logger.Warn("logto: endpoint should not end in /oidc (that is the issuer); using the endpoint without it",
			zap.String("endpoint", trimmed))
		endpoint = trimmed
	}
	if !validBaseURL(endpoint, true) {
		return fmt.Errorf("logto: endpoint %q is not an absolute http(s) URL such as https://your-tenant.logto.app", endpoint)
	}
	if err := h.provisionBearer(repl); err != nil {
		return err
	}
	if appID == "" && !h.BearerOnly {
		return errors.New("logto: app_id is required (is its environment variable set?)")
	}
	if appSecret == "" && !h.BearerOnly {
		return errors.New("logto: app_secret is required (is its environment variable set?)")
	}

	if h.CookieName == "" {
		h.CookieName = "logto"
	}
	if h.PathPrefix == "" {
		h.PathPrefix = "/logto"
	}
	h.PathPrefix = "/" + strings.Trim(h.PathPrefix, "/")
	if h.Prompt == "" {
		h.Prompt = "consent"
	}
	if h.PostSignOutRedirect == "" {
		h.PostSignOutRedirect = "/"
	}
	if h.SessionLifetime == 0 {
		h.SessionLifetime = caddy.Duration(14 * 24 * time.Hour)
	}
	if h.SignInTimeout == 0 {
		h.SignInTimeout = caddy.Duration(10 * time.Minute)
	}
	if h.RevocationPoll == 0 {
		h.RevocationPoll = caddy.Duration(10 * time.Second)
	}
	if h.OutageGrace == nil {
		// Long enough that a Logto restart or a network blip goes
		// unnoticed; short beside the hour an ID token lives anyway.
		grace := caddy.Duration(defaultOutageGrace)
		h.OutageGrace = &grace
	}
	h.outageGrace = int64(time.Duration(*h.OutageGrace) / time.Second)
	// Expanded here (not per request) so Validate checks the real values.
	h.BaseURL = strings.TrimRight(repl.ReplaceAll(h.BaseURL, ""), "/")
	h.PostSignOutRedirect = repl.ReplaceAll(h.PostSignOutRedirect, "")
	h.cookie = newCookieNames(h.CookieName)
	h.paths = newFlowPaths(h.PathPrefix)

	var secrets [][]byte
	for _, s := range h.CookieSecrets {
		s = repl.ReplaceAll(s, "")
		if s == "" {
			return errors.New("logto: cookie_secret is empty (is its environment variable set?)")
		}
		if len(s) < minCookieSecret {
			// HKDF does not stretch: a short secret is a guessable key,
			// recovered offline from a single cookie.
			return errShortCookieSecret(len(s))
		}
		secrets = append(secrets, []byte(s))
	}
	if len(secrets) == 0 {
		// Derived, not the secret itself: HKDF in NewCodec separates it
		// further per purpose.
		sum := sha256.Sum256([]byte("caddy-logto cookie secret from app_secret\x00" + appID + "\x00" + appSecret))
		secrets = [][]byte{sum[:]}
	}

	for name, value := range h.Headers {
		h.headerUp = append(h.headerUp, newHeaderField(name, value))
	}

	if err := h.compileRules(); err != nil {
		return err
	}
	if len(h.ProtectRaw) > 0 {
		mods, err := ctx.LoadModule(h, "ProtectRaw")
		if err != nil {
			return fmt.Errorf("logto: loading protect matchers: %v", err)
		}
		if err := h.protect.FromInterface(mods); err != nil {
			return fmt.Errorf("logto: protect matchers: %v", err)
		}
	}

	cfg := clientConfig{
		endpoint:  endpoint,
		appID:     appID,
		appSecret: appSecret,
		secrets:   secrets,
	}
	c, err := acquireClient(ctx, cfg, h.BearerOnly, time.Duration(h.RevocationPoll), h.logger)
	if err != nil {
		return err
	}
	h.client = c
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		h.logger.Warn("logto: the module's metrics are not in Caddy's registry", errField(err))
	}
	c.blocks.join(h)
	h.cleanup = append(h.cleanup, func() {
		c.blocks.leave(h)
		releaseClient(c)
	})

	h.needs = h.blockNeeds()
	// A pass block without rules uses what the session has; sending a
	// signed-in visitor of a public page through Logto again is not worth
	// an empty placeholder.
	h.stepUp = !h.needs.empty() && (!h.Pass || h.needsRequestAuth())
	var unregister func()
	h.app, unregister = registerNeeds(endpoint, appID, h.needs)
	h.cleanup = append(h.cleanup, unregister)
	return nil
}

// Validate checks the configuration for values that can never work.
func (h *Handler) Validate() error {
	if !validCookieNameOpt(h.CookieName) {
		return fmt.Errorf("logto: cookie_name %q must be letters, digits, - and _ (at most 64)", h.CookieName)
	}
	if h.Prompt != "" && !validConfigPrompt(h.Prompt) {
		return fmt.Errorf("logto: prompt %q is not made of consent, login, none, select_account", h.Prompt)
	}
	if h.PostSignOutRedirect != "" && !validLanding(h.PostSignOutRedirect) {
		return fmt.Errorf("logto: post_sign_out_redirect %q must be a path or an absolute URL", h.PostSignOutRedirect)
	}
	if h.BaseURL != "" && !validBaseURL(h.BaseURL, false) {
		return fmt.Errorf("logto: base_url %q must be a scheme and host such as https://example.com", h.BaseURL)
	}
	if strings.Trim(h.PathPrefix, "/") == "" {
		return fmt.Errorf("logto: path_prefix %q must be a path below the root, such as /logto", h.PathPrefix)
	}
	for k := range h.ExtraParams {
		if reservedParams[k] {
			return fmt.Errorf("logto: extra_param %q is set by the module itself", k)
		}
	}
	if time.Duration(h.IdleTimeout) < 0 || time.Duration(h.SessionLifetime) < 0 || time.Duration(h.SignInTimeout) < 0 ||
		h.OutageGrace != nil && *h.OutageGrace < 0 {
		return errors.New("logto: durations must not be negative")
	}
	return h.checkResources()
}

// Cleanup lets go of what Provision took: the block's place in its
// application and its share of the client, which ends with the last
// block (its logout list stops being followed). Provision cannot leave
// this to ctx.OnCancel: it gets a copy of the context, and what is
// registered on a copy is never run when the config is unloaded.
func (h *Handler) Cleanup() error {
	for _, f := range h.cleanup {
		f()
	}
	h.cleanup = nil
	return nil
}

// ServeHTTP serves the flow endpoints and gates everything else. A
// bearer_only block has no sign-in, so no endpoints either.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if ep := h.paths.match(r.URL.Path); ep != epNone && !h.BearerOnly {
		return h.serveEndpoint(ep, w, r)
	}
	return h.gate(w, r, next)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// minCookieSecret is the shortest cookie_secret accepted, in bytes.
const minCookieSecret = 32

func errShortCookieSecret(n int) error {
	return fmt.Errorf("logto: cookie_secret is %d bytes; it must be at least %d random bytes, e.g. the output of `openssl rand -base64 32`", n, minCookieSecret)
}

// reservedParams are authorization parameters the module sets itself; an
// extra_param must not override them (a plain PKCE method, a foreign
// redirect_uri or a fixed state would break or weaken every sign-in).
var reservedParams = map[string]bool{
	"client_id": true, "redirect_uri": true, "response_type": true, "scope": true,
	"state": true, "nonce": true, "code_challenge": true, "code_challenge_method": true,
	"resource": true, "prompt": true, "first_screen": true, "identifier": true,
	"direct_sign_in": true, "login_hint": true, "ui_locales": true, "organization_id": true,
	"interaction_mode": true, "response_mode": true, "request": true, "request_uri": true,
}

// validBaseURL accepts scheme://host[:port] (and, for the endpoint, a path:
// self-hosted Logto may live below one).
func validBaseURL(s string, pathOK bool) bool {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	return pathOK || u.Path == "" || u.Path == "/"
}

func validLanding(s string) bool {
	if strings.HasPrefix(s, "/") {
		return !strings.HasPrefix(s, "//")
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

func validConfigPrompt(s string) bool {
	for _, p := range strings.Fields(s) {
		switch p {
		case "consent", "login", "none", "select_account":
		default:
			return false
		}
	}
	return strings.TrimSpace(s) != ""
}

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
