package logto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
)

// discoveryTTL is how long a fetched discovery document is trusted before it
// is fetched again on next use. Logto's endpoints practically never move;
// keys rotate, but the key set (keys.go) refetches on an unknown kid.
const discoveryTTL = 24 * time.Hour

// discoveryRetry bounds how often a failing discovery is retried, so a Logto
// outage does not turn every request into an outbound call.
const discoveryRetry = 5 * time.Second

// clockSkew is tolerated on ID token expiry, like Logto's SDKs.
const clockSkew = 60 * time.Second

// maxIdPResponse caps what is read from any Logto response.
const maxIdPResponse = 1 << 20

// metadata is the part of Logto's discovery document the module uses.
type metadata struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	EndSessionEndpoint    string   `json:"end_session_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint"`
	IDTokenAlgs           []string `json:"id_token_signing_alg_values_supported"`
	IssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
}

// provider is Logto as seen from the module: discovery, keys and the token
// endpoint. Everything is fetched on first use and cached, so startup never
// waits for Logto.
type provider struct {
	endpoint  string
	issuer    string
	appID     string
	appSecret string
	http      *http.Client
	now       func() time.Time

	mu         sync.Mutex
	md         *metadata
	verifier   *oidc.IDTokenVerifier
	logout     *oidc.IDTokenVerifier
	keys       *keySet
	onKeys     func(body []byte) // given every key set fetched (saveKeys, in keys.go)
	metrics    *appMetrics       // the application's series, for the calls' durations
	fetched    time.Time
	refreshing bool // a background refresh of a stale document runs
	failedAt   time.Time
	lastError  error

	// unanswered is when a call to Logto last went unanswered (unix ns),
	// 0 once one is answered; probing allows one check at a time
	// (answering).
	unanswered atomic.Int64
	probing    sync.Mutex
}

func newProvider(endpoint, appID, appSecret string, hc *http.Client) *provider {
	return &provider{
		endpoint:  endpoint,
		issuer:    endpoint + "/oidc",
		appID:     appID,
		appSecret: appSecret,
		http:      hc,
		now:       time.Now,
	}
}

// errUnavailable wraps every failure to reach Logto or to make sense of its
// answer; callers map it to 502.
var errUnavailable = errors.New("logto: identity provider unavailable")

// discover returns the discovery metadata and an ID token verifier, fetching
// them when absent or stale. Concurrent callers wait for one fetch.
func (p *provider) discover(ctx context.Context) (*metadata, *oidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if p.md != nil && now.Sub(p.fetched) < discoveryTTL {
		return p.md, p.verifier, nil
	}
	if p.md != nil {
		// Stale but usable: answer now and refresh in the background, so
		// no request waits on Logto (or hangs on it) for a document that
		// practically never changes.
		if !p.refreshing {
			p.refreshing = true
			go p.refreshDiscovery()
		}
		return p.md, p.verifier, nil
	}
	if p.lastError != nil && now.Sub(p.failedAt) < discoveryRetry {
		return nil, nil, p.lastError
	}
	md, err := p.fetchMetadata(ctx)
	if err != nil {
		// Timed from the end of the attempt: callers that waited for it
		// get its answer instead of each trying (and waiting) again.
		p.failedAt, p.lastError = p.now(), err
		return nil, nil, err
	}
	p.install(md)
	return p.md, p.verifier, nil
}

// probeTimeout bounds the check of whether Logto answers again that a
// sign-in makes after a failure (answering).
const probeTimeout = 3 * time.Second

// errNotAnswering: a call to Logto went unanswered a moment ago, and none
// has been answered since.
var errNotAnswering = fmt.Errorf("%w: it did not answer a moment ago", errUnavailable)

