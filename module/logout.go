package logto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// revokeKind says what a revocation names.
type revokeKind string

const (
	revokeSession revokeKind = "session" // our session id (sign-out)
	revokeSub     revokeKind = "sub"     // every session of a user created before the logout
	revokeSID     revokeKind = "sid"     // every session bound to Logto's session id
	// revokeSubNoSID: the user's sessions created before the logout whose ID
	// token names no sid. A logout token with both sid and sub ends those
	// too, since no sid can ever match them.
	revokeSubNoSID revokeKind = "sub-without-sid"
)

// revocation is one entry of the logout list, as kept in Caddy's storage.
type revocation struct {
	Kind  revokeKind `json:"kind"`
	Value string     `json:"value"`
	At    int64      `json:"at"`    // unix ms; sessions created at or before this are ended
	Until int64      `json:"until"` // after this no session it names can exist
}

// revSet is the logout list in memory. The gate reads it on every request
// without a lock (sync.Map reads take none); adding an entry costs
// O(log n) whatever the list's length, so a sign-out or back-channel logout
// costs the same with a long list as with a short one. Expired entries
// are swept on every poll of storage.
type revSet struct {
	n                    atomic.Int64 // entries, so an empty list costs one load
	sessions, subs, sids sync.Map     // value → revEntry
}

// revEntry: sessions created at or before at (unix ms) are ended, and for
// a user (subs) also those created at or before noSID whose ID token has no
// sid; the entry is dropped after until (unix s), when no session it names
// can exist.
type revEntry struct{ at, noSID, until int64 }

func (s *revSet) empty() bool { return s.n.Load() == 0 }

func (s *revSet) len() int { return int(s.n.Load()) }

// of is the map that holds entries of kind k.
func (s *revSet) of(k revokeKind) *sync.Map {
	switch k {
	case revokeSession:
		return &s.sessions
	case revokeSub, revokeSubNoSID:
		return &s.subs
	case revokeSID:
		return &s.sids
	}
	return nil
}

// revocations is the logout list: ended sessions (sign-out) and back-channel
// logouts. It lives in Caddy's configured storage so every instance sharing
// that storage (a cluster) honours a logout any of them received, and in
// memory for the hot path.
type revocations struct {
	logger *zap.Logger
	set    revSet

	// store is where the list lives in Caddy's storage. Refreshes read it
	// (rotation handoffs) and must never wait for mu, which is held while a
	// big list is rebuilt.
	store atomic.Pointer[revStore]

	mu      sync.Mutex      // guards what follows, and serialises merges
	known   map[string]bool // storage keys already loaded
	poll    time.Duration
	stopped chan struct{}
	started bool
	jtis    map[string]int64 // logout token ids seen, until they expire
	pending []pendingWrite   // failed storage writes, retried on every poll

	metrics *appMetrics // the application's: the list's size
}

// revStore is the storage an application's logout list lives in.
type revStore struct {
	storage certmagic.Storage
	base    string // this application's storage folder
	prefix  string // its logout list
}

func newRevocations(logger *zap.Logger) *revocations {
	return &revocations{logger: logger, known: map[string]bool{}, jtis: map[string]int64{}, stopped: make(chan struct{})}
}

// attach points the list at Caddy's storage and starts following it.
func (rv *revocations) attach(ctx caddy.Context, appID string, poll time.Duration) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	sum := sha256.Sum256([]byte(appID))
	base := "logto/" + hex.EncodeToString(sum[:8])
	st := storageOf(ctx)
	rv.store.Store(&revStore{storage: st, base: base, prefix: base + "/revoked"})
	if poll > 0 && (rv.poll == 0 || poll < rv.poll) {
		rv.poll = poll
	}
	if !rv.started && st != nil {
		rv.started = true
		go rv.follow()
	}
}

func (rv *revocations) storageBackend() certmagic.Storage {
	if s := rv.store.Load(); s != nil {
		return s.storage
	}
	return nil
}

func (rv *revocations) storagePrefix() string {
	if s := rv.store.Load(); s != nil {
		return s.base
	}
	return ""
}

// where returns the storage, the application's folder and its logout list.
func (rv *revocations) where() (certmagic.Storage, string, string) {
	if s := rv.store.Load(); s != nil {
		return s.storage, s.base, s.prefix
	}
	return nil, "", ""
}

func (rv *revocations) stop() {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	select {
	case <-rv.stopped:
	default:
		close(rv.stopped)
	}
}

