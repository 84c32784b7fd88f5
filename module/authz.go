package logto

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Rule is one authorization requirement. Values on one rule are
// alternatives (any may match); several rules must all hold.
type Rule struct {
	// What is checked:
	//   - "role": the user's global roles (the roles claim);
	//   - "scope": permissions in the route's access token (token_resource
	//     and/or organization);
	//   - "organization": membership in the listed organizations, or in the
	//     route's organization when no value is given;
	//   - "organization_role": a role in the route's organization
	//     (organization_roles entries "<organization id>:<role>");
	//   - "claim": the claim named by Claim has one of the values (for a
	//     list claim, contains one of them).
	Kind string `json:"kind"`

	// The claim name, for kind "claim".
	Claim string `json:"claim,omitempty"`

	// Accepted values; any one suffices.
	Values []string `json:"values,omitempty"`
}

// claimScopes says which scope makes Logto issue a claim a rule reads.
var claimScopes = map[string]string{
	"roles":              "roles",
	"organizations":      "urn:logto:scope:organizations",
	"organization_roles": "urn:logto:scope:organization_roles",
	"email":              "email",
	"email_verified":     "email",
	"phone_number":       "phone",
	"custom_data":        "custom_data",
	"identities":         "identities",
}

// organizationsResource must be requested at sign-in for organization
// tokens, as Logto's SDKs do.
const organizationsResource = "urn:logto:resource:organizations"

// compileRules checks the rules, and adds to the sign-in request the scopes
// and resources they and the route's token need, so a rule can be met.
func (h *Handler) compileRules() error {
	addScope := func(s string) {
		if !slices.Contains(h.Scopes, s) {
			h.Scopes = append(h.Scopes, s)
		}
	}
	addResource := func(s string) {
		if !slices.Contains(h.Resources, s) {
			h.Resources = append(h.Resources, s)
		}
	}
	if h.TokenResource != "" {
		addResource(h.TokenResource)
	}
	if h.Organization != "" {
		addScope("urn:logto:scope:organizations")
		addResource(organizationsResource)
	}
	for _, r := range h.Require {
		if err := h.checkRule(r); err != nil {
			return err
		}
		switch r.Kind {
		case "role":
			addScope("roles")
		case "scope":
			// Logto puts a permission in the token only if it was asked
			// for at sign-in.
			for _, v := range r.Values {
				addScope(v)
			}
		case "organization":
			addScope("urn:logto:scope:organizations")
		case "organization_role":
			addScope("urn:logto:scope:organizations")
			addScope("urn:logto:scope:organization_roles")
		case "claim":
			if s, ok := claimScopes[r.Claim]; ok {
				addScope(s)
			}
		}
	}
	return nil
}

// checkRule rejects a rule that can never be met with the block's options.
func (h *Handler) checkRule(r Rule) error {
	switch r.Kind {
	case "role", "claim":
	case "scope":
		// Browser users' permissions come from the route's token:
		// token_resource, organization, or (derived by provisionBearer)
		// the first bearer indicator, unless that is "organization",
		// which names no organization to ask a token for.
		apiBearer := len(h.Bearer) > 0 && h.Bearer[0] != organizationIndicator
		if h.TokenResource == "" && h.Organization == "" && !apiBearer && !h.BearerOnly {
			return fmt.Errorf("logto: require scope needs token_resource <indicator> or organization <id> (or bearer <indicator> with an API first, or bearer_only if only API clients come): permissions live in the route's access token, and without one no browser user could ever pass")
		}
	case "organization":
		if len(r.Values) == 0 && h.Organization == "" {
			return fmt.Errorf("logto: require organization without ids needs organization (the route's organization)")
		}
	case "organization_role":
		if h.Organization == "" {
			return fmt.Errorf("logto: require organization_role needs organization (the route's organization)")
		}
	default:
		return fmt.Errorf("logto: require: unknown kind %q (want role, scope, organization, organization_role or claim)", r.Kind)
	}
	if r.Kind == "claim" && r.Claim == "" {
		return fmt.Errorf("logto: require claim needs a claim name")
	}
	if len(r.Values) == 0 && r.Kind != "organization" {
		return fmt.Errorf("logto: require %s needs at least one value", r.Kind)
	}
	return nil
}

// needsRequestAuth reports whether requests need more than the session:
// rules, a route token or a route organization.
func (h *Handler) needsRequestAuth() bool {
	return len(h.Require) > 0 || h.TokenResource != "" || h.Organization != ""
}

