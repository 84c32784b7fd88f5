package logto

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// headerField is a request header set for the handlers that follow.
type headerField struct {
	name, value string
	// key is the placeholder when value is one and nothing else
	// ("{http.auth.user.id}", the usual case): its value is then used as
	// it is, where ReplaceAll would build a copy on every request.
	key string
}

// expand is the field's value for this request, as ReplaceAll gives it.
func (f headerField) expand(repl *caddy.Replacer) string {
	if f.key != "" {
		v, _ := repl.GetString(f.key) // ToString(nil) is "", as ReplaceAll makes an unknown one
		return v
	}
	return repl.ReplaceAll(f.value, "")
}

// newHeaderField compiles a header_up field.
func newHeaderField(name, value string) headerField {
	f := headerField{name: http.CanonicalHeaderKey(name), value: value}
	if key, ok := strings.CutPrefix(value, "{"); ok {
		if key, ok = strings.CutSuffix(key, "}"); ok && key != "" &&
			!strings.ContainsAny(key, `{}\`) && !strings.HasPrefix(key, "file.") {
			// Braces or escapes inside, or {file.*} (which ReplaceAll
			// memoizes), are left to ReplaceAll.
			f.key = key
		}
	}
	return f
}
