package logto

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
)

// The module's metrics live in Caddy's own registry, so they appear
// wherever the user exposes Caddy's metrics (the admin endpoint's /metrics,
// the metrics handler) and nowhere else. Labels come from small fixed sets
// (the application and an outcome), never a user, a path or a token.
//
// The collectors are made once per process and registered in the registry
// of every config that provisions a logto handler: Caddy gives each config
// its own registry, and registering the same collector again in one (a
// second logto block) is not an error. So a reload neither duplicates nor
// leaks collectors, and the counters keep counting across it: a rate()
// sees no reset at every `caddy reload`, unlike caddy_http_*, whose
// collectors are made anew with each config. An application's series go
// when its last block leaves the config (its client is destroyed), so
// applications taken out of the config do not linger.
//
// Every series an application can have is resolved when its client is
// made (WithLabelValues, once), and kept: counting an event is an atomic
// add, with no label lookup and no allocation, on the signed-in hot path
// as anywhere else.

// decision is what the gate made of a request (requests_total).
type decision uint8

const (
	decNone         decision = iota // not counted: a server error (Logto unreachable)
	decAllowed                      // went on with a signed-in user or an accepted access token
	decAnonymous                    // went on without one (pass, or outside the block's matcher)
	decRedirected                   // a navigation sent to sign in
	decUnauthorized                 // 401, or an RFC 6750 invalid_request (400)
	decForbidden                    // 403: a rule, a refused route token, insufficient_scope
	decStepUp                       // sent to sign in again for what the route needs (302 or 401)
	numDecisions
)

var decisionNames = [numDecisions]string{"", "allowed", "anonymous", "redirected", "unauthorized", "forbidden", "step_up"}

// signInResult is a step of a sign-in (sign_ins_total).
type signInResult uint8

const (
	signInStarted   signInResult = iota // the browser was sent to Logto
	signInCompleted                     // the callback made a session
	signInFailed                        // see failReason
	numSignInResults
)

var signInResultNames = [numSignInResults]string{"started", "completed", "failed"}

// failReason is why a sign-in failed (sign_in_failures_total). The README's
// Metrics section documents each; Troubleshooting links to them, so a value
// is never renamed.
type failReason uint8

const (
	failBadState       failReason = iota // the callback's state is malformed or matches no attempt in this browser
	failExpiredAttempt                   // the user stayed on Logto's pages past sign_in_timeout (started over)
	failLogtoError                       // Logto sent the callback an error (error=...)
	failBadResponse                      // the callback has no valid code, or names another issuer
	failInvalidClient                    // Logto refused app_id/app_secret at the code exchange
	failExchange                         // Logto refused the authorization code (invalid_grant, ...)
	failTokenInvalid                     // the ID token is missing, does not verify, or its nonce is wrong
	failUnavailable                      // Logto could not be reached, or answered garbage
	numFailReasons
)

var failReasonNames = [numFailReasons]string{
	"bad_state", "expired_attempt", "logto_error", "bad_response",
	"invalid_client", "exchange_failed", "token_invalid", "unavailable",
}

// refreshResult is what came of a session's need for its refresh token
// (refreshes_total).
type refreshResult uint8

const (
	refreshRefreshed    refreshResult = iota // Logto renewed the tokens
	refreshShared                            // another request's (or instance's) refresh was used instead
	refreshInvalidGrant                      // Logto refused the refresh token: the user signs in again
	refreshUnavailable                       // Logto or storage failed; the session goes on and retries
	numRefreshResults
)

var refreshResultNames = [numRefreshResults]string{"refreshed", "shared", "invalid_grant", "unavailable"}

// bearerResult is what came of a request's access token
// (bearer_tokens_total), in RFC 6750's words.
type bearerResult uint8

const (
	bearerAccepted bearerResult = iota
	bearerInvalidRequest
	bearerInvalidToken
	bearerInsufficientScope
	numBearerResults
)

var bearerResultNames = [numBearerResults]string{"accepted", "invalid_request", "invalid_token", "insufficient_scope"}

// logoutResult is what came of a back-channel logout
// (back_channel_logouts_total).
type logoutResult uint8

const (
	logoutAccepted logoutResult = iota
	logoutRejected
	numLogoutResults
)

var logoutResultNames = [numLogoutResults]string{"accepted", "rejected"}

// logtoCall is a kind of request the module makes to Logto
// (logto_request_duration_seconds).
type logtoCall uint8

const (
	callDiscovery logtoCall = iota
	callKeys
	callToken
	callRevocation
	callUserinfo
	numCalls
)

var callNames = [numCalls]string{"discovery", "keys", "token", "revocation", "userinfo"}

// callOutcome is how a request to Logto ended.
type callOutcome uint8