// needsUserinfo reports whether some rule reads a claim Logto may leave out
// of ID tokens.
func (h *Handler) needsUserinfo() bool {
	for _, r := range h.Require {
		switch r.Kind {
		case "role", "organization", "organization_role", "claim":
			return true
		}
	}
	return h.Organization != ""
}

// requestAuth is what one request's authorization found, for placeholders.
type requestAuth struct {
	u     *user
	org   string
	token string
}

// authorize resolves the route's organization, obtains its access token and
// checks the rules. A signed-in user who fails gets 403, never a redirect
// (which would loop back here).
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, cs *cookieSet, u *user, cookies []string) (ra *requestAuth, err error) {
	ra = &requestAuth{u: u}
	c := h.client
	ctx := r.Context()
	orig := u
	// Whatever the outcome, a session a refresh changed (a rotated refresh
	// token) is written back; losing it would replay the old token later.
	defer func() {
		if u != orig && !errors.Is(err, errResponded) {
			h.writeSession(w, http.Header{"Cookie": cookies}, cs, u)
		}
	}()

	// claims reads a claim from the ID token, or from userinfo when the
	// tenant leaves it out of ID tokens.
	var info map[string]any
	var infoErr error
	claim := func(name string) any {
		if v, ok := u.claims[name]; ok {
			return v
		}
		if info == nil {
			if info, u, infoErr = c.userinfo(ctx, u); infoErr != nil {
				h.logger.Warn("cannot read userinfo for a rule", refusalFields(infoErr)...)
				info = map[string]any{}
			}
		}
		return info[name]
	}
	// deny is 403, unless the answer depended on userinfo Logto could not
	// give: then it is Logto's outage (502), not the user's fault.
	deny := func(reason string) error {
		switch {
		case errors.Is(infoErr, errSessionEnded):
			// Logto ended the session: sign in again, as for a route token.
			h.clearSession(w, http.Header{"Cookie": cookies}, cs)
			if err := h.signInFirst(w, r, cs, cookies); err != nil {
				return err
			}
			return errResponded
		case errors.Is(infoErr, errNoAccessToken):
			// The session can never read userinfo here: sign in again
			// (which replaces it) rather than 502 for its whole life.
			if err := h.signInFirst(w, r, cs, cookies); err != nil {
				return err
			}
			return errResponded
		case infoErr != nil:
			return caddyhttp.Error(http.StatusBadGateway, infoErr)
		}
		return h.forbidden(u, reason)
	}
	claimList := func(name string) []string {
		return stringsOf(claim(name))
	}

	if h.Organization != "" {
		ra.org = repl.ReplaceAll(h.Organization, "")
		if !validID(ra.org) {
			return nil, h.forbidden(u, "the route's organization id is empty or malformed")
		}
		// Membership first, so an organization id taken from the request
		// (a subdomain, a header) cannot make us ask Logto for a token of
		// an organization the user is not in.
		if !slices.Contains(claimList("organizations"), ra.org) {
			return nil, deny("not a member of the route's organization")
		}
	}

	var scopes []string
	if h.TokenResource != "" || h.Organization != "" {
		at, nu, err := c.accessTokenFor(ctx, u, tokenKey{resource: h.TokenResource, org: ra.org})
		switch {
		case errors.Is(err, errSessionEnded):
			h.clearSession(w, http.Header{"Cookie": cookies}, cs)
			if err := h.signInFirst(w, r, cs, cookies); err != nil {
				return nil, err
			}
			return nil, errResponded
		case errors.Is(err, errTokenDenied):
			h.logger.Warn("Logto refused a token for the route",
				append(refusalFields(err), zap.String("user_id", u.sub),
					zap.String("resource", h.TokenResource), zap.String("organization_id", ra.org))...)
			if h.stepUpForRefusal(r, u, err) {
				// The grant lacks the resource although the sign-in asked
				// for it (an API resource re-created in Console): a new
				// sign-in may get it.
				if err := h.stepUpFirst(w, r, cs, u, cookies, needs{resources: []string{h.routeResource()}}); err != nil {
					return nil, err
				}
				return nil, errResponded
			}
			return nil, h.forbidden(u, "Logto refused a token for the route")
		case errors.Is(err, errUnavailable) && !errors.As(err, new(*TokenError)):
			// Logto (or the storage a refresh must read) is down or
			// answering garbage, rather than refusing the app: the same
			// answer as a session past outage_grace, and the session is
			// kept for when it is back.
			h.logRouteTokenFailure(err)
			w.Header().Set("Retry-After", strconv.Itoa(int(refreshRetry/time.Second)))
			return nil, caddyhttp.Error(http.StatusServiceUnavailable, err)
		case err != nil:
			h.logRouteTokenFailure(err)
			return nil, caddyhttp.Error(http.StatusBadGateway, err)
		}
		u = nu
		ra.token, scopes = at.token, at.scopes
	}

	who := subject{claim: claim, orgs: func() []string { return claimList("organizations") }, scopes: scopes, org: ra.org}
	for _, rule := range h.Require {
		if !ruleMet(rule, who) {
			return nil, deny("require " + rule.Kind + " not met")
		}
	}
	ra.u = u
	return ra, nil
}