// answering is asked before a sign-in sends a browser to Logto. Logto
// counts as answering unless a call to it (discovery, token, userinfo)
// got no answer since the last one it answered; then discovery is
// fetched again, one fetch at a time and at most every discoveryRetry, and
// meanwhile the sign-in gets 502 at once rather than a redirect to a Logto
// that will not answer the browser either (an error page, or a hang).
func (p *provider) answering(ctx context.Context) error {
	failed := p.unanswered.Load()
	if failed == 0 {
		return nil
	}
	if p.now().UnixNano()-failed < int64(discoveryRetry) || !p.probing.TryLock() {
		return errNotAnswering
	}
	defer p.probing.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	if _, err := p.fetchMetadata(ctx); err != nil && p.unanswered.Load() != 0 {
		return err
	}
	return nil
}

// noteAnswer records whether Logto answered a call. Any HTTP response is an
// answer, an error page too (the browser would get one as well); no
// connection or a timeout is not. A caller that went away (parent
// cancelled) says nothing of Logto.
func (p *provider) noteAnswer(parent context.Context, answered bool) {
	switch {
	case answered:
		p.unanswered.Store(0)
	case parent.Err() != context.Canceled:
		p.unanswered.Store(p.now().UnixNano())
	}
}

// install makes md the discovery document in use. The caller holds p.mu.
func (p *provider) install(md *metadata) {
	if p.keys == nil || p.md == nil || p.md.JWKSURI != md.JWKSURI {
		p.keys = newKeySet(md.JWKSURI, p.http, p.now)
		p.keys.saved = p.onKeys
		p.keys.metrics = p.metrics
	}
	algs := md.IDTokenAlgs
	if len(algs) == 0 {
		algs = []string{oidc.ES384, oidc.RS256}
	}
	p.verifier = oidc.NewVerifier(p.issuer, p.keys, &oidc.Config{
		ClientID:             p.appID,
		SupportedSigningAlgs: algs,
		Now:                  func() time.Time { return p.now().Add(-clockSkew) },
	})
	// Logout tokens need not carry exp; the handler checks iat instead.
	// Stored ID tokens (storedVerifier) are checked without expiry too.
	p.logout = oidc.NewVerifier(p.issuer, p.keys, &oidc.Config{
		ClientID:             p.appID,
		SupportedSigningAlgs: algs,
		SkipExpiryCheck:      true,
	})
	p.md, p.fetched, p.lastError = md, p.now(), nil
}

func (p *provider) refreshDiscovery() {
	md, err := p.fetchMetadata(context.Background())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshing = false
	if err != nil {
		// Try again after discoveryRetry; the stale document serves on.
		p.fetched = p.now().Add(-discoveryTTL + discoveryRetry)
		return
	}
	p.install(md)
}

// logoutVerifier verifies back-channel logout tokens; call after discover.
func (p *provider) logoutVerifier() *oidc.IDTokenVerifier {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logout
}

// hasKeys reports whether the tenant's keys are at hand.
func (p *provider) hasKeys() bool {
	p.mu.Lock()
	keys := p.keys
	p.mu.Unlock()
	return keys != nil && keys.has()
}

// storedVerifier verifies the ID token of a session decoded from a cookie:
// like a logout token, without the expiry (refresh handles that). Call
// after discover.
func (p *provider) storedVerifier() *oidc.IDTokenVerifier { return p.logoutVerifier() }