func (rv *revocations) follow() {
	for {
		rv.load()
		rv.mu.Lock()
		poll := rv.poll
		rv.mu.Unlock()
		select {
		case <-rv.stopped:
			return
		case <-time.After(poll):
		}
	}
}

// load reads entries other instances stored and drops expired ones.
func (rv *revocations) load() {
	st, _, prefix := rv.where()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rv.retryPending(ctx, st)
	keys, err := st.List(ctx, prefix, false)
	if err != nil {
		if !isNotExist(err) {
			rv.logger.Warn("cannot read the logout list from storage", errField(err))
		}
		return
	}
	now := time.Now().Unix()
	var fresh []revocation
	listed := make(map[string]bool, len(keys))
	for _, k := range keys {
		listed[k] = true
	}
	rv.mu.Lock()
	for k := range rv.known {
		if !listed[k] {
			delete(rv.known, k) // deleted by whoever swept it
		}
	}
	rv.mu.Unlock()
	for _, k := range keys {
		rv.mu.Lock()
		seen := rv.known[k]
		rv.mu.Unlock()
		if seen {
			continue
		}
		b, err := st.Load(ctx, k)
		if err != nil {
			continue
		}
		var e revocation
		if json.Unmarshal(b, &e) != nil {
			continue
		}
		if e.Until < now {
			_ = st.Delete(ctx, k)
			continue
		}
		rv.mu.Lock()
		rv.known[k] = true
		rv.mu.Unlock()
		fresh = append(fresh, e)
	}
	rv.merge(fresh...)
	rv.sweep(now)
	rv.sweepHandoffs(ctx, st)
}

// sweep drops the entries past their time from memory.
func (rv *revocations) sweep(now int64) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, m := range []*sync.Map{&rv.set.sessions, &rv.set.subs, &rv.set.sids} {
		m.Range(func(k, v any) bool {
			if v.(revEntry).until < now {
				m.Delete(k)
				rv.set.n.Add(-1)
			}
			return true
		})
	}
	rv.metrics.setRevoked(&rv.set)
}

// sweepHandoffs deletes rotation handoff and logout token id records past
// their use.
func (rv *revocations) sweepHandoffs(ctx context.Context, st certmagic.Storage) {
	_, base, _ := rv.where()
	for dir, ttl := range map[string]time.Duration{
		base + "/rotated":    handoffTTL,
		base + "/logout-jti": maxLogoutTokenAge + 2*time.Minute,
	} {
		keys, err := st.List(ctx, dir, false)
		if err != nil {
			continue
		}
		for _, k := range keys {
			if info, err := st.Stat(ctx, k); err == nil && time.Since(info.Modified) > ttl {
				_ = st.Delete(ctx, k)
			}
		}
	}
}

func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist)
}

// merge adds entries to the in-memory list and reports whether one of
// them was new or later than what the list held (for one entry: whether
// to store it). A session ends once: one already on the list is not added
// again. mu serialises merges (each entry is read, then written); the gate
// reads without waiting for it.
func (rv *revocations) merge(entries ...revocation) (added bool) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for _, e := range entries {
		m := rv.set.of(e.Kind)
		if m == nil {
			continue
		}
		var cur revEntry
		v, found := m.Load(e.Value)
		if found {
			cur = v.(revEntry)
		}
		switch {
		case found && e.Kind == revokeSession:
			continue
		case e.Kind == revokeSubNoSID && e.At > cur.noSID:
			cur.noSID = e.At
		case e.Kind != revokeSubNoSID && e.At > cur.at:
			cur.at = e.At
		default:
			continue
		}
		cur.until = max(e.Until, cur.until)
		m.Store(e.Value, cur)
		if !found {
			rv.set.n.Add(1)
		}
		added = true
	}
	rv.metrics.setRevoked(&rv.set)
	return added
}

// add records a logout here at once and in storage for the other instances.
// A session already on the list is not added again: repeated sign-outs of
// one cookie must not grow the list, in memory or in storage.
func (rv *revocations) add(ctx context.Context, kind revokeKind, value string, until int64) {
	if value == "" {
		return
	}
	e := revocation{Kind: kind, Value: value, At: time.Now().UnixMilli(), Until: until}
	if !rv.merge(e) {
		return
	}
	st, _, prefix := rv.where()
	if st == nil {
		return
	}
	// One key per logout, not per user: a second logout of the same user
	// must reach instances that loaded the first.
	sum := sha256.Sum256([]byte(string(kind) + "\x00" + value + "\x00" + strconv.FormatInt(e.At, 10)))
	key := prefix + "/" + hex.EncodeToString(sum[:16])
	b, _ := json.Marshal(e)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rv.storeOrRetry(ctx, st, key, b, time.Unix(until, 0)); err != nil {
		rv.logger.Error("cannot write the logout list to storage; other instances will see this logout once a retry lands", errField(err))
		return
	}
	rv.mu.Lock()
	rv.known[key] = true
	rv.mu.Unlock()
}