// logRouteTokenFailure logs why the route's token could not be had, once
// per failure: the requests answered from the back-off that follows it are
// logged at debug level, so an outage is not an error line per request.
func (h *Handler) logRouteTokenFailure(err error) {
	if errors.Is(err, errBackoff) {
		h.logger.Debug("cannot obtain the route's access token", refusalFields(err)...)
		return
	}
	h.logger.Error("cannot obtain the route's access token", refusalFields(err)...)
}

// subject is what require rules read, of a signed-in user or of an access
// token.
type subject struct {
	claim  func(name string) any // a claim; read lazily, it may cost a userinfo call
	orgs   func() []string       // the organizations it belongs to
	scopes []string              // the route token's permissions
	org    string                // the route's organization
}

// ruleMet reports whether one require rule holds for who. Sessions and
// access tokens are judged by this one function, so the two cannot drift.
func ruleMet(rule Rule, who subject) bool {
	switch rule.Kind {
	case "role":
		return intersects(stringsOf(who.claim("roles")), rule.Values)
	case "scope":
		return intersects(who.scopes, rule.Values)
	case "organization":
		if len(rule.Values) == 0 {
			return who.org != "" && slices.Contains(who.orgs(), who.org)
		}
		return intersects(who.orgs(), rule.Values)
	case "organization_role":
		for _, e := range stringsOf(who.claim("organization_roles")) {
			if org, role, _ := strings.Cut(e, ":"); org == who.org && slices.Contains(rule.Values, role) {
				return true
			}
		}
		return false
	case "claim":
		v := who.claim(rule.Claim)
		if list, isList := v.([]any); isList {
			return intersects(stringsOf(list), rule.Values)
		}
		return v != nil && slices.Contains(rule.Values, claimString(v))
	}
	return false
}

func (h *Handler) forbidden(u *user, reason string) error {
	h.logger.Info("signed-in user denied", zap.String("user_id", u.sub), zap.String("reason", reason))
	return caddyhttp.Error(http.StatusForbidden, errors.New("logto: "+reason))
}

func intersects(have, want []string) bool {
	for _, w := range want {
		if slices.Contains(have, w) {
			return true
		}
	}
	return false
}

// Logto grants nothing later that the sign-in did not ask for: a claim
// (organization_roles), a permission in an API token, a resource for the
// refresh grant. So every sign-in of an application asks for what all of
// that application's logto blocks need, whichever block starts it, and each
// session remembers what its sign-in asked for, so a route can tell a
// session that never asked for something (send it through sign-in once
// more) from a user who was refused it (403).

// needs are the capabilities a sign-in must ask for: scopes beyond the
// reserved ones, and resource indicators.
type needs struct {
	scopes    []string
	resources []string
}

func (n *needs) empty() bool { return len(n.scopes) == 0 && len(n.resources) == 0 }

// add merges o into n, keeping first-seen order.
func (n *needs) add(o *needs) {
	for _, s := range o.scopes {
		if !slices.Contains(n.scopes, s) {
			n.scopes = append(n.scopes, s)
		}
	}
	for _, r := range o.resources {
		if !slices.Contains(n.resources, r) {
			n.resources = append(n.resources, r)
		}
	}
}

// blockNeeds are what one block's options, rules and route token need (its
// Scopes and Resources after compileRules), without the reserved scopes,
// which every sign-in asks for anyway.
func (h *Handler) blockNeeds() *needs {
	n := &needs{}
	for _, s := range dedupe(h.Scopes) {
		if !slices.Contains(reservedScopes, s) {
			n.scopes = append(n.scopes, s)
		}
	}
	n.resources = dedupe(h.Resources)
	return n
}

