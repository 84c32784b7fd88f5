package logto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errSessionEnded means Logto no longer honours the session's grant
// (invalid_grant): the user has to sign in again.
var errSessionEnded = errors.New("logto: session ended by the identity provider")

// errTokenDenied means Logto refused a token for a resource or organization
// the user has no right to.
var errTokenDenied = errors.New("logto: token denied")

// isTokenRefusal reports whether Logto's answer to a resource or
// organization token request means "this user may not have this token":
// the grant lacks the resource or organization (invalid_target, which the
// step-up relies on), the user is not in the organization (access_denied),
// or the grant lacks the scope a token needs (insufficient_scope: an
// organization token without the organizations scope) or was asked for
// scopes it may not have (invalid_scope). Any other
// OAuth error (invalid_client, a 429 with a JSON body, ...) is Logto or
// this configuration failing, not the user.
func isTokenRefusal(te *TokenError) bool {
	if te.Status == http.StatusTooManyRequests {
		return false
	}
	switch te.Code {
	case "invalid_target", "access_denied", "insufficient_scope", "invalid_scope":
		return true
	}
	return false
}

// refreshRetry is how long a session waits before asking Logto again after
// Logto failed to answer a refresh; meanwhile the session keeps working on
// what it has.
const refreshRetry = 30 * time.Second

// liveIdle is how long the in-memory state of a session is kept after its
// last use.
const liveIdle = 30 * time.Minute

// maxLiveSessions bounds the in-memory session state before idle entries
// are swept.
const maxLiveSessions = 50000

// liveSession is the in-memory state of one session on this instance. Its
// mutex serialises every use of the session's refresh token, which is the
// point: Logto rotates refresh tokens and revokes the whole grant when a
// used one is presented again, so two requests must never redeem the same
// token. Requests that only read take no lock.
type liveSession struct {
	mu      sync.Mutex           // held while redeeming the refresh token
	cur     atomic.Pointer[user] // newest state known here
	used    atomic.Int64         // last use, unix seconds
	tokMu   sync.RWMutex
	tokens  map[tokenKey]accessToken
	info    map[string]any // userinfo claims
	infoGen int            // session generation the userinfo belongs to
	retryAt time.Time      // no refresh before this after a Logto failure
	// silent is whether that failure was Logto not answering at all (down,
	// restarting), which ends as soon as Logto answers again.
	silent bool
	// refusal is the answer of Logto's that started the back-off of a
	// route token, if Logto answered one (so the back-off answers as it).
	refusal *TokenError
	// access is the opaque access token of the last code exchange or
	// refresh (for userinfo), kept here rather than in the cookie; guarded
	// by mu.
	access    string
	accessExp int64
	// stepUpAt is when a navigation was last sent to sign in again because
	// Logto refused the route's resource (invalid_target), so a resource
	// Logto no longer knows costs one trip per stepUpWindow, not one per
	// navigation.
	stepUpAt atomic.Int64
}

type tokenKey struct{ resource, org string }

type accessToken struct {
	token  string
	scopes []string
	exp    int64
	renew  int64 // replaced from this time on, before it expires upstream
}

type liveSessions struct {
	mu sync.RWMutex
	m  map[string]*liveSession
}

func newLiveSessions() *liveSessions {
	return &liveSessions{m: make(map[string]*liveSession)}
}

// get returns the live state of session id, creating it.
func (l *liveSessions) get(id string, now int64) *liveSession {
	l.mu.RLock()
	ls := l.m[id]
	l.mu.RUnlock()
	if ls == nil {
		return l.add(id, now)
	}
	ls.used.Store(now)
	return ls
}

// add is get's slow path, apart so that the hot path's stack frame stays
// small.
//
//go:noinline
func (l *liveSessions) add(id string, now int64) *liveSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.m[id]
	if ls == nil {
		if len(l.m) >= maxLiveSessions {
			l.sweep(now)
		}
		ls = &liveSession{}
		l.m[id] = ls
	}
	ls.used.Store(now)
	return ls
}