// has reports whether u's session is on the logout list. It is on the hot
// path: one atomic load and, when the list is not empty, three map reads.
func (rv *revocations) has(u *user) bool {
	s := &rv.set
	if s.empty() {
		return false
	}
	if _, ok := s.sessions.Load(u.s.ID); ok {
		return true
	}
	if v, ok := s.subs.Load(u.sub); ok {
		if e := v.(revEntry); u.s.Created <= e.at || u.sid == "" && u.s.Created <= e.noSID {
			return true
		}
	}
	if u.sid != "" {
		if v, ok := s.sids.Load(u.sid); ok && u.s.Created <= v.(revEntry).at {
			return true
		}
	}
	return false
}

// seenJTI records a logout token id and reports whether it was seen
// before, here or (through storage) by another instance: a logout token
// replayed to another instance of the cluster must not end the sessions the
// user started since.
func (rv *revocations) seenJTI(ctx context.Context, jti string, until int64) bool {
	rv.mu.Lock()
	now := time.Now().Unix()
	for k, exp := range rv.jtis {
		if exp < now {
			delete(rv.jtis, k)
		}
	}
	if _, ok := rv.jtis[jti]; ok {
		rv.mu.Unlock()
		return true
	}
	rv.jtis[jti] = until
	rv.mu.Unlock()
	st, base, _ := rv.where()
	if st == nil {
		return false
	}
	sum := sha256.Sum256([]byte("jti\x00" + jti))
	key := base + "/logout-jti/" + hex.EncodeToString(sum[:16])
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st.Exists(ctx, key) {
		return true
	}
	if err := rv.storeOrRetry(ctx, st, key, []byte(strconv.FormatInt(until, 10)), time.Unix(until, 0)); err != nil {
		rv.logger.Warn("cannot record a logout token id in storage yet; other instances could accept a replay until a retry lands", errField(err))
	}
	return false
}

// storageOf is Caddy's configured storage, or nil for a context without a
// config (a handler provisioned outside a running Caddy, as in tests).
func storageOf(ctx caddy.Context) (st certmagic.Storage) {
	defer func() {
		if recover() != nil {
			st = nil
		}
	}()
	return ctx.Storage()
}

// backchannelEvent is the event a logout token must carry (OpenID Connect
// Back-Channel Logout 1.0, section 2.4).
const backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"

// maxLogoutTokenAge bounds how old (by iat) a logout token may be.
const maxLogoutTokenAge = 5 * time.Minute

// Bounds of the back-channel endpoint's input. Logto's logout tokens are
// under 1 KiB; the body is a form with that one field.
const (
	maxLogoutBody  = 8 << 10
	maxLogoutToken = 4 << 10
)

// maxLogoutChecks is how many logout tokens an application verifies at
// once. Each application has its own slots (client.logoutSlots), so a
// flood aimed at one cannot hold up the logouts of another.
const maxLogoutChecks = 2

