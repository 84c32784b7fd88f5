package logto

import (
	"context"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

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