func (l *liveSessions) sweep(now int64) {
	cutoff := now - int64(liveIdle/time.Second)
	for id, ls := range l.m {
		if ls.used.Load() < cutoff {
			delete(l.m, id)
		}
	}
}

// sweepIdle drops the state of sessions unused for liveIdle.
func (l *liveSessions) sweepIdle(now int64) {
	l.mu.Lock()
	l.sweep(now)
	l.mu.Unlock()
}

// has reports whether session id has live state here.
func (l *liveSessions) has(id string) bool {
	l.mu.RLock()
	_, ok := l.m[id]
	l.mu.RUnlock()
	return ok
}

func (l *liveSessions) forget(id string) {
	l.mu.Lock()
	delete(l.m, id)
	l.mu.Unlock()
}

// refreshMargin is how long before the ID token expires the session is
// refreshed: a minute, or a quarter of the token's lifetime if shorter.
func refreshMargin(u *user) int64 {
	m := int64(60)
	if iat, ok := u.claims["iat"]; ok {
		if n, err := numberClaim(iat); err == nil && u.idExp > n {
			if q := (u.idExp - n) / 4; q < m {
				m = q
			}
		}
	}
	return m
}

func needsRefresh(u *user, now int64) bool {
	return u.s.Refresh != "" && u.refreshAt != 0 && now >= u.refreshAt
}

// current returns the newest state of u's session, refreshing it through
// Logto when its ID token has expired. The result differs from u when the
// session changed; the caller then re-issues the cookie. When Logto cannot
// be reached the session carries on as it is and the refresh is retried
// later; only invalid_grant ends it.
func (c *client) current(ctx context.Context, u *user) (*user, error) {
	now := c.now().Unix()
	ls := c.live.get(u.s.ID, now)
	if cur := ls.cur.Load(); cur != nil && cur.s.Gen > u.s.Gen {
		u = cur
	}
	if !needsRefresh(u, now) {
		return u, nil
	}
	return c.refresh(ctx, ls, u, now)
}

// refresh is current's slow path, apart so that the hot path's stack frame
// stays small.
//
//go:noinline
func (c *client) refresh(ctx context.Context, ls *liveSession, u *user, now int64) (*user, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if cur := ls.cur.Load(); cur != nil && cur.s.Gen > u.s.Gen {
		u = cur
		if !needsRefresh(u, now) {
			c.metrics.refresh(refreshShared)
			return u, nil
		}
	}
	if c.backingOff(ctx, ls) {
		return u, nil
	}
	nu, _, err := c.redeem(ctx, ls, u, tokenKey{})
	if err != nil {
		if errors.Is(err, errSessionEnded) {
			return nil, err
		}
		c.backOff(ls)
		c.logger.Warn("refreshing the session failed; it goes on with its current claims",
			refusalFields(err)...)
		return u, nil
	}
	if needsRefresh(nu, c.now().Unix()) {
		// Logto answered but gave no ID token that verifies (keys
		// unreachable mid-rotation, say): back off like any failure
		// rather than refresh on every request.
		c.backOff(ls)
		c.logger.Warn("refresh brought no valid ID token; the session goes on with its current claims")
	}
	return nu, nil
}

// backOff leaves Logto alone for this session for refreshRetry after a
// failure, so a failing Logto is not asked again on every request. The
// caller holds ls.mu.
func (c *client) backOff(ls *liveSession) {
	ls.retryAt = c.now().Add(refreshRetry)
	ls.silent = c.idp.unanswered.Load() != 0
}

// backingOff is whether a recent failure still says to leave Logto alone.
// A failure Logto answered (an error page, a refusal) is waited out. One of
// Logto not answering ends as soon as Logto answers again (answering
// probes it at most every few seconds, one request at a time), so sessions
// do not each wait out their back-off after Logto is back: a soak with
// Logto restarting saw API routes fail for up to 30 s after it was up.
// The caller holds ls.mu.
func (c *client) backingOff(ctx context.Context, ls *liveSession) bool {
	if !c.now().Before(ls.retryAt) {
		return false
	}
	return !ls.silent || c.idp.answering(ctx) != nil
}

