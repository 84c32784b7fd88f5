package logto

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// appBlocks is what the logto blocks of one application must know of each
// other. Several blocks may see one request (a site-wide block, a stricter
// one for /admin), and the first to see it does work on behalf of all:
// it tracks the session's activity for the strictest idle_timeout, and
// removes the client's copy of every identity header any block sets, so
// that no error path (a flow endpoint's 401, a 401 of the first block) takes
// one on to handle_errors.
type appBlocks struct {
	mu     sync.Mutex
	blocks map[*Handler]bool

	// Read on every request, without locks.
	minIdle atomic.Int64             // shortest idle_timeout of the blocks, seconds; 0: none
	headers atomic.Pointer[[]string] // identity header names, Logto-ID-Token included

	// The most lenient limits of the blocks, seconds: past them a session
	// has ended for every block. maxIdle is 0 when some block has no
	// idle_timeout.
	maxIdle, maxLifetime atomic.Int64
}

// join registers h's idle timeout and headers with its application.
func (a *appBlocks) join(h *Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.blocks == nil {
		a.blocks = map[*Handler]bool{}
	}
	a.blocks[h] = true
	a.recompute()
}

// leave forgets h (its config was unloaded).
func (a *appBlocks) leave(h *Handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.blocks, h)
	a.recompute()
}

// recompute derives what requests read; the caller holds a.mu.
func (a *appBlocks) recompute() {
	var idle, maxIdle, lifetime int64
	unlimited := false // some block has no idle_timeout
	names := []string{idTokenHeader}
	for h := range a.blocks {
		s := int64(time.Duration(h.IdleTimeout) / time.Second)
		if s > 0 && (idle == 0 || s < idle) {
			idle = s
		}
		unlimited = unlimited || s <= 0
		maxIdle = max(maxIdle, s)
		lifetime = max(lifetime, int64(time.Duration(h.SessionLifetime)/time.Second))
		for _, f := range h.headerUp {
			if !slices.Contains(names, f.name) {
				names = append(names, f.name)
			}
		}
	}
	if unlimited {
		maxIdle = 0
	}
	a.minIdle.Store(idle)
	a.maxIdle.Store(maxIdle)
	a.maxLifetime.Store(lifetime)
	a.headers.Store(&names)
}

// stripIdentity removes the client's copy of every identity header of the
// application, keeping those an earlier logto handler of this request set
// (st may be nil: none did).
func (h *Handler) stripIdentity(r *http.Request, st *requestState) {
	names := h.client.blocks.headers.Load()
	if names == nil {
		r.Header.Del(idTokenHeader)
		return
	}
	for _, name := range *names {
		if st == nil || !st.headers.has(name) {
			r.Header.Del(name)
		}
	}
}