func (p *provider) fetchMetadata(parent context.Context) (_ *metadata, err error) {
	defer p.metrics.timeCall(callDiscovery, time.Now(), &err)
	ctx, cancel := context.WithTimeout(parent, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.issuer+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.http.Do(req)
	p.noteAnswer(parent, err == nil)
	if err != nil {
		return nil, fmt.Errorf("%w: discovery: %v", errUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return nil, fmt.Errorf("%w: discovery: %v", errUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: discovery answered %s", errUnavailable, resp.Status)
	}
	var md metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, fmt.Errorf("%w: discovery document is not JSON", errUnavailable)
	}
	if md.Issuer != p.issuer {
		return nil, fmt.Errorf("%w: discovery issuer %q is not %q (is endpoint right?)", errUnavailable, md.Issuer, p.issuer)
	}
	for name, u := range map[string]string{
		"authorization_endpoint": md.AuthorizationEndpoint,
		"token_endpoint":         md.TokenEndpoint,
		"jwks_uri":               md.JWKSURI,
	} {
		if pu, err := url.Parse(u); err != nil || !pu.IsAbs() {
			return nil, fmt.Errorf("%w: discovery %s %q is not an absolute URL", errUnavailable, name, u)
		}
	}
	return &md, nil
}

// tokenResponse is a successful answer of the token endpoint.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	Scope        string `json:"scope"`
}

// TokenError is an OAuth error answer of Logto's token endpoint.
type TokenError struct {
	Status      int
	Code        string
	Description string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("logto: token endpoint answered %d %s: %s", e.Status, e.Code, e.Description)
}

// isInvalidGrant reports whether Logto rejected the grant itself (expired,
// revoked or replayed refresh token, used code): the user must sign in again.
func isInvalidGrant(err error) bool {
	var te *TokenError
	return errors.As(err, &te) && te.Code == "invalid_grant"
}

// token calls the token endpoint with client_secret_basic, as Logto expects
// of a Traditional web application.
func (p *provider) token(ctx context.Context, form url.Values) (*tokenResponse, error) {
	md, _, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	var tr tokenResponse
	if err := p.post(ctx, callToken, md.TokenEndpoint, form, &tr); err != nil {
		return nil, err
	}
	if tr.AccessToken == "" && tr.IDToken == "" {
		return nil, fmt.Errorf("%w: token endpoint answered without tokens", errUnavailable)
	}
	return &tr, nil
}

// revoke revokes a refresh token at the revocation endpoint.
func (p *provider) revoke(ctx context.Context, refreshToken string) error {
	md, _, err := p.discover(ctx)
	if err != nil {
		return err
	}
	if md.RevocationEndpoint == "" {
		return nil
	}
	return p.post(ctx, callRevocation, md.RevocationEndpoint, url.Values{
		"token":           {refreshToken},
		"token_type_hint": {"refresh_token"},
	}, nil)
}

// post sends an authenticated form to Logto and decodes a JSON answer into
// out (when not nil). OAuth errors come back as *TokenError; transport
// failures and garbage as errUnavailable.
func (p *provider) post(parent context.Context, call logtoCall, endpoint string, form url.Values, out any) (err error) {
	defer p.metrics.timeCall(call, time.Now(), &err)
	ctx, cancel := context.WithTimeout(parent, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("%w: %v", errUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: form-encode id and secret before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(p.appID), url.QueryEscape(p.appSecret))
	resp, err := p.http.Do(req)
	p.noteAnswer(parent, err == nil)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errUnavailable, endpointName(endpoint), scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errUnavailable, endpointName(endpoint), err)
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &oe) == nil && oe.Error != "" {
			return &TokenError{Status: resp.StatusCode, Code: oe.Error, Description: truncate(oe.Description, 200)}
		}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s answered %s", errUnavailable, endpointName(endpoint), resp.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%w: %s answered something that is not JSON", errUnavailable, endpointName(endpoint))
	}
	return nil
}