// coveredBy reports whether u's sign-in asked for everything in n. It is on
// the hot path: map lookups, no allocation, no lock.
func (n *needs) coveredBy(u *user) bool {
	for _, s := range n.scopes {
		if _, ok := u.asked[askedKey{v: s}]; !ok {
			return false
		}
	}
	for _, r := range n.resources {
		if _, ok := u.asked[askedKey{resource: true, v: r}]; !ok {
			return false
		}
	}
	return true
}

// missingFrom is what u's sign-in did not ask for, for the answer and the
// log line.
func (n *needs) missingFrom(u *user) needs {
	var m needs
	for _, s := range n.scopes {
		if _, ok := u.asked[askedKey{v: s}]; !ok {
			m.scopes = append(m.scopes, s)
		}
	}
	for _, r := range n.resources {
		if _, ok := u.asked[askedKey{resource: true, v: r}]; !ok {
			m.resources = append(m.resources, r)
		}
	}
	return m
}

// askedKey is one scope or resource a session's sign-in asked for.
type askedKey struct {
	resource bool
	v        string
}

// askedSet indexes what a session's sign-in asked for, once per decoded
// session.
func askedSet(s *session) map[askedKey]struct{} {
	if len(s.Scopes) == 0 && len(s.Resources) == 0 {
		return nil
	}
	m := make(map[askedKey]struct{}, len(s.Scopes)+len(s.Resources))
	for _, v := range s.Scopes {
		m[askedKey{v: expandAsked(v)}] = struct{}{}
	}
	for _, v := range s.Resources {
		m[askedKey{resource: true, v: expandAsked(v)}] = struct{}{}
	}
	return m
}

// Logto's own URNs are long and common; the session cookie stores them
// abbreviated, since it is sent with every request.
const (
	urnScope    = "urn:logto:scope:"
	urnResource = "urn:logto:resource:"
	abbrScope   = "~s:"
	abbrRes     = "~r:"
)

func abbreviateAsked(in []string) []string {
	out := make([]string, len(in))
	for i, v := range in {
		switch {
		case strings.HasPrefix(v, urnScope):
			v = abbrScope + v[len(urnScope):]
		case strings.HasPrefix(v, urnResource):
			v = abbrRes + v[len(urnResource):]
		}
		out[i] = v
	}
	return out
}

func expandAsked(v string) string {
	switch {
	case strings.HasPrefix(v, abbrScope):
		return urnScope + v[len(abbrScope):]
	case strings.HasPrefix(v, abbrRes):
		return urnResource + v[len(abbrRes):]
	}
	return v
}

// application is the registry of what the blocks of one Logto application
// (endpoint and app_id) need. Blocks register at Provision and unregister
// at Cleanup; a config reload provisions the new blocks before it cleans
// up the old ones, so for that moment sign-ins ask for both, which is
// harmless (asking for more is never refused). Blocks that differ only in
// cookie_secret are still one application at Logto, and share the union.
type application struct {
	key   string
	mu    sync.Mutex
	next  uint64
	regs  []registration
	union atomic.Pointer[needs]
}

type registration struct {
	id uint64
	n  *needs
}

var (
	appsMu sync.Mutex
	apps   = map[string]*application{}
)

// registerNeeds adds a block's needs to its application and returns the
// application and the function that takes them out again.
func registerNeeds(endpoint, appID string, n *needs) (*application, func()) {
	key := endpoint + "\x00" + appID
	appsMu.Lock()
	a := apps[key]
	if a == nil {
		a = &application{key: key}
		a.union.Store(&needs{})
		apps[key] = a
	}
	a.mu.Lock()
	a.next++
	id := a.next
	a.regs = append(a.regs, registration{id: id, n: n})
	a.recompute()
	a.mu.Unlock()
	appsMu.Unlock()

	var once sync.Once
	return a, func() { once.Do(func() { a.unregister(id) }) }
}

func (a *application) unregister(id uint64) {
	appsMu.Lock()
	defer appsMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.regs = slices.DeleteFunc(a.regs, func(r registration) bool { return r.id == id })
	a.recompute()
	if len(a.regs) == 0 && apps[a.key] == a {
		delete(apps, a.key)
	}
}

// recompute rebuilds the union, in registration order so the scope
// parameter is stable. The caller holds a.mu.
func (a *application) recompute() {
	u := &needs{}
	for _, r := range a.regs {
		u.add(r.n)
	}
	a.union.Store(u)
}

