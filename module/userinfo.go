package logto

import (
	"context"
	"errors"
)

// userinfo returns the user's claims from Logto's userinfo endpoint, cached
// for the session until its next refresh. It is used when a rule needs a
// claim the ID token does not carry (a tenant without extended ID token
// claims).
func (c *client) userinfo(ctx context.Context, u *user) (map[string]any, *user, error) {
	now := c.now().Unix()
	ls := c.live.get(u.s.ID, now)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if cur := ls.cur.Load(); cur != nil && cur.s.Gen > u.s.Gen {
		u = cur
	}
	if ls.info != nil && ls.infoGen == u.s.Gen {
		return ls.info, u, nil
	}
	if c.now().Before(ls.retryAt) {
		return nil, u, errBackoff
	}
	if ls.access == "" && u.s.Access != "" {
		// Signed in on another instance, or before a restart, without a
		// refresh token: the cookie brings the access token.
		ls.access, ls.accessExp = u.s.Access, u.s.AccessExp
	}
	// Twice at most: a state adopted from another instance's rotation
	// brings no access token, so the adopted refresh token is redeemed
	// once more.
	for range 2 {
		if (ls.access != "" && now < ls.accessExp-tokenMargin) || u.s.Refresh == "" {
			break
		}
		nu, _, err := c.redeem(ctx, ls, u, tokenKey{})
		if err != nil {
			if !errors.Is(err, errSessionEnded) {
				ls.retryAt = c.now().Add(refreshRetry)
			}
			return nil, u, err
		}
		u = nu
	}
	if ls.access == "" || now >= ls.accessExp {
		if u.s.Refresh == "" {
			// Its token expired (the session ends with its ID token,
			// about then), and nothing to get another with.
			return nil, u, errNoAccessToken
		}
		return nil, u, errUnavailable
	}
	info, err := c.idp.userinfo(ctx, ls.access)
	if err != nil {
		ls.retryAt = c.now().Add(refreshRetry)
		return nil, u, err
	}
	if sub, _ := info["sub"].(string); sub != u.sub {
		return nil, u, errUnavailable
	}
	ls.info, ls.infoGen = info, u.s.Gen
	return info, u, nil
}

// errNoAccessToken: a session without a refresh token has no access token
// for userinfo on this instance and no way to get one; only signing in again
// gives it one.
var errNoAccessToken = errors.New("logto: no access token for userinfo and no refresh token to get one")
