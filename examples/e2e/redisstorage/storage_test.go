package redisstorage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// startServer starts a redis-server for one test. Without it the test is
// skipped, or fails when CI is set.
func startServer(t testing.TB) *Server {
	t.Helper()
	srv, err := StartServer(t.TempDir(), 0)
	if errors.Is(err, ErrNoServer) {
		if v := strings.ToLower(os.Getenv("CI")); v != "" && v != "0" && v != "false" {
			t.Fatalf("%v; CI is set, so this is a failure, not a skip", err)
		}
		t.Skipf("%v; skipping (set CI=true to make this a failure)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// newStorage is one Caddy instance's view of the server.
func newStorage(t testing.TB, srv *Server, lockTTL time.Duration) *Storage {
	t.Helper()
	s := &Storage{Address: srv.Addr, Prefix: "test", LockTTL: caddy.Duration(lockTTL)}
	if err := s.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Cleanup() })
	return s
}

// TestMissingKeys: certmagic and the module tell "not there" from "storage
// failed" with errors.Is(err, fs.ErrNotExist).
func TestMissingKeys(t *testing.T) {
	s := newStorage(t, startServer(t), 0)
	ctx := context.Background()
	if _, err := s.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.List(ctx, "nope", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List of a missing directory: %v, want fs.ErrNotExist", err)
	}
	if s.Exists(ctx, "nope") {
		t.Error("Exists of a missing key: true")
	}
	if err := s.Delete(ctx, "nope"); err != nil {
		t.Errorf("Delete of a missing key: %v, want nil (it does not exist afterwards)", err)
	}
}

func TestStoreLoadStatDelete(t *testing.T) {
	s := newStorage(t, startServer(t), 0)
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	must(t, s.Store(ctx, "dir/sub/key", []byte("first value")))
	must(t, s.Store(ctx, "dir/sub/key", []byte("second")))
	if b, err := s.Load(ctx, "dir/sub/key"); err != nil || string(b) != "second" {
		t.Errorf("Load after overwrite: %q, %v", b, err)
	}
	info, err := s.Stat(ctx, "dir/sub/key")
	if err != nil || !info.IsTerminal || info.Size != int64(len("second")) || info.Modified.Before(before) || info.Key != "dir/sub/key" {
		t.Errorf("Stat of a key: %+v, %v", info, err)
	}
	for _, d := range []string{"dir", "dir/sub", "/dir/sub/"} {
		info, err := s.Stat(ctx, d)
		if err != nil || info.IsTerminal {
			t.Errorf("Stat of directory %q: %+v, %v, want a non-terminal", d, info, err)
		}
		if !s.Exists(ctx, d) {
			t.Errorf("Exists of directory %q: false", d)
		}
	}
	if _, err := s.Stat(ctx, "di"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a name that is only a prefix of a directory: %v, want fs.ErrNotExist", err)
	}
	must(t, s.Store(ctx, "dir2/key", []byte("x")))
	must(t, s.Delete(ctx, "dir"))
	if s.Exists(ctx, "dir/sub/key") || s.Exists(ctx, "dir") {
		t.Error("Delete of a directory left its keys")
	}
	if !s.Exists(ctx, "dir2/key") {
		t.Error("Delete of dir removed dir2/key, which merely shares its first letters")
	}
}

func TestList(t *testing.T) {
	s := newStorage(t, startServer(t), 0)
	ctx := context.Background()
	for _, k := range []string{"a/b/c", "a/b/d", "a/e", "ab/x", "a0", "top"} {
		must(t, s.Store(ctx, k, []byte(k)))
	}
	for _, c := range []struct {
		dir       string
		recursive bool
		want      []string
	}{
		{"a", false, []string{"a/b", "a/e"}},
		{"a", true, []string{"a/b/c", "a/b/d", "a/e"}},
		{"a/b", false, []string{"a/b/c", "a/b/d"}},
		{"", false, []string{"a", "a0", "ab", "top"}},
		{"", true, []string{"a/b/c", "a/b/d", "a/e", "a0", "ab/x", "top"}},
	} {
		got, err := s.List(ctx, c.dir, c.recursive)
		slices.Sort(got)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("List(%q, recursive=%v) = %q, %v; want %q", c.dir, c.recursive, got, err, c.want)
		}
	}
}