// signInNeeds is what a sign-in of the application asks for: the union of
// every registered block's needs, and always the asking block's own (a
// handler provisioned outside Caddy, in tests, has no registry).
func (h *Handler) signInNeeds() needs {
	var u needs
	if h.app != nil {
		u.add(h.app.union.Load())
	}
	if h.needs != nil {
		u.add(h.needs)
	}
	return u
}

// stepUpWindow is how long after a second sign-in a session that still
// lacks what a route needs is denied rather than sent again: the second
// sign-in asked for everything the application needs, so another would
// only loop. After it, a configuration that changed again may step up once
// more.
const stepUpWindow = 10 * time.Minute

// stepUpFirst answers a signed-in request whose session never asked Logto
// for what this route needs (it signed in before the configuration
// changed, or through an older instance). Logto grants nothing later that
// the sign-in did not ask for, so a 403 would last until the user signed
// out and in again; instead a navigation goes through sign-in once more,
// with the whole application's needs, and comes back to the same page
// (Logto sends a user it knows straight back). Anything else gets 401 and
// a WWW-Authenticate header naming what is missing. A session that lacks
// it right after such a sign-in gets 403: never a loop.
func (h *Handler) stepUpFirst(w http.ResponseWriter, r *http.Request, cs *cookieSet, u *user, cookies []string, miss needs) error {
	markStepUp(r)
	fields := []zap.Field{
		zap.String("user_id", u.sub),
		zap.Strings("missing_scopes", miss.scopes),
		zap.Strings("missing_resources", miss.resources),
	}
	if u.s.StepUp && h.client.now().UnixMilli()-u.s.Created < stepUpWindow.Milliseconds() {
		h.logger.Warn("signed-in user denied: the session still lacks what the route needs after signing in again", fields...)
		return caddyhttp.Error(http.StatusForbidden, errors.New("logto: the session lacks what this route needs"))
	}
	if !isNavigation(r) {
		h.logger.Debug("signed-in request lacks what the route needs; it must sign in again", fields...)
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Logto realm=%q, sign_in=%q, error="insufficient_scope", scope=%q, resource=%q`,
			"logto", h.paths.signIn, strings.Join(miss.scopes, " "), strings.Join(miss.resources, " ")))
		w.Header().Set("Cache-Control", "no-store")
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("logto: the session must sign in again for what this route needs"))
	}
	h.logger.Info("sending signed-in user to sign in again for what the route needs", fields...)
	if cookies != nil {
		r.Header["Cookie"] = cookies // the attempt pruning reads them
	}
	p := h.configParams()
	p.StepUp = true
	err := h.startSignIn(w, r, cs, h.returnHere(r), p)
	h.stripModuleCookies(r)
	return err
}

// returnHere is where a sign-in started by this request comes back to: the
// URI the client asked for. It can be //evil.example/x, which a browser
// would take for another site, so it goes through the same check as
// ?redirect=; overlong ones are cut back to the path.
func (h *Handler) returnHere(r *http.Request) string {
	ret := originalRequestURI(r)
	if len(ret) > maxReturnURL {
		ret, _, _ = strings.Cut(ret, "?")
	}
	return safeReturn(ret, h.siteURL(r))
}

// stepUpForRefusal reports whether Logto's refusal of the route's token is
// worth one more sign-in: invalid_target means the grant lacks the
// resource, which a new sign-in (asking for it again) may get, if Logto
// knows it again. Navigations are sent once per session and stepUpWindow
// (a resource Logto no longer knows would otherwise cost a trip to Logto
// on every navigation); other requests get the 401 until then, and 403
// after.
func (h *Handler) stepUpForRefusal(r *http.Request, u *user, err error) bool {
	var te *TokenError
	if !errors.As(err, &te) || te.Code != "invalid_target" {
		return false
	}
	now := h.client.now().Unix()
	ls := h.client.live.get(u.s.ID, now)
	last := ls.stepUpAt.Load()
	if last != 0 && now-last < int64(stepUpWindow/time.Second) {
		return false
	}
	if isNavigation(r) {
		return ls.stepUpAt.CompareAndSwap(last, now)
	}
	return true
}

// routeResource is the resource indicator of the route's token.
func (h *Handler) routeResource() string {
	if h.TokenResource != "" {
		return h.TokenResource
	}
	return organizationsResource
}