// errBackoff answers requests that need Logto while a recent failure says
// it is down, so they fail fast instead of queueing on the session.
var errBackoff = fmt.Errorf("%w: recent failure, retrying later", errUnavailable)

// redeem uses the session's refresh token once, for the ID token (empty key)
// or for a resource or organization token, and records the new state. The
// caller holds ls.mu.
func (c *client) redeem(ctx context.Context, ls *liveSession, u *user, key tokenKey) (*user, *tokenResponse, error) {
	// The refresh must complete even if the request that started it goes
	// away: Logto may have rotated the token already, and the new one must
	// not be lost.
	ctx = context.WithoutCancel(ctx)
	// ls.mu makes this instance redeem once; the lock makes the cluster
	// do so. Whoever waited on it finds the winner's result below.
	unlock, err := c.lockRedeem(ctx, u)
	if err != nil {
		c.metrics.refresh(refreshUnavailable)
		return nil, nil, err
	}
	defer unlock()
	adopted, err := c.adoptRotated(ctx, u)
	if err != nil {
		c.metrics.refresh(refreshUnavailable)
		return nil, nil, err
	}
	if adopted != nil {
		// Another instance rotated this token already: take its result
		// rather than present the old token and lose the grant.
		ls.cur.Store(adopted)
		u = adopted
		if key == (tokenKey{}) && !needsRefresh(u, c.now().Unix()) {
			c.metrics.refresh(refreshShared)
			return u, &tokenResponse{}, nil
		}
	}
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {u.s.Refresh},
	}
	if key.resource != "" {
		form.Set("resource", key.resource)
	}
	if key.org != "" {
		form.Set("organization_id", key.org)
	}
	tr, err := c.idp.token(ctx, form)
	if err != nil {
		var te *TokenError
		switch {
		case isInvalidGrant(err):
			c.logger.Info("Logto rejected the session's refresh token; the user signs in again",
				refusalFields(err)...)
			c.endSession(u.s.ID)
			// Remembered, so the dead cookie is not sent to Logto again on
			// every request that still carries it.
			c.revoked.add(ctx, revokeSession, u.s.ID, u.s.Expires)
			c.metrics.refresh(refreshInvalidGrant)
			return nil, nil, errSessionEnded
		case errors.As(err, &te) && (key.resource != "" || key.org != ""):
			if isTokenRefusal(te) {
				return nil, nil, fmt.Errorf("%w: %w", errTokenDenied, err)
			}
			// invalid_client, 429 and the like say nothing about the
			// user's rights: an upstream failure (502, with back-off),
			// not a 403 that sends every request to Logto again.
			c.metrics.refresh(refreshUnavailable)
			return nil, nil, fmt.Errorf("%w: %w", errUnavailable, err)
		}
		c.metrics.refresh(refreshUnavailable)
		return nil, nil, err
	}
	c.metrics.refresh(refreshRefreshed)

	s := u.s
	changed := false
	if tr.RefreshToken != "" && tr.RefreshToken != s.Refresh {
		s.Refresh = tr.RefreshToken // rotated: the old one is now poison
		changed = true
	}
	if tr.IDToken != "" {
		if _, verifier, err := c.idp.discover(ctx); err == nil {
			if tok, err := verifier.Verify(ctx, tr.IDToken); err == nil && tok.Subject == u.sub {
				s.IDToken = tr.IDToken
				c.verified.add(tr.IDToken)
				changed = true
			} else if err == nil {
				c.logger.Error("refreshed ID token is for another user; ignoring it")
			} else {
				c.logger.Error("refreshed ID token failed verification; ignoring it", errField(err))
			}
		}
	}
	if key == (tokenKey{}) && tr.AccessToken != "" {
		ls.access, ls.accessExp = tr.AccessToken, expiry(c.now(), tr.ExpiresIn)
	}
	nu := u
	if changed {
		s.Gen++
		var err error
		if nu, err = newUser(s); err != nil {
			return nil, nil, err
		}
		nu.cookie = c.sessions.Seal(sessionAAD, nu.encode())
		c.cacheUser(nu.cookie, nu)
		ls.cur.Store(nu)
		// Handed over also when Logto kept the token (a confidential
		// client's, until 70 % of its lifetime): an instance that waited
		// on the lock takes this state rather than redeem it again.
		c.publishRotated(ctx, u.s.Refresh, nu)
	}
	return nu, tr, nil
}

