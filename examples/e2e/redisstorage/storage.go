// Package redisstorage is a small Caddy storage module on a Redis server,
// for the cluster tests only: two Caddy instances sharing a real
// redis-server, as a deployment with a published Redis storage plugin would.
// It is registered only in the test binary examples/e2e/cmd/caddy-redis,
// never in the module users build (the published plugins are not reachable
// from this machine's Go module proxy; go-redis is).
//
// Layout in Redis, under the configured key prefix P:
//
//	P:v:<key>    hash {value, modified (unix ms)}: one stored value
//	P:index      sorted set of every stored key (all scores 0, so ordered
//	             lexically): List, directories and recursive Delete
//	P:lock:<name> a lock, holding its owner's random token, with an expiry
//	             the owner keeps pushing out while it holds the lock
package redisstorage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

func init() {
	caddy.RegisterModule((*Storage)(nil))
	// go-redis prints every failed dial to stderr; the errors reach the
	// callers (and Caddy's log) anyway.
	redis.SetLogger(quiet{})
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// Storage keeps Caddy's storage in Redis.
type Storage struct {
	// Address is the Redis server's host:port. Default: 127.0.0.1:6379.
	Address string `json:"address,omitempty"`
	// Prefix goes in front of every Redis key. Default: caddy.
	Prefix string `json:"prefix,omitempty"`
	// LockTTL is how long a lock outlives a holder that stopped refreshing
	// it (a crashed instance). Holders refresh it every third of that.
	// Default: 10s.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`

	client *redis.Client
	mu     sync.Mutex
	locks  map[string]*heldLock
}

// CaddyModule returns the Caddy module information.
func (*Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.e2e_redis",
		New: func() caddy.Module { return new(Storage) },
	}
}

// Provision connects lazily: go-redis dials on first use and redials after
// the server restarts.
func (s *Storage) Provision(caddy.Context) error {
	if s.Address == "" {
		s.Address = "127.0.0.1:6379"
	}
	if s.Prefix == "" {
		s.Prefix = "caddy"
	}
	if s.LockTTL <= 0 {
		s.LockTTL = caddy.Duration(10 * time.Second)
	}
	s.client = redis.NewClient(&redis.Options{
		Addr:            s.Address,
		DisableIdentity: true, // CLIENT SETINFO is Redis 7.2+; Debian 12 has 7.0
		DialTimeout:     time.Second,
		ReadTimeout:     2 * time.Second,
		WriteTimeout:    2 * time.Second,
		MaxRetries:      1,
	})
	s.locks = map[string]*heldLock{}
	return nil
}

// Cleanup closes the connections when the config is unloaded.
func (s *Storage) Cleanup() error {
	if s.client == nil {
		return nil
	}
	return s.client.Close()
}

// CertMagicStorage makes Storage a caddy.StorageConverter.
func (s *Storage) CertMagicStorage() (certmagic.Storage, error) {
	return s, nil
}

// UnmarshalCaddyfile reads
//
//	storage e2e_redis {
//		address  <host:port>
//		prefix   <prefix>
//		lock_ttl <duration>
//	}
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("duplicate option %q", opt)
		}
		seen[opt] = true
		var val string
		if !d.Args(&val) || d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "address":
			s.Address = val
		case "prefix":
			s.Prefix = val
		case "lock_ttl":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("lock_ttl: %v", err)
			}
			s.LockTTL = caddy.Duration(dur)
		default:
			return d.Errf("unknown option %q", opt)
		}
	}
	return nil
}

func (s *Storage) valueKey(key string) string { return s.Prefix + ":v:" + key }
func (s *Storage) indexKey() string           { return s.Prefix + ":index" }

// Store writes value and indexes key, atomically.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	key = clean(key)
	if key == "" {
		return errors.New("redisstorage: empty key")
	}
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.valueKey(key)) // a hash: replace, not merge
		p.HSet(ctx, s.valueKey(key), "value", value, "modified", time.Now().UnixMilli())
		p.ZAdd(ctx, s.indexKey(), redis.Z{Member: key})
		return nil
	})
	return err
}

