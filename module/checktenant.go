package logto

// The probes of `caddy logto check`: questions a Logto tenant answers
// without signing anyone in or out and without issuing anything (LOGTO.md,
// "Probing a tenant without signing anyone in"). Redirects are never
// followed, and every request gives up after checkTimeout.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// checkTimeout bounds each request to the tenant: an endpoint that never
// answers is a failure to report, not a hang.
const checkTimeout = 10 * time.Second

// probeParallel bounds the probes of one tenant in flight at once.
const probeParallel = 6

// checkAlgs are the signing algorithms the module verifies (ID tokens,
// access tokens, logout tokens), with the key each needs.
var checkAlgs = []string{"ES256", "ES384", "ES512", "RS256"}

type checkStatus string

const (
	statusPassed     checkStatus = "passed"
	statusFailed     checkStatus = "failed"
	statusNotChecked checkStatus = "not_checked"
)

// checkResult is one line of the report.
type checkResult struct {
	// What was checked: discovery, signing_keys, clock, credentials,
	// redirect_uri, post_sign_out_redirect_uri, api_resource,
	// backchannel_logout_uri.
	Check string `json:"check"`
	// The URI or indicator checked, when the check is about one.
	Subject string      `json:"subject,omitempty"`
	Status  checkStatus `json:"status"`
	// What was found, or why it was not checked.
	Message string `json:"message"`
	// For a failure: what to change, in Logto Console's words.
	Fix string `json:"fix,omitempty"`
}

func passed(check, subject, msg string) checkResult {
	return checkResult{Check: check, Subject: subject, Status: statusPassed, Message: msg}
}

func failed(check, subject, msg, fix string) checkResult {
	return checkResult{Check: check, Subject: subject, Status: statusFailed, Message: msg, Fix: fix}
}

func notChecked(check, subject, why string) checkResult {
	return checkResult{Check: check, Subject: subject, Status: statusNotChecked, Message: why}
}

// prober asks one tenant its questions.
type prober struct {
	hc  *http.Client
	now func() time.Time
	sem chan struct{}
}

func newProber(transport http.RoundTripper) *prober {
	return &prober{
		hc: &http.Client{
			Timeout:   checkTimeout,
			Transport: transport,
			// An answer's redirect is the answer: following it could
			// only reach a sign-in page or the application.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
		sem: make(chan struct{}, probeParallel),
	}
}

// run calls f in a goroutine of wg, within the tenant's probe budget.
func (pr *prober) run(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		pr.sem <- struct{}{}
		defer func() { <-pr.sem }()
		f()
	}()
}

// discovery is what the discovery probe learned.
type discovery struct {
	md             *metadata
	date           time.Time // Logto's Date header; zero when absent
	sent, received time.Time // this machine's clock around the request
}

// discover fetches the discovery document and checks that it is the one
// the module will use: issuer <endpoint>/oidc, absolute endpoints.
func (pr *prober) discover(ctx context.Context, endpoint string) (*discovery, checkResult) {
	const check = "discovery"
	issuer := endpoint + "/oidc"
	u := issuer + "/.well-known/openid-configuration"
	fixEndpoint := "set endpoint to your Logto endpoint (Console → Applications → your application → Logto endpoint, without /oidc) and make sure this machine can reach it"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: %s is not a URL: %v", u, err), fixEndpoint)
	}
	req.Header.Set("Accept", "application/json")
	d := &discovery{sent: pr.now()}
	resp, err := pr.hc.Do(req)
	if err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: cannot reach Logto at %s: %v", u, scrubURLError(err)), fixEndpoint)
	}
	defer resp.Body.Close()
	d.received = pr.now()
	if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		d.date = t
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: reading %s: %v", u, err), fixEndpoint)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, failed(check, u, fmt.Sprintf("discovery: %s answered %s, not Logto's discovery document", u, resp.Status), fixEndpoint)
	}
	var md metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: %s answered something that is not JSON", u), fixEndpoint)
	}
	if md.Issuer != issuer {
		fix := fixEndpoint
		if right, ok := strings.CutSuffix(md.Issuer, "/oidc"); ok && right != "" {
			fix = fmt.Sprintf("set endpoint to %s (the issuer without /oidc)", right)
		}
		return nil, failed(check, u, fmt.Sprintf("discovery: the issuer is %q, not %q", md.Issuer, issuer), fix)
	}
	for name, v := range map[string]string{
		"authorization_endpoint": md.AuthorizationEndpoint,
		"token_endpoint":         md.TokenEndpoint,
		"jwks_uri":               md.JWKSURI,
	} {
		if pu, err := url.Parse(v); err != nil || !pu.IsAbs() {
			return nil, failed(check, u, fmt.Sprintf("discovery: its %s %q is not an absolute URL", name, v), fixEndpoint)
		}
	}
	d.md = &md
	return d, passed(check, u, "discovery: Logto answers, issuer "+issuer)
}

