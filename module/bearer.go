package logto

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// bearerChallenge is the WWW-Authenticate challenge of RFC 6750 without an
// error: what a request gets that brought no token where one is needed.
const bearerChallenge = `Bearer realm="logto"`

// organizationIndicator, as a bearer indicator, accepts organization
// tokens (audience urn:logto:organization:<id>).
const organizationIndicator = "organization"

// organizationAudience prefixes the audience of Logto's organization tokens.
const organizationAudience = "urn:logto:organization:"

// provisionBearer expands and checks the bearer options. A mixed block
// (cookies and tokens) with scope rules and no token_resource reads its
// browser users' permissions from a token for the first indicator, so one
// rule means the same permission for both kinds of client.
func (h *Handler) provisionBearer(repl *caddy.Replacer) error {
	if h.BearerOnly && len(h.Bearer) == 0 {
		return errors.New("logto: bearer_only needs bearer <resource indicator>: it accepts only access tokens")
	}
	for i, ind := range h.Bearer {
		ind = repl.ReplaceAll(ind, "")
		if !validIndicator(ind) {
			return fmt.Errorf("logto: bearer: %q is not a resource indicator (an absolute URI such as https://api.example.com, or %q)", ind, organizationIndicator)
		}
		if slices.Contains(h.Bearer[:i], ind) {
			return fmt.Errorf("logto: bearer: %q given twice", ind)
		}
		h.Bearer[i] = ind
	}
	if len(h.Bearer) > 0 && !h.BearerOnly && h.TokenResource == "" && h.Bearer[0] != organizationIndicator {
		for _, r := range h.Require {
			if r.Kind == "scope" {
				h.TokenResource = h.Bearer[0]
				break
			}
		}
	}
	return nil
}