// Load returns the value, or an error wrapping fs.ErrNotExist, as certmagic
// expects of a missing key.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	b, err := s.client.HGet(ctx, s.valueKey(clean(key)), "value").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstorage: %s: %w", key, fs.ErrNotExist)
	}
	return b, err
}

// Delete removes key and, when key is a directory, everything under it. A
// missing key is not an error: it does not exist when Delete returns.
func (s *Storage) Delete(ctx context.Context, key string) error {
	key = clean(key)
	under, err := s.under(ctx, key)
	if err != nil {
		return err
	}
	keys := append(under, key)
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, s.valueKey(k))
			p.ZRem(ctx, s.indexKey(), k)
		}
		return nil
	})
	return err
}

// Exists reports whether key is stored or is a directory. Certmagic's
// interface has no room for an error: a failed lookup reports false.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List returns the keys under dir: every key below it when recursive, else
// its direct children (files and directories).
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = clean(dir)
	under, err := s.under(ctx, dir)
	if err != nil {
		return nil, err
	}
	if len(under) == 0 {
		return nil, fmt.Errorf("redisstorage: %s: %w", dir, fs.ErrNotExist)
	}
	if recursive {
		return under, nil
	}
	var out []string
	seen := map[string]bool{}
	for _, k := range under {
		rest := strings.TrimPrefix(k, dirPrefix(dir))
		child, _, _ := strings.Cut(rest, "/")
		child = dirPrefix(dir) + child
		if !seen[child] {
			seen[child] = true
			out = append(out, child)
		}
	}
	return out, nil
}

// Stat describes key: a stored value (terminal) or a directory.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = clean(key)
	vals, err := s.client.HMGet(ctx, s.valueKey(key), "value", "modified").Result()
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if v, ok := vals[0].(string); ok {
		info := certmagic.KeyInfo{Key: key, Size: int64(len(v)), IsTerminal: true}
		if m, ok := vals[1].(string); ok {
			if ms, err := strconv.ParseInt(m, 10, 64); err == nil {
				info.Modified = time.UnixMilli(ms)
			}
		}
		return info, nil
	}
	under, err := s.client.ZRangeArgs(ctx, s.lexRange(key, 1)).Result()
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(under) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("redisstorage: %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// under lists every stored key below dir.
func (s *Storage) under(ctx context.Context, dir string) ([]string, error) {
	return s.client.ZRangeArgs(ctx, s.lexRange(dir, 0)).Result()
}

// lexRange selects the keys that start with dir + "/" (every key for the
// root), at most count of them when count > 0.
func (s *Storage) lexRange(dir string, count int64) redis.ZRangeArgs {
	p := dirPrefix(dir)
	r := redis.ZRangeArgs{Key: s.indexKey(), ByLex: true, Start: "[" + p, Stop: "+", Count: count}
	if p == "" {
		r.Start = "-"
	} else {
		// "0" is the byte after "/": the range ends before keys that merely
		// share the name's first letters ("dir0", "dir-x").
		r.Stop = "(" + strings.TrimSuffix(p, "/") + "0"
	}
	return r
}

func dirPrefix(dir string) string {
	if dir == "" {
		return ""
	}
	return dir + "/"
}

// clean makes "a//b/" and "/a/b" the key "a/b", as the file system would.
func clean(key string) string {
	parts := strings.Split(key, "/")
	out := parts[:0]
	for _, p := range parts {
		if p != "" && p != "." {
			out = append(out, p)
		}
	}
	return strings.Join(out, "/")
}

// Interface guards
var (
	_ caddy.Provisioner          = (*Storage)(nil)
	_ caddy.CleanerUpper         = (*Storage)(nil)
	_ caddy.StorageConverter     = (*Storage)(nil)
	_ caddyfile.Unmarshaler      = (*Storage)(nil)
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.TryLocker        = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)
