package logto

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

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
		case err != nil:
			h.logger.Error("cannot obtain the route's access token", refusalFields(err)...)
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