func expiry(now time.Time, expiresIn int64) int64 {
	if expiresIn <= 0 {
		expiresIn = 3600
	}
	return now.Unix() + expiresIn
}

// accessTokenFor returns an access token for an API resource, an
// organization, or a resource within an organization, reusing a cached one
// until shortly before it expires. The user returned is the session's newest
// state (a refresh may rotate the refresh token).
func (c *client) accessTokenFor(ctx context.Context, u *user, key tokenKey) (accessToken, *user, error) {
	now := c.now().Unix()
	ls := c.live.get(u.s.ID, now)
	if at, ok := ls.token(key, now); ok {
		return at, u, nil
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if cur := ls.cur.Load(); cur != nil && cur.s.Gen > u.s.Gen {
		u = cur
	}
	if at, ok := ls.token(key, now); ok {
		c.metrics.refresh(refreshShared)
		return at, u, nil
	}
	if c.backingOff(ctx, ls) {
		if ls.refusal != nil {
			// Logto refused the app (invalid_client, 429...): still that.
			return accessToken{}, u, fmt.Errorf("%w: %w", errBackoff, ls.refusal)
		}
		return accessToken{}, u, errBackoff
	}
	nu, tr, err := c.redeem(ctx, ls, u, key)
	if err != nil {
		if !errors.Is(err, errSessionEnded) && !errors.Is(err, errTokenDenied) {
			c.backOff(ls)
			ls.refusal = nil
			errors.As(err, &ls.refusal)
		}
		return accessToken{}, u, err
	}
	at := accessToken{token: tr.AccessToken, exp: expiry(c.now(), tr.ExpiresIn)}
	// Renew a little before expiry: tokenMargin, or a quarter of a short
	// token's lifetime.
	margin := min(int64(tokenMargin), (at.exp-c.now().Unix())/4)
	at.renew = at.exp - margin
	if claims, err := jwtClaims(tr.AccessToken); err == nil {
		if s, ok := claims["scope"].(string); ok {
			at.scopes = strings.Fields(s)
		}
	} else if tr.Scope != "" {
		at.scopes = strings.Fields(tr.Scope)
	}
	ls.tokMu.Lock()
	if ls.tokens == nil {
		ls.tokens = make(map[tokenKey]accessToken)
	}
	ls.tokens[key] = at
	ls.tokMu.Unlock()
	return at, nu, nil
}

// tokenMargin: a cached access token is replaced this long before it
// expires, so it does not expire on its way upstream.
const tokenMargin = 30

func (ls *liveSession) token(key tokenKey, now int64) (accessToken, bool) {
	ls.tokMu.RLock()
	at, ok := ls.tokens[key]
	ls.tokMu.RUnlock()
	return at, ok && now < at.renew
}

// endSession forgets everything this instance holds about a session.
func (c *client) endSession(id string) {
	c.live.forget(id)
	c.users.forgetSession(id)
}

// handoffTTL is how long a rotated session state is kept in storage for
// other instances: long enough for every browser tab and instance holding
// the pre-rotation cookie to come back once.
const handoffTTL = 10 * time.Minute

// Rotation handoff. When Logto rotates a session's refresh token, the old
// token is poison: presenting it again (after Logto's 3 s grace) revokes the
// whole grant. Within one instance the live session state takes care of
// that. Across instances that share Caddy's storage, the instance that
// redeemed writes the new state, sealed, under a key derived from the
// token it redeemed; another instance about to redeem that token looks
// there first and adopts the new state instead. Both happen under a lock
// in storage (lockRedeem), so two instances refreshing one session at once
// (a page and its API calls, round-robined) redeem once: the second finds
// the first one's state. The cost is a lock, a read and a write in storage
// per refresh, which happens about once an hour per active session.

func (c *client) handoffKey(refresh string) string {
	sum := sha256.Sum256([]byte("caddy-logto rotation\x00" + refresh))
	return c.revoked.storagePrefix() + "/rotated/" + hex.EncodeToString(sum[:16])
}

// refreshLockWait bounds how long a redemption waits for another
// instance's redemption of the same session: long enough for Logto to
// answer one, short enough that a request does not hang on an instance
// that died holding the lock (storage frees it after its own timeout).
const refreshLockWait = 5 * time.Second

// errRefreshBusy: another instance held the session's lock for longer
// than refreshLockWait. Redeeming anyway could present a token it is
// rotating, so the refresh waits as when Logto is unreachable.
var errRefreshBusy = fmt.Errorf("%w: another instance is redeeming the session's refresh token", errUnavailable)

// refreshLockName names the lock on redeeming a session's refresh token.
// It is keyed by the session, not the token: the token changes when a
// redemption rotates it, and a waiter that adopts the rotated state and
// must redeem again (a resource token) still holds the right lock. Like
// every storage key, it is a hash.
func (c *client) refreshLockName(sessionID string) string {
	sum := sha256.Sum256([]byte("caddy-logto refresh lock\x00" + sessionID))
	return c.revoked.storagePrefix() + "/refreshing/" + hex.EncodeToString(sum[:16])
}

func (c *client) lockWait() time.Duration {
	if c.lockWaitFor > 0 {
		return c.lockWaitFor
	}
	return refreshLockWait
}

// lockRedeem takes the cluster-wide lock on redeeming u's refresh token
// and returns its release. Without storage there is no one to share with.
// When the lock cannot be had (storage down, or held past
// refreshLockWait), the redemption does not happen: the session goes on
// with what it has and the refresh is tried again later, as in any
// storage outage.
func (c *client) lockRedeem(ctx context.Context, u *user) (unlock func(), err error) {
	st := c.revoked.storageBackend()
	if st == nil || u.s.Refresh == "" {
		return func() {}, nil
	}
	name := c.refreshLockName(u.s.ID)
	wait, cancel := context.WithTimeout(ctx, c.lockWait())
	defer cancel()
	if err := st.Lock(wait, name); err != nil {
		if wait.Err() != nil {
			c.logger.Warn("another instance held the session's refresh lock too long; the refresh waits", errField(err))
			return nil, errRefreshBusy
		}
		c.logger.Warn("cannot take the session's refresh lock in storage; the refresh waits", errField(err))
		return nil, errStorageUnavailable
	}
	return func() {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := st.Unlock(ctx, name); err != nil {
			c.logger.Warn("cannot release the session's refresh lock; storage frees it when it times out", errField(err))
		}
	}, nil
}

// maxHandoffHops bounds how many rotations adoptRotated follows: a cookie
// that missed several rotations (a tab left open while other instances
// refreshed) is mapped to the newest state, not the next one, whose token
// was rotated away too.
const maxHandoffHops = 16

// errStorageUnavailable: storage could not say whether another instance
// rotated the session's refresh token. Presenting the token anyway could
// make Logto revoke the whole grant, so the refresh waits, as when Logto
// itself is unreachable.
var errStorageUnavailable = fmt.Errorf("%w: storage unreachable, cannot check for a rotated refresh token", errUnavailable)

// adoptRotated returns the newest state other instances stored for u's
// refresh token (rotated or kept), or nil when none is newer than u.
func (c *client) adoptRotated(ctx context.Context, u *user) (*user, error) {
	st := c.revoked.storageBackend()
	if st == nil || u.s.Refresh == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var adopted *user
	for range maxHandoffHops {
		b, err := st.Load(ctx, c.handoffKey(u.s.Refresh))
		if err != nil {
			if isNotExist(err) {
				break
			}
			c.logger.Warn("cannot read rotated refresh tokens from storage; the session's refresh waits", errField(err))
			return nil, errStorageUnavailable
		}
		plain, err := c.sessions.Open(handoffAAD, string(b))
		if err != nil {
			break
		}
		nu, err := decodeUser(plain)
		if err != nil || nu.s.ID != u.s.ID || nu.s.Gen <= u.s.Gen {
			break
		}
		// Storage is not the cookie, but the same rule holds: the key alone
		// must not be enough to hand a session another identity.
		if nu.sub != u.sub || c.verifyStored(ctx, nu.s.IDToken) != nil {
			break
		}
		kept := nu.s.Refresh == u.s.Refresh
		adopted, u = nu, nu
		if kept {
			break // refreshed with the token Logto kept: the newest there is
		}
	}
	if adopted == nil {
		return nil, nil
	}
	adopted.cookie = c.sessions.Seal(sessionAAD, adopted.encode())
	c.cacheUser(adopted.cookie, adopted)
	return adopted, nil
}

// publishRotated stores the state that a redemption of oldRefresh gave. A
// write that fails is retried on every poll of the logout list until it
// lands.
func (c *client) publishRotated(ctx context.Context, oldRefresh string, nu *user) {
	st := c.revoked.storageBackend()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	sealed := c.sessions.Seal(handoffAAD, nu.encode())
	if err := c.revoked.storeOrRetry(ctx, st, c.handoffKey(oldRefresh), []byte(sealed), c.now().Add(handoffTTL)); err != nil {
		c.logger.Warn("cannot share a rotated refresh token through storage yet; retrying until it lands", errField(err))
	}
}

// handoffAAD binds sealed handoff records to their purpose.
const handoffAAD = "rotation handoff"

// userinfo returns the user's claims from Logto's userinfo endpoint, cached
// for the session until its next refresh. It is used when a rule needs a
// claim the ID token does not carry (a tenant without extended ID token
// claims).
func (c *client) userinfo(ctx context.Context, u *user) (map[string]any, *user, error) {
	now := c.now().Unix()
	ls := c.live.get(u.s.ID, now)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if cur := ls.cur.Load(); cur != nil && cur.s.Gen > u.s.Gen {
		u = cur
	}
	if ls.info != nil && ls.infoGen == u.s.Gen {
		return ls.info, u, nil
	}
	if c.backingOff(ctx, ls) {
		return nil, u, errBackoff
	}
	if ls.access == "" && u.s.Access != "" {
		// Signed in on another instance, or before a restart, without a
		// refresh token: the cookie brings the access token.
		ls.access, ls.accessExp = u.s.Access, u.s.AccessExp
	}
	// Twice at most: a state adopted from another instance's rotation
	// brings no access token, so the adopted refresh token is redeemed
	// once more.
	for range 2 {
		if (ls.access != "" && now < ls.accessExp-tokenMargin) || u.s.Refresh == "" {
			break
		}
		nu, _, err := c.redeem(ctx, ls, u, tokenKey{})
		if err != nil {
			if !errors.Is(err, errSessionEnded) {
				c.backOff(ls)
			}
			return nil, u, err
		}
		u = nu
	}
	if ls.access == "" || now >= ls.accessExp {
		if u.s.Refresh == "" {
			// Its token expired (the session ends with its ID token,
			// about then), and nothing to get another with.
			return nil, u, errNoAccessToken
		}
		return nil, u, errUnavailable
	}
	info, err := c.idp.userinfo(ctx, ls.access)
	if err != nil {
		c.backOff(ls)
		return nil, u, err
	}
	if sub, _ := info["sub"].(string); sub != u.sub {
		return nil, u, errUnavailable
	}
	ls.info, ls.infoGen = info, u.s.Gen
	return info, u, nil
}

// errNoAccessToken: a session without a refresh token has no access token
// for userinfo on this instance and no way to get one; only signing in again
// gives it one.
var errNoAccessToken = errors.New("logto: no access token for userinfo and no refresh token to get one")