// backchannelLogout receives Logto's logout token and ends the sessions it
// names, here and, through storage, on every instance.
func (h *Handler) backchannelLogout(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, maxLogoutBody)
	if err := r.ParseForm(); err != nil {
		return h.badLogout("body is not a form")
	}
	token := r.PostForm.Get("logout_token")
	if token == "" || len(token) > maxLogoutToken {
		return h.badLogout("no logout_token")
	}
	// Anyone may post here: at most a few tokens are checked at a time, so
	// a flood of forgeries (each costs a signature check when it names the
	// tenant's kid) takes a bounded share of the CPU. The others wait.
	slots := h.client.logoutSlots
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	case <-r.Context().Done():
		return caddyhttp.Error(http.StatusServiceUnavailable, r.Context().Err())
	}
	_, _, err := h.client.idp.discover(r.Context())
	if err != nil {
		return caddyhttp.Error(http.StatusBadGateway, err)
	}
	verifier := h.client.idp.logoutVerifier()
	idt, err := verifier.Verify(r.Context(), token)
	if err != nil {
		return h.badLogout("signature, issuer or audience does not verify")
	}
	var claims struct {
		Sub    string                     `json:"sub"`
		SID    string                     `json:"sid"`
		JTI    string                     `json:"jti"`
		IAT    int64                      `json:"iat"`
		Nonce  *string                    `json:"nonce"`
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := idt.Claims(&claims); err != nil {
		return h.badLogout("claims do not parse")
	}
	now := h.client.now()
	switch {
	case claims.Events == nil || claims.Events[backchannelEvent] == nil:
		return h.badLogout("no back-channel logout event")
	case claims.Nonce != nil:
		// A logout token must not be mistakable for an ID token.
		return h.badLogout("has a nonce")
	case claims.Sub == "" && claims.SID == "":
		return h.badLogout("names neither sub nor sid")
	case claims.JTI == "":
		return h.badLogout("has no jti")
	case claims.IAT == 0 || now.Sub(time.Unix(claims.IAT, 0)) > maxLogoutTokenAge || time.Unix(claims.IAT, 0).Sub(now) > clockSkew:
		return h.badLogout("iat is missing or out of range")
	}
	ctx := context.WithoutCancel(r.Context())
	if h.client.revoked.seenJTI(ctx, claims.JTI, claims.IAT+int64(maxLogoutTokenAge/time.Second)+60) {
		return h.badLogout("replayed")
	}
	until := now.Unix() + int64(time.Duration(h.SessionLifetime).Seconds())
	if claims.SID != "" {
		h.client.revoked.add(ctx, revokeSID, claims.SID, until)
	}
	switch {
	case claims.Sub != "" && claims.SID == "":
		h.client.revoked.add(ctx, revokeSub, claims.Sub, until)
	case claims.Sub != "":
		h.client.revoked.add(ctx, revokeSubNoSID, claims.Sub, until)
	}
	h.logger.Info("back-channel logout received", zap.String("user_id", claims.Sub), zap.Bool("sid", claims.SID != ""))
	h.client.metrics.logout(logoutAccepted)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (h *Handler) badLogout(reason string) error {
	h.logger.Warn("back-channel logout rejected", zap.String("reason", reason))
	h.client.metrics.logout(logoutRejected)
	return caddyhttp.Error(http.StatusBadRequest, errors.New("logto: invalid logout token: "+reason))
}

// Writes to Caddy's storage that failed (a Redis restart, a network
// partition) are kept here and retried on every poll of the logout list,
// in order, until they land or stop mattering. Without this, a logout
// received while storage was down ended the session on one instance only,
// and a rotation made then was never handed to the others, whose next
// refresh presented the dead token and made Logto revoke the user's grant.

// maxPending bounds the writes kept for retry: past it, new failures are
// dropped (and logged) rather than letting a long outage grow memory
// without limit.
const maxPending = 10000

type pendingWrite struct {
	key   string
	value []byte
	until time.Time // pointless to write after this
}

// storeOrRetry writes value under key, or queues it for the next polls.
func (rv *revocations) storeOrRetry(ctx context.Context, st certmagic.Storage, key string, value []byte, until time.Time) error {
	err := st.Store(ctx, key, value)
	if err == nil {
		return nil
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if len(rv.pending) >= maxPending {
		rv.logger.Error("too many storage writes waiting for retry; dropping one", errField(err))
		return err
	}
	rv.pending = append(rv.pending, pendingWrite{key: key, value: value, until: until})
	return err
}

// retryPending writes what failed before, oldest first, and stops at the
// first failure: storage is still down, the rest waits for the next poll.
func (rv *revocations) retryPending(ctx context.Context, st certmagic.Storage) {
	rv.mu.Lock()
	queue := rv.pending
	rv.pending = nil
	rv.mu.Unlock()
	if len(queue) == 0 {
		return
	}
	now := time.Now()
	done := 0
	for done < len(queue) {
		p := queue[done]
		if p.until.After(now) && st.Store(ctx, p.key, p.value) != nil {
			break
		}
		done++
	}
	rv.mu.Lock()
	rv.pending = append(queue[done:len(queue):len(queue)], rv.pending...)
	left := len(rv.pending)
	rv.mu.Unlock()
	if done > 0 {
		rv.logger.Info("storage writes delayed by an outage have landed", zap.Int("handled", done), zap.Int("waiting", left))
	}
}