// validIndicator accepts what Logto accepts as an API resource indicator:
// an absolute URI. Placeholders are expanded before this check.
func validIndicator(s string) bool {
	if s == organizationIndicator {
		return true
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && (u.Host != "" || u.Opaque != "") && u.Fragment == ""
}

// credKind says what a request brought by way of an access token.
type credKind int

const (
	credNone      credKind = iota // no Authorization: Bearer, no token in the query
	credToken                     // one well-formed Authorization: Bearer <token>
	credMalformed                 // RFC 6750 invalid_request: see reason
)

type bearerCred struct {
	kind   credKind
	token  string
	reason string
}

// bearerCredentials reads the request's access token. Only the
// Authorization header is a way in (RFC 6750 section 2.1; the scheme name
// is case-insensitive, RFC 7235). A token in the query string is refused
// rather than ignored, since URLs end up in logs and the client should
// learn so. Two Authorization headers, "Bearer" with no token or with
// more than one, are malformed requests. auth is the Authorization header
// as the client sent it: another block of the application may set that
// header for its upstream, and so strip the client's before this one runs.
func bearerCredentials(auth []string, r *http.Request) bearerCred {
	inQuery := strings.Contains(r.URL.RawQuery, "access_token") && r.URL.Query().Has("access_token")
	if len(auth) == 0 {
		if inQuery {
			return bearerCred{kind: credMalformed, reason: "access tokens are not accepted in the query string"}
		}
		return bearerCred{kind: credNone}
	}
	scheme, rest, _ := strings.Cut(strings.TrimLeft(auth[0], " "), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if len(auth) > 1 {
			return bearerCred{kind: credMalformed, reason: "more than one Authorization header"}
		}
		// Another scheme (Basic, say) is not ours to judge.
		return bearerCred{kind: credNone}
	}
	switch token := strings.Trim(rest, " "); {
	case len(auth) > 1:
		return bearerCred{kind: credMalformed, reason: "more than one Authorization header"}
	case inQuery:
		return bearerCred{kind: credMalformed, reason: "more than one way of sending the access token"}
	case token == "":
		return bearerCred{kind: credMalformed, reason: "no token after Bearer"}
	case !isB64Token(token):
		return bearerCred{kind: credMalformed, reason: "the Authorization header is not Bearer followed by one token"}
	default:
		return bearerCred{kind: credToken, token: token}
	}
}

// isB64Token checks RFC 6750's b64token syntax: 1*( ALPHA / DIGIT / "-" /
// "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// gateBearer is the gate for a request of a bearer block that carries a
// token (or any request of a bearer_only block). No session is read and no
// cookie is set; failures follow RFC 6750. Like admit, it reports whether
// the request goes on, and otherwise the error.
func (h *Handler) gateBearer(w http.ResponseWriter, r *http.Request, st *requestState, first bool, repl *caddy.Replacer, cred bearerCred) (bool, error) {
	if first {
		repl.Map(st.placeholder)
	}
	h.stripModuleCookies(r)
	protected, err := h.protects(r)
	if err != nil {
		return false, err
	}
	// Where nothing is required (outside the matcher), a token is used when
	// good and otherwise ignored, as a bad cookie means "signed out".
	switch {
	case cred.kind == credNone:
		if h.Pass || !protected {
			return true, nil
		}
		return false, bearerFail(w, http.StatusUnauthorized, "", "", "")
	case cred.kind == credMalformed:
		if !protected {
			return true, nil
		}
		h.logger.Debug("bearer request rejected", zap.String("reason", cred.reason))
		return false, bearerFail(w, http.StatusBadRequest, "invalid_request", cred.reason, "")
	}

	tok, err := h.client.verifyBearer(r.Context(), cred.token, h.acceptsAudience)
	if err != nil {
		if !protected {
			return true, nil
		}
		if errors.Is(err, errUnavailable) {
			h.logger.Error("cannot verify an access token: Logto's keys are unavailable", errField(err))
			return false, caddyhttp.Error(http.StatusBadGateway, err)
		}
		h.logger.Debug("access token rejected", errField(err))
		return false, bearerFail(w, http.StatusUnauthorized, "invalid_token", rejectionText(err), "")
	}
	if protected {
		if err := h.authorizeBearer(w, repl, tok); err != nil {
			return false, err
		}
	}
	if st.user != nil {
		// An earlier block named the browser's session user; the token's
		// identity replaces it, headers included.
		dropIdentity(r, repl, st)
	}
	st.bearer, st.user, st.client = tok, nil, nil
	// The accepted token goes on as the client sent it, should another
	// block of the application have stripped or set that header (this
	// block's own header option may still set it).
	r.Header["Authorization"] = st.auth
	if !first {
		// An earlier logto handler may have set these; the token's win.
		// (The first handler's are served by the placeholder hook, which
		// costs no map.)
		repl.Set("http.auth.logto.access_token", tok.raw)
		repl.Set("http.auth.logto.organization_id", tok.org)
	}
	h.setHeaders(r, repl, st)
	return true, nil
}

// acceptsAudience reports whether a token's audience is one the block
// accepts.
func (h *Handler) acceptsAudience(aud string) bool {
	if strings.HasPrefix(aud, organizationAudience) {
		return slices.Contains(h.Bearer, organizationIndicator) && validID(aud[len(organizationAudience):])
	}
	return slices.Contains(h.Bearer, aud)
}

// authorizeBearer checks the route's organization and the rules against a
// verified token. Rules
// read the token's own claims: its scope for permissions (machine-to-
// machine roles arrive as scopes), organization_id or an organization
// audience for the organization, any claim for the rest.
func (h *Handler) authorizeBearer(w http.ResponseWriter, repl *caddy.Replacer, tok *bearerToken) error {
	org := tok.org
	if h.Organization != "" {
		if route := repl.ReplaceAll(h.Organization, ""); !validID(route) || org != route {
			return bearerFail(w, http.StatusUnauthorized, "invalid_token", "the access token is not for this organization", "")
		}
	}
	who := subject{claim: func(name string) any { return tok.claims[name] }, orgs: tok.orgs, scopes: tok.scopes, org: org}
	for _, rule := range h.Require {
		switch {
		case ruleMet(rule, who):
		case rule.Kind == "scope":
			return h.bearerForbidden(w, tok, "require scope not met", strings.Join(rule.Values, " "))
		default:
			return h.bearerForbidden(w, tok, "require "+rule.Kind+" not met", "")
		}
	}
	return nil
}

func (h *Handler) bearerForbidden(w http.ResponseWriter, tok *bearerToken, reason, scope string) error {
	h.logger.Info("access token denied", zap.String("user_id", tok.sub), zap.String("reason", reason))
	return bearerFail(w, http.StatusForbidden, "insufficient_scope", "the access token lacks a permission this route requires", scope)
}

// bearerFail answers per RFC 6750 section 3: the challenge, with an error
// code when the request brought a token, as a Caddy error so handle_errors
// applies. Nothing of the token is echoed.
func bearerFail(w http.ResponseWriter, status int, code, desc, scope string) error {
	v := bearerChallenge
	if code != "" {
		v += `, error="` + code + `"`
	}
	if desc != "" {
		v += `, error_description="` + quotable(desc) + `"`
	}
	if scope != "" {
		v += `, scope="` + quotable(scope) + `"`
	}
	w.Header().Set("WWW-Authenticate", v)
	w.Header().Set("Cache-Control", "no-store")
	msg := "logto: bearer: " + desc
	if desc == "" {
		msg = "logto: bearer: an access token is required"
	}
	return caddyhttp.Error(status, errors.New(msg))
}

// quotable keeps a value inside a quoted-string (RFC 6750 forbids '"' and
// '\' in error_description and scope anyway).
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}