// TestLockContended: two instances (two clients) and several goroutines
// each increment a counter stored in Redis with a read, a pause and a
// write, under one lock. Without mutual exclusion increments are lost.
func TestLockContended(t *testing.T) {
	srv := startServer(t)
	a, b := newStorage(t, srv, 0), newStorage(t, srv, 0)
	ctx := context.Background()
	must(t, a.Store(ctx, "counter", []byte("0")))
	const workers, rounds = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for i := range workers {
		st := []*Storage{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				if err := st.Lock(ctx, "counter-lock"); err != nil {
					errs <- err
					return
				}
				raw, err := st.Load(ctx, "counter")
				n, _ := strconv.Atoi(string(raw))
				time.Sleep(2 * time.Millisecond)
				if err == nil {
					err = st.Store(ctx, "counter", []byte(strconv.Itoa(n+1)))
				}
				if uerr := st.Unlock(ctx, "counter-lock"); err == nil {
					err = uerr
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if raw, _ := a.Load(ctx, "counter"); string(raw) != strconv.Itoa(workers*rounds) {
		t.Errorf("counter = %s after %d locked increments: the lock did not exclude", raw, workers*rounds)
	}
}

// TestLockWaitHonoursContext: a Lock waiting on a held lock gives up when
// its context ends.
func TestLockWaitHonoursContext(t *testing.T) {
	srv := startServer(t)
	a, b := newStorage(t, srv, 0), newStorage(t, srv, 0)
	must(t, a.Lock(context.Background(), "l"))
	if ok, err := b.TryLock(context.Background(), "l"); ok || err != nil {
		t.Errorf("TryLock of a held lock: %v, %v; want false, nil", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := b.Lock(ctx, "l"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock of a held lock with a deadline: %v, want context.DeadlineExceeded", err)
	}
	must(t, a.Unlock(context.Background(), "l"))
	must(t, b.Lock(context.Background(), "l"))
	must(t, b.Unlock(context.Background(), "l"))
	if err := b.Unlock(context.Background(), "l"); err == nil {
		t.Error("Unlock of a lock not held: nil, want an error")
	}
}

// TestLockKeptFreshWhileHeld: a live holder keeps its lock past many
// LockTTLs, so a slow critical section is not entered twice.
func TestLockKeptFreshWhileHeld(t *testing.T) {
	srv := startServer(t)
	a, b := newStorage(t, srv, time.Second), newStorage(t, srv, time.Second)
	ctx := context.Background()
	must(t, a.Lock(ctx, "l"))
	time.Sleep(3500 * time.Millisecond)
	if ok, err := b.TryLock(ctx, "l"); ok || err != nil {
		t.Errorf("after 3.5 LockTTLs held by a live holder, TryLock by another: %v, %v; want false", ok, err)
	}
	must(t, a.Unlock(ctx, "l"))
}

// TestLockExpiresWhenHolderDies: an instance that dies holding a lock
// (its refresher stops) does not block the cluster for more than LockTTL,
// and when it comes back its Unlock must not free the new holder's lock.
func TestLockExpiresWhenHolderDies(t *testing.T) {
	srv := startServer(t)
	a, b := newStorage(t, srv, 500*time.Millisecond), newStorage(t, srv, 500*time.Millisecond)
	ctx := context.Background()
	must(t, a.Lock(ctx, "l"))
	a.mu.Lock()
	a.locks["l"].stop() // the holder stalls: no more refreshes
	a.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	must(t, b.Lock(wctx, "l"))
	if err := a.Unlock(ctx, "l"); err == nil {
		t.Error("Unlock by the holder whose lock expired and was taken: nil, want an error")
	}
	if ok, _ := a.TryLock(ctx, "l"); ok {
		t.Error("the stale holder's Unlock freed the new holder's lock")
	}
	must(t, b.Unlock(ctx, "l"))
}

// TestSurvivesRestart: what was stored before a restart on the same data
// directory is there after it, and the client reconnects by itself.
func TestSurvivesRestart(t *testing.T) {
	srv := startServer(t)
	s := newStorage(t, srv, 0)
	ctx := context.Background()
	must(t, s.Store(ctx, "k/v", []byte("kept")))
	srv.Stop()
	if _, err := s.Load(ctx, "k/v"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load while the server is down: %v, want a connection error, not fs.ErrNotExist", err)
	}
	_, port, _ := strings.Cut(srv.Addr, ":")
	p, _ := strconv.Atoi(port)
	again, err := StartServer(srv.Dir, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Stop)
	if b, err := s.Load(ctx, "k/v"); err != nil || string(b) != "kept" {
		t.Errorf("Load after the restart: %q, %v", b, err)
	}
	if keys, err := s.List(ctx, "k", false); err != nil || len(keys) != 1 {
		t.Errorf("List after the restart: %q, %v", keys, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRefreshCoordination is what a refresh of caddy-logto's adds in
// Redis so that instances redeem a refresh token once (see the module's
// benchmark of the same name): take and release the session's lock, and
// (lock+handoff) look for another instance's handoff and write one. The
// test server syncs its append-only file on every write (appendfsync
// always), so each write waits for the disk.
func BenchmarkRefreshCoordination(b *testing.B) {
	s := newStorage(b, startServer(b), 0)
	ctx := context.Background()
	name := "logto/0123456789abcdef/refreshing/0123456789abcdef0123456789abcdef"
	handoff := []byte(strings.Repeat("x", 700))
	b.Run("lock", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if err := s.Lock(ctx, name); err != nil {
				b.Fatal(err)
			}
			if err := s.Unlock(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lock+handoff", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			if err := s.Lock(ctx, name); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Load(ctx, "logto/0123456789abcdef/rotated/missing"); !errors.Is(err, fs.ErrNotExist) {
				b.Fatal(err)
			}
			if err := s.Store(ctx, "logto/0123456789abcdef/rotated/"+strconv.Itoa(i), handoff); err != nil {
				b.Fatal(err)
			}
			if err := s.Unlock(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
	})
}
