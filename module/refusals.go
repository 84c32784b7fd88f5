package logto

import (
	"errors"

	"go.uber.org/zap"
)

// refusalFields are Logto's own words for a refused grant, error and
// error_description, for the log line: without them "invalid_target"
// (a resource the sign-in did not ask for) looks like any other 403.
// Logto's OAuth errors carry no token or code, and both are already
// truncated (TokenError) and sanitised here.
func refusalFields(err error) []zap.Field {
	var te *TokenError
	if !errors.As(err, &te) {
		return []zap.Field{errField(err)}
	}
	return []zap.Field{
		zap.Int("status", te.Status),
		zap.String("error", truncate(sanitizeCode(te.Code), 64)),
		zap.String("error_description", sanitizeText(te.Description)),
	}
}

// sanitizeText keeps a description from Logto printable on one log line.
func sanitizeText(s string) string {
	b := []byte(truncate(s, 200))
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}
