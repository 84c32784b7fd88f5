package logto

import (
	"strings"
	"testing"
)

// TestScopeRuleThatNoBrowserUserCanMeetIsRejected: with "bearer organization"
// first and neither token_resource nor organization, a mixed block has no
// access token to read a browser user's permissions from, so "require scope"
// would answer every signed-in browser user 403 forever (and ask each one
// for scopes at sign-in for nothing). Provision must refuse that config and
// say what to add.
func TestScopeRuleThatNoBrowserUserCanMeetIsRejected(t *testing.T) {
	idp := newFakeIdP(t)
	scope := []Rule{{Kind: "scope", Values: []string{"read:data"}}}
	h := &Handler{Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret,
		Bearer: []string{organizationIndicator}, Require: scope}
	err := h.Provision(testCaddyContext(t))
	if err == nil {
		t.Fatal("provisioned a block whose scope rule no browser user can meet")
	}
	for _, want := range []string{"require scope", "token_resource", "organization", "bearer_only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// The configs that can work still provision.
	for name, h := range map[string]*Handler{
		"bearer_only":      {Endpoint: idp.srv.URL, Bearer: []string{organizationIndicator}, BearerOnly: true, Require: scope},
		"organization":     {Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, Bearer: []string{organizationIndicator}, Organization: "org1", Require: scope},
		"token_resource":   {Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, Bearer: []string{organizationIndicator}, TokenResource: bearerAPI, Require: scope},
		"API bearer first": {Endpoint: idp.srv.URL, AppID: idp.appID, AppSecret: idp.appSecret, Bearer: []string{bearerAPI, organizationIndicator}, Require: scope},
	} {
		if err := h.Provision(testCaddyContext(t)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
