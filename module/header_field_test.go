package logto

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestHeaderFieldExpandsAsReplaceAll: header_up values that are a single
// placeholder skip ReplaceAll; whatever the value, the header a backend
// sees must be what ReplaceAll makes of it (an identity header that came
// out differently could name another user, or leak a placeholder's text).
func TestHeaderFieldExpandsAsReplaceAll(t *testing.T) {
	repl := caddy.NewReplacer()
	repl.Map(func(key string) (any, bool) {
		switch key {
		case "http.auth.user.id":
			return "user-1", true
		case "http.auth.user.empty":
			return "", true
		case "http.auth.user.nil":
			return nil, true
		case "http.auth.user.n":
			return 42, true
		}
		return nil, false
	})
	repl.Set("static", "s")
	for _, tt := range []struct {
		value string
		fast  bool
	}{
		{"{http.auth.user.id}", true},
		{"{http.auth.user.empty}", true},
		{"{http.auth.user.nil}", true},
		{"{http.auth.user.n}", true},
		{"{http.auth.user.unknown}", true},
		{"{static}", true},
		{"{nope}", true},
		{"plain", false},
		{"", false},
		{"{}", false},
		{"{", false},
		{"}", false},
		{"x{http.auth.user.id}", false},
		{"{http.auth.user.id}x", false},
		{"{http.auth.user.id}{http.auth.user.id}", false},
		{`{a\}b}`, false},
		{`\{http.auth.user.id}`, false},
		{"{file./nonexistent/logto-test}", false},
	} {
		f := newHeaderField("x-user", tt.value)
		if f.name != "X-User" {
			t.Fatalf("name %q not canonical", f.name)
		}
		if fast := f.key != ""; fast != tt.fast {
			t.Errorf("%q: single placeholder = %v, want %v", tt.value, fast, tt.fast)
		}
		if got, want := f.expand(repl), repl.ReplaceAll(tt.value, ""); got != want {
			t.Errorf("%q expands to %q, ReplaceAll to %q", tt.value, got, want)
		}
	}
	f := newHeaderField("X-User", "{http.auth.user.id}")
	if n := testing.AllocsPerRun(100, func() { _ = f.expand(repl) }); n != 0 {
		t.Errorf("a single placeholder costs %v allocations", n)
	}
}