// userinfo fetches the user's claims from Logto's userinfo endpoint.
func (p *provider) userinfo(parent context.Context, accessToken string) (_ map[string]any, err error) {
	md, _, err := p.discover(parent)
	if err != nil {
		return nil, err
	}
	if md.UserinfoEndpoint == "" {
		return nil, fmt.Errorf("%w: no userinfo endpoint", errUnavailable)
	}
	defer p.metrics.timeCall(callUserinfo, time.Now(), &err)
	ctx, cancel := context.WithTimeout(parent, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, md.UserinfoEndpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnavailable, err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := p.http.Do(req)
	p.noteAnswer(parent, err == nil)
	if err != nil {
		return nil, fmt.Errorf("%w: userinfo: %v", errUnavailable, scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return nil, fmt.Errorf("%w: userinfo: %v", errUnavailable, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, &TokenError{Status: resp.StatusCode, Code: "invalid_token", Description: "userinfo rejected the access token"}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: userinfo answered %s", errUnavailable, resp.Status)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("%w: userinfo answered something that is not JSON", errUnavailable)
	}
	return claims, nil
}

// endpointName names an endpoint in errors by its path only, so no query
// string (which could carry a token) reaches a log.
func endpointName(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil {
		return u.Path
	}
	return "endpoint"
}

// scrubURLError drops the URL from a *url.Error; the underlying cause stays.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// clients holds one client per distinct application config, shared by every
// logto handler of that config and kept across config reloads. Sharing is
// what makes refresh single-flight hold for the whole process: two routes of
// one site must not redeem the same refresh token twice.
var clients = caddy.NewUsagePool()

// clientConfig identifies a Logto application and its cookie keys.
type clientConfig struct {
	endpoint  string
	appID     string
	appSecret string
	secrets   [][]byte
}

func (c clientConfig) key() string {
	h := sha256.New()
	for _, s := range []string{c.endpoint, c.appID, c.appSecret} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	for _, s := range c.secrets {
		h.Write(s)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// client is the state shared by the handlers of one Logto application: the
// provider, the cookie codecs, the decoded-session cache, the live state of
// sessions (refreshes, tokens) and the back-channel logout list.
type client struct {
	idp      *provider
	sessions *Codec
	attempts *Codec
	users    *userCache
	live     *liveSessions
	revoked  *revocations
	blocks   appBlocks
	verified *verifiedTokens
	metrics  *appMetrics
	keyCache keyCache
	bearer   *bearerCache
	logger   *zap.Logger
	now      func() time.Time
	poolKey  string
	done     chan struct{} // closed by Destruct
	stopOnce sync.Once
	// lockWaitFor is refreshLockWait, or less in tests.
	lockWaitFor time.Duration

	// logoutSlots bounds the logout tokens this application verifies at
	// once (backchannelLogout).
	logoutSlots chan struct{}
}

// acquireClient returns the client of cfg. A bearer_only block has no
// sessions, so it attaches no storage: no logout list to follow, no keys to
// save (a client shared with a cookie block gets them from that block).
func acquireClient(ctx caddy.Context, cfg clientConfig, bearerOnly bool, poll time.Duration, logger *zap.Logger) (*client, error) {
	val, _, err := clients.LoadOrNew(cfg.key(), func() (caddy.Destructor, error) {
		return newClient(cfg, logger)
	})
	if err != nil {
		return nil, err
	}
	c := val.(*client)
	if !bearerOnly {
		c.revoked.attach(ctx, cfg.appID, poll)
	}
	return c, nil
}

func releaseClient(c *client) {
	// The pool calls Destruct when the last user lets go.
	_, _ = clients.Delete(c.key())
}

func newClient(cfg clientConfig, logger *zap.Logger) (*client, error) {
	// Keys are bound to the issuer and the application: a cookie sealed
	// for one application never opens in another that shares its
	// cookie_secret (another site of the tenant, another tenant).
	app := "\x00" + cfg.endpoint + "/oidc\x00" + cfg.appID
	sessions, err := NewCodec("session"+app, cfg.secrets...)
	if err != nil {
		return nil, err
	}
	attempts, err := NewCodec("sign-in"+app, cfg.secrets...)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 15 * time.Second}
	c := &client{
		idp:      newProvider(cfg.endpoint, cfg.appID, cfg.appSecret, hc),
		sessions: sessions,
		attempts: attempts,
		users:    newUserCache(maxCachedUsers),
		live:     newLiveSessions(),
		verified: newVerifiedTokens(maxVerifiedTokens),
		bearer:   newBearerCache(maxCachedBearer),
		logger:   logger,
		now:      time.Now,
		done:     make(chan struct{}),

		logoutSlots: make(chan struct{}, maxLogoutChecks),
	}
	c.revoked = newRevocations(logger)
	c.idp.onKeys = c.saveKeys
	c.poolKey = cfg.key()
	c.metrics = acquireAppMetrics(metricsApp(cfg))
	c.idp.metrics, c.revoked.metrics = c.metrics, c.metrics
	go c.sweeper()
	return c, nil
}

// Destruct stops the client's background work.
func (c *client) Destruct() error {
	c.revoked.stop()
	c.stopOnce.Do(func() { close(c.done) })
	c.metrics.release()
	return nil
}

func (c *client) key() string { return c.poolKey }

// maxCachedUsers bounds the decoded-session cache. A miss costs one cookie
// decryption, an inflate and the ID token's claims parsed (and, for a
// token this process has not verified, a signature check), so the bound
// trades memory for nothing worse.
const maxCachedUsers = 20000

// supersededGrace is how long a cookie value that a newer state of its
// session replaced (a refresh, an idle-tracking re-seal) stays in the
// decoded-session cache: requests the browser sent before the new cookie
// reached it still carry the old one. Later it costs what any cookie not
// cached costs, and is still answered with the session's newest state.
const supersededGrace = 10 * time.Second

// userCache maps sealed cookie values to decoded sessions so the hot path
// neither decrypts nor decodes a cookie it has seen. Every refresh and
// idle-tracking re-seal makes a new cookie value, so the cache keeps one
// value per session, its newest, and drops a replaced one supersededGrace
// after it was replaced: its size follows the sessions in use, not the
// refreshes made. Sessions no longer used leave with their live state
// (client.sweep).
type userCache struct {
	mu     sync.RWMutex
	max    int
	m      map[string]*user  // cookie value → its decoded session
	newest map[string]string // session id → the value of its newest state in m
	// retired are values a newer state replaced, oldest first, each to
	// be dropped at its time.
	retired []retiredValue
}

type retiredValue struct {
	value string
	at    int64 // unix seconds
}

func newUserCache(max int) *userCache {
	return &userCache{max: max, m: make(map[string]*user), newest: make(map[string]string)}
}

func (uc *userCache) get(cookie string) *user {
	uc.mu.RLock()
	u := uc.m[cookie]
	uc.mu.RUnlock()
	return u
}

// put caches u under its cookie value. When a newer state of the session
// is cached already, u's value is the one retired; otherwise the value u
// replaces is. It returns the ID token of the state retired when u does
// not carry it too (a refresh), which nothing needs verified any more.
func (uc *userCache) put(cookie string, u *user, now int64) (superseded string) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.dropRetired(now)
	if len(uc.m) >= uc.max {
		uc.evict()
	}
	uc.m[cookie] = u
	prev, ok := uc.newest[u.s.ID]
	pu := uc.m[prev]
	if !ok || prev == cookie || pu == nil {
		uc.newest[u.s.ID] = cookie
		return ""
	}
	old, cur := pu, u
	if newerState(pu, u) {
		// A cookie from before the newest state, seen after it.
		old, cur, prev = u, pu, cookie
	} else {
		uc.newest[u.s.ID] = cookie
	}
	uc.retired = append(uc.retired, retiredValue{value: prev, at: now + int64(supersededGrace/time.Second)})
	if old.s.IDToken != cur.s.IDToken {
		return old.s.IDToken
	}
	return ""
}

// newerState reports whether a is a later state of its session than b.
func newerState(a, b *user) bool {
	return a.s.Gen > b.s.Gen || a.s.Gen == b.s.Gen && a.s.Seen > b.s.Seen
}

// dropRetired drops the retired values whose time has come; the caller
// holds mu. Each value is handled once, so this is O(1) amortised per put.
func (uc *userCache) dropRetired(now int64) {
	i := 0
	for ; i < len(uc.retired) && uc.retired[i].at <= now; i++ {
		v := uc.retired[i].value
		if u := uc.m[v]; u != nil && uc.newest[u.s.ID] != v {
			delete(uc.m, v)
		}
	}
	clear(uc.retired[:i]) // let go of the values
	uc.retired = uc.retired[i:]
}

// evict drops an arbitrary tenth of a full cache (map iteration order is
// random enough); a dropped entry only costs one decode. The caller holds
// mu.
func (uc *userCache) evict() {
	for v, u := range uc.m {
		if len(uc.m) < uc.max-uc.max/10 {
			return
		}
		delete(uc.m, v)
		if uc.newest[u.s.ID] == v {
			delete(uc.newest, u.s.ID)
		}
	}
}

// sweep drops the retired values whose time has come and the sessions
// live does not know (any more), and returns the ID tokens of the newest
// states dropped.
func (uc *userCache) sweep(now int64, live func(id string) bool) (idTokens []string) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	uc.dropRetired(now)
	for v, u := range uc.m {
		if live(u.s.ID) {
			continue
		}
		delete(uc.m, v)
		if uc.newest[u.s.ID] == v {
			delete(uc.newest, u.s.ID)
			idTokens = append(idTokens, u.s.IDToken)
		}
	}
	return idTokens
}

func (uc *userCache) len() int {
	uc.mu.RLock()
	defer uc.mu.RUnlock()
	return len(uc.m)
}

// forgetSession drops the session's cached values: its newest, and those
// retired lately.
func (uc *userCache) forgetSession(id string) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if v, ok := uc.newest[id]; ok {
		delete(uc.m, v)
		delete(uc.newest, id)
	}
	for _, r := range uc.retired {
		if u := uc.m[r.value]; u != nil && u.s.ID == id {
			delete(uc.m, r.value)
		}
	}
}

// cacheUser caches u, decoded from or sealed to cookie, and forgets the ID
// token of a state it replaced.
func (c *client) cacheUser(cookie string, u *user) {
	if old := c.users.put(cookie, u, c.now().Unix()); old != "" {
		c.verified.remove(old)
	}
}

// sweepEvery is how often a client lets go of idle sessions.
const sweepEvery = time.Minute

// sweeper runs sweep every sweepEvery until the client is destroyed.
func (c *client) sweeper() {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.sweep()
		}
	}
}