const (
	outcomeOK      callOutcome = iota // Logto answered as asked
	outcomeRefused                    // Logto answered with an OAuth error (invalid_grant, invalid_client, ...)
	outcomeError                      // no answer, a timeout, another status, or garbage
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "refused", "error"}

// refusable reports whether Logto answers this call with OAuth errors at
// all; discovery and keys have only ok and error.
func (c logtoCall) refusable() bool { return c != callDiscovery && c != callKeys }

// labelled is a collector whose series can be dropped by label.
type labelled interface {
	prometheus.Collector
	DeletePartialMatch(labels prometheus.Labels) int
}

// collectors are the module's, one set per process.
var collectors = struct {
	requests, signIns, signInFailures, refreshes, bearerTokens, backChannelLogouts *prometheus.CounterVec
	logtoCalls                                                                     *prometheus.HistogramVec
	revokedSessions                                                                *prometheus.GaugeVec
	all                                                                            []labelled
}{
	requests:           newCounterVec("requests_total", "Requests the logto handler decided on, by decision.", "decision"),
	signIns:            newCounterVec("sign_ins_total", "Sign-ins started, completed and failed.", "result"),
	signInFailures:     newCounterVec("sign_in_failures_total", "Failed sign-ins, by reason.", "reason"),
	refreshes:          newCounterVec("refreshes_total", "Sessions' needs for their refresh token, by result.", "result"),
	bearerTokens:       newCounterVec("bearer_tokens_total", "Access tokens in Authorization: Bearer, by result.", "result"),
	backChannelLogouts: newCounterVec("back_channel_logouts_total", "Back-channel logout requests, by result.", "result"),
	logtoCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "logto",
		Name:      "logto_request_duration_seconds",
		Help:      "Duration of the module's requests to Logto, by call and outcome.",
		Buckets:   prometheus.DefBuckets,
	}, []string{"app", "call", "outcome"}),
	revokedSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "logto",
		Name:      "revoked_sessions",
		Help:      "Entries in the logout list (ended sessions, users and Logto sessions).",
	}, []string{"app"}),
}

func init() {
	c := &collectors
	c.all = []labelled{c.requests, c.signIns, c.signInFailures, c.refreshes, c.bearerTokens,
		c.backChannelLogouts, c.logtoCalls, c.revokedSessions}
}

func newCounterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "logto",
		Name:      name,
		Help:      help,
	}, []string{"app", label})
}

// registerMetrics adds the module's collectors to a config's registry
// (nil: a context without one, as in tests). Each logto block of a config
// does so; only the first registration counts, as for Caddy's
// reverse_proxy metrics.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range collectors.all {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if errors.As(err, &dup) && dup.ExistingCollector == c {
				continue
			}
			return err
		}
	}
	return nil
}

// appMetrics are the series of one application, resolved once.
type appMetrics struct {
	app       string
	refs      int // clients using these series; guarded by appSeries
	requests  [numDecisions]prometheus.Counter
	signIns   [numSignInResults]prometheus.Counter
	failures  [numFailReasons]prometheus.Counter
	refreshes [numRefreshResults]prometheus.Counter
	bearer    [numBearerResults]prometheus.Counter
	logouts   [numLogoutResults]prometheus.Counter
	calls     [numCalls][numOutcomes]prometheus.Observer
	revoked   prometheus.Gauge
}

// appSeries maps an app label to its series. Clients of one application
// that differ in app_secret or cookie keys (a secret rotated by a reload)
// share them, so the application's counters neither split nor restart.
var appSeries = struct {
	sync.Mutex
	m map[string]*appMetrics
}{m: map[string]*appMetrics{}}

// metricsApp is the app label of a client: its app_id, or for a bearer_only
// block without one, the endpoint.
func metricsApp(cfg clientConfig) string {
	if cfg.appID != "" {
		return cfg.appID
	}
	return cfg.endpoint
}

// acquireAppMetrics returns the series of app, creating them (at zero, so
// that rate() and absent() work from the start) for its first client.
func acquireAppMetrics(app string) *appMetrics {
	appSeries.Lock()
	defer appSeries.Unlock()
	m := appSeries.m[app]
	if m == nil {
		m = newAppMetrics(app)
		appSeries.m[app] = m
	}
	m.refs++
	return m
}

func newAppMetrics(app string) *appMetrics {
	c := &collectors
	m := &appMetrics{app: app}
	for d := decAllowed; d < numDecisions; d++ {
		m.requests[d] = c.requests.WithLabelValues(app, decisionNames[d])
	}
	for i := range m.signIns {
		m.signIns[i] = c.signIns.WithLabelValues(app, signInResultNames[i])
	}
	for i := range m.failures {
		m.failures[i] = c.signInFailures.WithLabelValues(app, failReasonNames[i])
	}
	for i := range m.refreshes {
		m.refreshes[i] = c.refreshes.WithLabelValues(app, refreshResultNames[i])
	}
	for i := range m.bearer {
		m.bearer[i] = c.bearerTokens.WithLabelValues(app, bearerResultNames[i])
	}
	for i := range m.logouts {
		m.logouts[i] = c.backChannelLogouts.WithLabelValues(app, logoutResultNames[i])
	}
	for call := range numCalls {
		for o := range numOutcomes {
			if o == outcomeRefused && !call.refusable() {
				continue
			}
			m.calls[call][o] = c.logtoCalls.WithLabelValues(app, callNames[call], outcomeNames[o])
		}
	}
	m.revoked = c.revokedSessions.WithLabelValues(app)
	return m
}

