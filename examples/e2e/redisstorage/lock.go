package redisstorage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A lock is a Redis key set with NX and an expiry, holding a random token
// of its holder. The holder pushes the expiry out every third of LockTTL;
// a holder that dies stops doing so and the lock frees itself after
// LockTTL. Refresh and release check the token in one script, so a holder
// whose lock expired (a long pause) cannot extend or delete the lock
// another instance now holds.

var (
	refreshScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) end return 0`)
	releaseScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0`)
)

// heldLock is a lock this instance holds.
type heldLock struct {
	token string
	stop  context.CancelFunc
	done  chan struct{}
}

func (s *Storage) lockKey(name string) string { return s.Prefix + ":lock:" + name }

// Lock waits until it holds the lock or ctx ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	wait := 20 * time.Millisecond
	for {
		ok, err := s.TryLock(ctx, name)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// TryLock takes the lock if it is free.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	ttl := time.Duration(s.LockTTL)
	ok, err := s.client.SetArgs(ctx, s.lockKey(name), token, redis.SetArgs{Mode: "NX", TTL: ttl}).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil // NX: someone holds it
	}
	if err != nil || ok != "OK" {
		return false, err
	}
	keep, stop := context.WithCancel(context.Background())
	h := &heldLock{token: token, stop: stop, done: make(chan struct{})}
	go s.keepFresh(keep, name, h, ttl)
	s.mu.Lock()
	if old := s.locks[name]; old != nil {
		// Ours already, expired and taken again (we stalled past LockTTL):
		// only the new holder keeps it fresh.
		old.stop()
	}
	s.locks[name] = h
	s.mu.Unlock()
	return true, nil
}

// keepFresh pushes the lock's expiry out until Unlock, or until the lock
// turns out to be someone else's.
func (s *Storage) keepFresh(ctx context.Context, name string, h *heldLock, ttl time.Duration) {
	defer close(h.done)
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := refreshScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token, ttl.Milliseconds()).Int()
		if err == nil && n == 0 {
			return // expired and taken by another holder: nothing to keep
		}
		// On an error (Redis unreachable) try again at the next tick: the
		// lock lasts a whole LockTTL, three ticks.
	}
}

// RenewLockLease extends a lock this instance holds.
func (s *Storage) RenewLockLease(ctx context.Context, name string, lease time.Duration) error {
	s.mu.Lock()
	h := s.locks[name]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("redisstorage: lock %q is not held here", name)
	}
	n, err := refreshScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token, lease.Milliseconds()).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("redisstorage: lock %q expired and is held by another", name)
	}
	return nil
}

// Unlock releases a lock this instance holds. It is an error when the lock
// had expired and another holder took it: the critical section was not
// exclusive to the end.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("redisstorage: lock %q is not held here", name)
	}
	h.stop()
	<-h.done
	n, err := releaseScript.Run(ctx, s.client, []string{s.lockKey(name)}, h.token).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("redisstorage: lock %q had expired before Unlock", name)
	}
	return nil
}