// sweep drops what sessions unused for liveIdle left on this instance
// (their live state, decoded cookies and verified ID tokens), and access
// tokens that have expired. Memory then follows the sessions and tokens in
// use, also when nobody signs in to push old ones out.
func (c *client) sweep() {
	now := c.now().Unix()
	c.live.sweepIdle(now)
	for _, t := range c.users.sweep(now, c.live.has) {
		c.verified.remove(t)
	}
	c.bearer.sweep(now - int64(clockSkew/time.Second))
}

// makeRoom drops an arbitrary tenth of a bounded cache that is full. Map
// iteration order is random enough, and the caches it serves only hold what
// can be had again at the cost of one decode or signature check. The
// caller holds the cache's lock.
func makeRoom[K comparable, V any](m map[K]V, max int) {
	if len(m) < max {
		return
	}
	for k := range m {
		if len(m) < max-max/10 {
			return
		}
		delete(m, k)
	}
}

// refusalFields are Logto's own words for a refused grant, error and
// error_description, for the log line: without them "invalid_target"
// (a resource the sign-in did not ask for) looks like any other 403.
// Logto's OAuth errors carry no token or code, and both are already
// truncated (TokenError) and sanitised here.
func refusalFields(err error) []zap.Field {
	var te *TokenError
	if !errors.As(err, &te) {
		return []zap.Field{errField(err)}
	}
	return []zap.Field{
		zap.Int("status", te.Status),
		zap.String("error", truncate(sanitizeCode(te.Code), 64)),
		zap.String("error_description", sanitizeText(te.Description)),
	}
}

// sanitizeText keeps a description from Logto printable on one log line.
func sanitizeText(s string) string {
	b := []byte(truncate(s, 200))
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}