// release lets go of the series for one client; the last one drops them
// from the collectors.
func (m *appMetrics) release() {
	if m == nil {
		return
	}
	appSeries.Lock()
	defer appSeries.Unlock()
	if appSeries.m[m.app] != m {
		return
	}
	if m.refs--; m.refs > 0 {
		return
	}
	delete(appSeries.m, m.app)
	for _, c := range collectors.all {
		c.DeletePartialMatch(prometheus.Labels{"app": m.app})
	}
}

// count counts a request's decision.
func (m *appMetrics) count(d decision) {
	if m != nil && d != decNone {
		m.requests[d].Inc()
	}
}

func (m *appMetrics) signIn(r signInResult) {
	if m != nil {
		m.signIns[r].Inc()
	}
}

// signInFailed counts a failed sign-in and its reason.
func (m *appMetrics) signInFailed(reason failReason) {
	if m != nil {
		m.signIns[signInFailed].Inc()
		m.failures[reason].Inc()
	}
}

func (m *appMetrics) refresh(r refreshResult) {
	if m != nil {
		m.refreshes[r].Inc()
	}
}

func (m *appMetrics) bearerToken(r bearerResult) {
	if m != nil {
		m.bearer[r].Inc()
	}
}

// bearerRefused counts an access token the block's rules turned down, by
// the RFC 6750 status authorizeBearer answered with.
func (m *appMetrics) bearerRefused(err error) {
	if statusOf(err) == http.StatusForbidden {
		m.bearerToken(bearerInsufficientScope)
	} else {
		m.bearerToken(bearerInvalidToken)
	}
}

func (m *appMetrics) logout(r logoutResult) {
	if m != nil {
		m.logouts[r].Inc()
	}
}

// setRevoked reports the size of the logout list.
func (m *appMetrics) setRevoked(s *revSet) {
	if m != nil {
		m.revoked.Set(float64(s.len()))
	}
}

// timeCall observes a request to Logto that began at start and ended with
// *err. It is deferred, with err the caller's named result.
func (m *appMetrics) timeCall(call logtoCall, start time.Time, err *error) {
	if m == nil {
		return
	}
	o := outcomeOf(*err)
	if o == outcomeRefused && !call.refusable() {
		o = outcomeError
	}
	m.calls[call][o].Observe(time.Since(start).Seconds())
}

// outcomeOf classifies the error of a request to Logto: an OAuth error
// answer is a refusal, anything else a failure.
func outcomeOf(err error) callOutcome {
	var te *TokenError
	switch {
	case err == nil:
		return outcomeOK
	case errors.As(err, &te):
		return outcomeRefused
	}
	return outcomeError
}

// statusOf is the HTTP status of a handler error (0 for another error).
// The gate's own errors are HandlerErrors as they are: asserted, they cost
// no allocation, which errors.As's target would.
func statusOf(err error) int {
	if he, ok := err.(caddyhttp.HandlerError); ok {
		return he.StatusCode
	}
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

// admission is the decision for a request the gate lets through: with
// the identity of a user or a token, or without.
func admission(st *requestState) decision {
	if st.user != nil || st.bearer != nil {
		return decAllowed
	}
	return decAnonymous
}

// refusal is the decision for a request the gate answered itself (err nil:
// a redirect) or refused with err. prev is what the request's state held:
// decStepUp when stepUpFirst answered. Server errors (Logto unreachable, a
// matcher failing) are not decisions: they are counted by Caddy's own
// caddy_http_request_errors_total and by the Logto call histogram.
func refusal(prev decision, err error) decision {
	if err == nil {
		if prev == decStepUp {
			return decStepUp
		}
		return decRedirected
	}
	switch status := statusOf(err); {
	case status == http.StatusForbidden:
		return decForbidden
	case status == http.StatusUnauthorized && prev == decStepUp:
		return decStepUp
	case status == http.StatusUnauthorized || status == http.StatusBadRequest:
		return decUnauthorized
	}
	return decNone
}

// markStepUp records that the gate's answer to r is a step-up, for
// refusal. It runs only on that answer, so the lookup of the request's
// state costs the hot path nothing.
func markStepUp(r *http.Request) {
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if st, ok := vars[stateVar].(*requestState); ok {
		st.decision = decStepUp
	}
}
