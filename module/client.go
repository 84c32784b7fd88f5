package logto

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

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
	keyCache keyCache
	bearer   *bearerCache
	logger   *zap.Logger
	now      func() time.Time
	poolKey  string
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
	}
	c.revoked = newRevocations(logger)
	c.idp.onKeys = c.saveKeys
	c.poolKey = cfg.key()
	return c, nil
}

// Destruct stops the client's background work.
func (c *client) Destruct() error {
	c.revoked.stop()
	return nil
}

func (c *client) key() string { return c.poolKey }

// maxCachedUsers bounds the decoded-session cache. A miss costs one cookie
// decryption, an inflate and the ID token's claims parsed (and, for a
// token this process has not verified, a signature check), so the bound
// trades memory for nothing worse.
const maxCachedUsers = 20000

// userCache maps sealed cookie values to decoded sessions so the hot path
// neither decrypts nor decodes a cookie it has seen.
type userCache struct {
	mu  sync.RWMutex
	max int
	m   map[string]*user
}

func newUserCache(max int) *userCache {
	return &userCache{max: max, m: make(map[string]*user)}
}

func (uc *userCache) get(cookie string) *user {
	uc.mu.RLock()
	u := uc.m[cookie]
	uc.mu.RUnlock()
	return u
}

func (uc *userCache) put(cookie string, u *user) {
	uc.mu.Lock()
	// A dropped entry only costs one decode.
	makeRoom(uc.m, uc.max)
	uc.m[cookie] = u
	uc.mu.Unlock()
}

func (uc *userCache) forgetSession(id string) {
	uc.mu.Lock()
	for k, u := range uc.m {
		if u.s.ID == id {
			delete(uc.m, k)
		}
	}
	uc.mu.Unlock()
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
