package logto

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

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