// clock compares this machine's clock with the Date of Logto's answer.
// Date has whole seconds, so Logto's clock was in [Date, Date+1s) when it
// answered, somewhere between sending and receiving.
func (d *discovery) clock() checkResult {
	const check = "clock"
	if d.date.IsZero() {
		return notChecked(check, "", "clock: Logto's answer had no Date header to compare with")
	}
	local := d.sent.Add(d.received.Sub(d.sent) / 2)
	skew := local.Sub(d.date.Add(500 * time.Millisecond))
	abs := skew.Abs()
	allowed := fmt.Sprintf("the module allows %d s", int(clockSkew/time.Second))
	if abs > clockSkew {
		dir := "ahead of"
		if skew < 0 {
			dir = "behind"
		}
		return failed(check, "", fmt.Sprintf("clock: this machine is %d s %s Logto (%s): Logto's tokens would look expired or not yet valid", int(abs.Round(time.Second)/time.Second), dir, allowed),
			"set this machine's clock right, and keep it so with NTP (e.g. `timedatectl set-ntp true`)")
	}
	if abs <= 1500*time.Millisecond {
		return passed(check, "", fmt.Sprintf("clock: this machine agrees with Logto within 1 s (%s)", allowed))
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	return passed(check, "", fmt.Sprintf("clock: this machine is %d s %s Logto (%s)", int(abs.Round(time.Second)/time.Second), dir, allowed))
}

// keys checks that the tenant's JWKS holds a key the module can verify
// with, in an algorithm Logto says it signs with.
func (pr *prober) keys(ctx context.Context, md *metadata) checkResult {
	const check = "signing_keys"
	fix := "rotate the tenant's signing keys to EC (ES384, Logto's default) or RSA in Console → Tenant settings → Signing keys"
	body, err := fetchJWKS(ctx, pr.hc, md.JWKSURI)
	if err != nil {
		return failed(check, md.JWKSURI, fmt.Sprintf("signing keys: cannot read %s: %v", md.JWKSURI, unavailableCause(err)),
			"make sure this machine can reach Logto's "+md.JWKSURI)
	}
	var set struct {
		Keys []struct {
			jwk
			Alg string `json:"alg"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return failed(check, md.JWKSURI, "signing keys: "+md.JWKSURI+" is not a JSON key set", fix)
	}
	signs := md.IDTokenAlgs
	if len(signs) == 0 {
		signs = []string{"ES384", "RS256"} // as provider.install assumes
	}
	var usable, seen []string
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		alg := k.Alg
		if alg == "" {
			alg = keyAlg(k.jwk)
		}
		seen = append(seen, k.Kty+"/"+alg)
		if _, err := k.publicKey(); err != nil || !slices.Contains(checkAlgs, alg) || !slices.Contains(signs, alg) {
			continue
		}
		usable = appendNew(usable, alg)
	}
	if len(usable) == 0 {
		return failed(check, md.JWKSURI, fmt.Sprintf("signing keys: none the module can verify with (the key set has %s; Logto signs with %s; the module verifies %s)",
			orNone(seen), strings.Join(signs, ", "), strings.Join(checkAlgs, ", ")), fix)
	}
	keys := "1 key"
	if len(set.Keys) != 1 {
		keys = fmt.Sprintf("%d keys", len(set.Keys))
	}
	return passed(check, md.JWKSURI, fmt.Sprintf("signing keys: %s, which the module verifies (%s in the set)", strings.Join(usable, ", "), keys))
}

// keyAlg is the algorithm a key without "alg" signs with, as Logto uses
// them: EC curves by size, RSA with RS256.
func keyAlg(k jwk) string {
	switch {
	case k.Kty == "EC" && k.Crv == "P-256":
		return "ES256"
	case k.Kty == "EC" && k.Crv == "P-384":
		return "ES384"
	case k.Kty == "EC" && k.Crv == "P-521":
		return "ES512"
	case k.Kty == "RSA":
		return "RS256"
	}
	return "?"
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "no signing key"
	}
	return strings.Join(list, ", ")
}

// unavailableCause is err without the errUnavailable prefix.
func unavailableCause(err error) string {
	return strings.TrimPrefix(err.Error(), errUnavailable.Error()+": ")
}

// credentials says how Logto took the application's id and secret.
type credentials int

const (
	credsUnknown   credentials = iota // not learned (Logto unreachable, odd answer)
	credsOK                           // the client authenticated
	credsNoApp                        // Logto has no application with this id
	credsBadSecret                    // the id exists, the secret is wrong
)

// probeCredentials asks the token endpoint to redeem a code that cannot
// exist, with the application's id and secret as the module sends them
// (client_secret_basic, provider.post): Logto authenticates the client
// before it looks at the code, so invalid_grant means the credentials are
// good and invalid_client that they are not. Nothing is issued either way.
func (pr *prober) probeCredentials(ctx context.Context, md *metadata, ap *appPlan) (credentials, checkResult) {
	const check = "credentials"
	p := newProvider(ap.endpoint, ap.appID, ap.appSecret, pr.hc)
	// redirect_uri too: Logto may leave it out only for an application
	// with one registered (node-oidc-provider's
	// allowOmittingSingleRegisteredRedirectUri), and asks for it, as
	// invalid_request, before it looks for the code. Which one does not
	// matter: a code that is not found is refused first.
	redirect := "https://caddy-logto-check.invalid/"
	if len(ap.redirects) > 0 {
		redirect = ap.redirects[0]
	}
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {"caddy-logto-check-" + randomString(18)},
		"redirect_uri": {redirect},
	}
	secretFrom := "app_secret"
	if ap.secretRef != "" {
		secretFrom = "app_secret (" + ap.secretRef + ")"
	}
	err := p.post(ctx, md.TokenEndpoint, form, nil)
	var te *TokenError
	switch {
	case err == nil:
		return credsUnknown, failed(check, "", "app_id and app_secret: the token endpoint accepted a code that cannot exist; is endpoint a Logto tenant?", "")
	case errors.As(err, &te) && te.Code == "invalid_grant":
		return credsOK, passed(check, "", "app_id and app_secret: Logto accepts them")
	case errors.As(err, &te) && te.Code == "invalid_client" && strings.HasPrefix(te.Description, "invalid client"):
		return credsNoApp, failed(check, "", fmt.Sprintf("app_id: Logto has no application %q (Logto: invalid_client, %q)", ap.appID, te.Description),
			"set app_id to the App ID of your Traditional web application (Console → Applications → your application → App ID)")
	case errors.As(err, &te) && te.Code == "invalid_client":
		return credsBadSecret, failed(check, "", fmt.Sprintf("%s: Logto refuses it for application %s (Logto: invalid_client, %q)", secretFrom, ap.appID, te.Description),
			fmt.Sprintf("set %s to one of the App secrets in Console → Applications → %s → Endpoints & Credentials", secretFrom, ap.appID))
	case errors.As(err, &te) && te.Code == "unauthorized_client":
		return credsOK, failed(check, "", fmt.Sprintf("app_id: application %s may not use the authorization code flow (Logto: unauthorized_client, %q)", ap.appID, te.Description),
			"use a Traditional web application (Console → Applications → Create application → Traditional web) and its App ID and App secret")
	case errors.As(err, &te):
		return credsUnknown, failed(check, "", fmt.Sprintf("app_id and app_secret: Logto answered %d %s (%q)", te.Status, te.Code, te.Description), "")
	default:
		return credsUnknown, failed(check, "", fmt.Sprintf("app_id and app_secret: %s: %s", md.TokenEndpoint, unavailableCause(err)),
			"make sure this machine can reach Logto's "+md.TokenEndpoint)
	}
}

// authAnswer is how Logto answered an authorization request.
type authAnswer struct {
	status    int
	signIn    bool   // sent on to Logto's sign-in page: all was accepted
	back      bool   // sent back to the redirect URI (with error)
	err, desc string // the OAuth error, in the body or on the way back
	failure   error  // the request did not get an answer
}

// probeAuthorization sends an authorization request like the module's
// sign-ins (code flow, PKCE S256, state), with only openid asked for and
// the redirect not followed: Logto checks the client, then the redirect
// URI (400 invalid_redirect_uri), then the resources (back to the
// redirect URI with invalid_target), and only then sends the browser to
// its sign-in page, where nobody will sign in.
func (pr *prober) probeAuthorization(ctx context.Context, md *metadata, clientID, redirectURI, resource string) authAnswer {
	q := url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"response_type":         {"code"},
		"scope":                 {"openid"},
		"state":                 {randomString(16)},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
		"code_challenge_method": {"S256"},
	}
	if resource != "" {
		q.Set("resource", resource)
	}
	resp, body, err := pr.get(ctx, withQuery(md.AuthorizationEndpoint, q))
	if err != nil {
		return authAnswer{failure: err}
	}
	a := authAnswer{status: resp.StatusCode}
	if loc, err := resp.Location(); err == nil && resp.StatusCode/100 == 3 {
		back := *loc
		back.RawQuery, back.Fragment = "", ""
		if back.String() == redirectURI {
			a.back = true
			a.err, a.desc = loc.Query().Get("error"), loc.Query().Get("error_description")
		} else {
			a.signIn = true
		}
		return a
	}
	a.err, a.desc = readOAuthError(body)
	return a
}

// probeEndSession asks the end-session endpoint to accept a post sign-out
// URI for the application, without a Logto session: a registered URI gets
// the page that would confirm the sign-out (which ends nothing, as there
// is no session, and is not submitted), an unregistered one 400.
func (pr *prober) probeEndSession(ctx context.Context, md *metadata, clientID, uri string) authAnswer {
	q := url.Values{"client_id": {clientID}, "post_logout_redirect_uri": {uri}}
	resp, body, err := pr.get(ctx, withQuery(md.EndSessionEndpoint, q))
	if err != nil {
		return authAnswer{failure: err}
	}
	a := authAnswer{status: resp.StatusCode}
	a.err, a.desc = readOAuthError(body)
	return a
}

func (pr *prober) get(ctx context.Context, u string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json, text/html")
	resp, err := pr.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", endpointName(u), scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", endpointName(u), err)
	}
	return resp, body, nil
}

func withQuery(endpoint string, q url.Values) string {
	if strings.Contains(endpoint, "?") {
		return endpoint + "&" + q.Encode()
	}
	return endpoint + "?" + q.Encode()
}

// readOAuthError reads an OAuth error answer; Logto answers errors as JSON.
func readOAuthError(body []byte) (code, desc string) {
	var oe struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &oe) != nil {
		return "", ""
	}
	return oe.Error, truncate(oe.Description, 200)
}

// describe says what Logto answered, for a failure's message.
func (a authAnswer) describe() string {
	switch {
	case a.failure != nil:
		return a.failure.Error()
	case a.err != "" && a.desc != "":
		return fmt.Sprintf("Logto: %d %s, %q", a.status, a.err, a.desc)
	case a.err != "":
		return fmt.Sprintf("Logto: %d %s", a.status, a.err)
	}
	return fmt.Sprintf("Logto answered %d %s", a.status, http.StatusText(a.status))
}

// tenantReport is everything checked against one Logto endpoint: the
// tenant's own checks, then each application's.
type tenantReport struct {
	Endpoint     string        `json:"endpoint"`
	Checks       []checkResult `json:"checks"`
	Applications []appReport   `json:"applications"`
}

// appReport is one application's checks. AppID is empty for bearer_only
// blocks without one: they have no application at Logto.
type appReport struct {
	AppID  string        `json:"app_id,omitempty"`
	Sites  []string      `json:"sites"`
	Checks []checkResult `json:"checks"`
}

// appProbe is one application's checks in the making.
type appProbe struct {
	ap    *appPlan
	creds credentials
	cred  checkResult

	redirects  []checkResult
	registered []string // redirect URIs Logto accepted
	signOuts   []checkResult
	resources  []checkResult
}

// checkTenant runs every check of one tenant: discovery first (every other
// question is asked at an endpoint it names), then the keys and each
// application's credentials, redirect and post sign-out URIs at once, then
// the API resources, which need a redirect URI Logto accepted.
func (pr *prober) checkTenant(ctx context.Context, endpoint string, apps []*appPlan) tenantReport {
	rep := tenantReport{Endpoint: endpoint}
	d, res := pr.discover(ctx, endpoint)
	rep.Checks = append(rep.Checks, res)
	if d == nil || d.md == nil {
		rep.Checks = append(rep.Checks, notChecked("signing_keys", "", "signing keys: Logto's discovery failed"))
		if d != nil {
			rep.Checks = append(rep.Checks, d.clock())
		} else {
			rep.Checks = append(rep.Checks, notChecked("clock", "", "clock: Logto did not answer"))
		}
		for _, ap := range apps {
			ar := appReport{AppID: ap.appID, Sites: ap.sitesOrNone()}
			what := "the application, its redirect and post sign-out URIs and API resources"
			if ap.appID == "" {
				what = "the API resources of these bearer_only blocks"
			}
			ar.Checks = append(ar.Checks, notChecked("application", "", what+": Logto's discovery failed, so nothing more could be asked"))
			ar.Checks = append(ar.Checks, ap.unknownOrigins()...)
			rep.Applications = append(rep.Applications, ar)
		}
		return rep
	}
	md := d.md

	var wg sync.WaitGroup
	var keys checkResult
	pr.run(&wg, func() { keys = pr.keys(ctx, md) })
	probes := make([]*appProbe, len(apps))
	for i, ap := range apps {
		probes[i] = &appProbe{ap: ap}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.checkApp(ctx, md, probes[i])
		}()
	}
	wg.Wait()
	rep.Checks = append(rep.Checks, keys, d.clock())

	// Resources are the tenant's, so any application's accepted redirect
	// URI will do to ask about them, its own first.
	var anyClient, anyRedirect string
	for _, p := range probes {
		if len(p.registered) > 0 {
			anyClient, anyRedirect = p.ap.appID, p.registered[0]
			break
		}
	}
	for _, p := range probes {
		client, redirect := anyClient, anyRedirect
		if len(p.registered) > 0 {
			client, redirect = p.ap.appID, p.registered[0]
		}
		p.resources = make([]checkResult, len(p.ap.resources))
		for j, r := range p.ap.resources {
			if redirect == "" {
				p.resources[j] = notChecked("api_resource", r.indicator, fmt.Sprintf("API resource %s: Logto is asked about resources with a redirect URI it accepts, and none was", r.indicator))
				continue
			}
			pr.run(&wg, func() { p.resources[j] = pr.checkResource(ctx, md, client, redirect, r) })
		}
	}
	wg.Wait()

	for _, p := range probes {
		rep.Applications = append(rep.Applications, p.report())
	}
	return rep
}

// checkApp checks an application's credentials, then (if Logto knows the
// application) its redirect and post sign-out URIs.
func (pr *prober) checkApp(ctx context.Context, md *metadata, p *appProbe) {
	ap := p.ap
	switch {
	case ap.appID == "":
		p.cred = notChecked("credentials", "", "app_id, redirect and post sign-out URIs: these bearer_only blocks have no app_id (they need none); only the API resources their tokens are for are checked")
		return
	case !ap.cookies:
		p.cred = notChecked("credentials", "", "app_id and app_secret: every block of this application is bearer_only and never uses them")
		return
	}
	p.creds, p.cred = pr.probeCredentials(ctx, md, ap)
	if p.creds == credsNoApp {
		return
	}
	var wg sync.WaitGroup
	p.redirects = make([]checkResult, len(ap.redirects))
	accepted := make([]bool, len(ap.redirects))
	for i, uri := range ap.redirects {
		pr.run(&wg, func() { p.redirects[i], accepted[i] = pr.checkRedirect(ctx, md, ap.appID, uri) })
	}
	p.signOuts = make([]checkResult, len(ap.postSignOut))
	for i, uri := range ap.postSignOut {
		if md.EndSessionEndpoint == "" {
			p.signOuts[i] = notChecked("post_sign_out_redirect_uri", uri, fmt.Sprintf("post sign-out redirect URI %s: Logto's discovery names no end-session endpoint, so sign-out lands there directly", uri))
			continue
		}
		pr.run(&wg, func() { p.signOuts[i] = pr.checkSignOut(ctx, md, ap.appID, uri) })
	}
	wg.Wait()
	for i, ok := range accepted {
		if ok {
			p.registered = append(p.registered, ap.redirects[i])
		}
	}
}

func (pr *prober) checkRedirect(ctx context.Context, md *metadata, clientID, uri string) (checkResult, bool) {
	const check = "redirect_uri"
	a := pr.probeAuthorization(ctx, md, clientID, uri, "")
	switch {
	case a.failure != nil:
		return failed(check, uri, fmt.Sprintf("redirect URI %s: %s", uri, a.describe()), "make sure this machine can reach Logto's "+md.AuthorizationEndpoint), false
	case a.signIn:
		return passed(check, uri, fmt.Sprintf("redirect URI %s is registered", uri)), true
	case a.back:
		return passed(check, uri, fmt.Sprintf("redirect URI %s is registered (Logto sent the request back to it with %s)", uri, a.err)), true
	case a.err == "invalid_redirect_uri":
		return failed(check, uri, fmt.Sprintf("redirect URI %s is not registered (%s)", uri, a.describe()),
			fmt.Sprintf("Console → Applications → %s → Redirect URIs: add `%s`", clientID, uri)), false
	}
	return failed(check, uri, fmt.Sprintf("redirect URI %s: %s", uri, a.describe()), ""), false
}

func (pr *prober) checkSignOut(ctx context.Context, md *metadata, clientID, uri string) checkResult {
	const check = "post_sign_out_redirect_uri"
	a := pr.probeEndSession(ctx, md, clientID, uri)
	switch {
	case a.failure != nil:
		return failed(check, uri, fmt.Sprintf("post sign-out redirect URI %s: %s", uri, a.describe()), "make sure this machine can reach Logto's "+md.EndSessionEndpoint)
	case a.status == http.StatusOK:
		return passed(check, uri, fmt.Sprintf("post sign-out redirect URI %s is registered", uri))
	case a.status == http.StatusBadRequest && strings.Contains(a.desc, "post_logout_redirect_uri"):
		return failed(check, uri, fmt.Sprintf("post sign-out redirect URI %s is not registered (%s)", uri, a.describe()),
			fmt.Sprintf("Console → Applications → %s → Post sign-out redirect URIs: add `%s`", clientID, uri))
	}
	return failed(check, uri, fmt.Sprintf("post sign-out redirect URI %s: %s", uri, a.describe()), "")
}

func (pr *prober) checkResource(ctx context.Context, md *metadata, clientID, redirectURI string, r resource) checkResult {
	const check = "api_resource"
	var use, harm string
	switch {
	case r.signIn && r.bearer:
		use, harm = "asked for at sign-in, accepted in bearer tokens", "every sign-in of this application is refused, and no API client can get a token for it, until it does"
	case r.signIn:
		use, harm = "asked for at sign-in", "every sign-in of this application is refused until it does"
	default:
		use, harm = "accepted in bearer tokens", "no API client can get a token for it until it does"
	}
	a := pr.probeAuthorization(ctx, md, clientID, redirectURI, r.indicator)
	switch {
	case a.failure != nil:
		return failed(check, r.indicator, fmt.Sprintf("API resource %s: %s", r.indicator, a.describe()), "make sure this machine can reach Logto's "+md.AuthorizationEndpoint)
	case a.signIn:
		return passed(check, r.indicator, fmt.Sprintf("API resource %s exists (%s)", r.indicator, use))
	case a.back && a.err == "invalid_target":
		fix := fmt.Sprintf("Console → API resources → Create API resource with the API identifier `%s` (or correct the indicator in resources, token_resource or bearer)", r.indicator)
		if strings.HasPrefix(r.indicator, "urn:logto:") {
			fix = "this Logto has no organizations: upgrade Logto, or remove organization and the organization rules"
		}
		return failed(check, r.indicator, fmt.Sprintf("API resource %s does not exist (Logto: invalid_target, %q; %s): %s", r.indicator, a.desc, use, harm), fix)
	case a.err == "invalid_redirect_uri":
		return notChecked(check, r.indicator, fmt.Sprintf("API resource %s: Logto no longer accepts the redirect URI it was asked with", r.indicator))
	}
	return failed(check, r.indicator, fmt.Sprintf("API resource %s: %s", r.indicator, a.describe()), "")
}

// report puts the application's checks in the report's order.
func (p *appProbe) report() appReport {
	ap := p.ap
	ar := appReport{AppID: ap.appID, Sites: ap.sitesOrNone()}
	ar.Checks = append(ar.Checks, p.cred)
	if p.creds == credsNoApp && (len(ap.redirects) > 0 || len(ap.postSignOut) > 0) {
		ar.Checks = append(ar.Checks, notChecked("redirect_uri", "", fmt.Sprintf("redirect and post sign-out URIs: Logto has no application %q to ask about", ap.appID)))
	}
	ar.Checks = append(ar.Checks, p.redirects...)
	ar.Checks = append(ar.Checks, ap.unknownOrigins()...)
	ar.Checks = append(ar.Checks, p.signOuts...)
	ar.Checks = append(ar.Checks, p.resources...)
	if ap.appID != "" && len(ap.backchannel) > 0 && p.creds != credsNoApp {
		ar.Checks = append(ar.Checks, notChecked("backchannel_logout_uri", "", fmt.Sprintf(
			"back-channel logout URI: only Logto's Management API can read it; for sign-out everywhere, set Console → Applications → %s → Backchannel logout URI to %s",
			ap.appID, strings.Join(ap.backchannel, " or "))))
	}
	return ar
}

// unknownOrigins are the lines for sites whose address the config does
// not tell: never a silent pass.
func (ap *appPlan) unknownOrigins() []checkResult {
	var out []checkResult
	for _, o := range ap.unknown {
		out = append(out, notChecked("redirect_uri", o.host, fmt.Sprintf("redirect and post sign-out URIs of %s: %s", o.host, o.why)))
	}
	return out
}

func (ap *appPlan) sitesOrNone() []string {
	if ap.sites == nil {
		return []string{}
	}
	return ap.sites
}
