package e2e

// Every Caddyfile recipe of the README, run as written (see
// readme_caddyfiles_test.go for how a block is made runnable) with a real
// Caddy against the dev IdP, which grants only what a sign-in asked for as
// Logto does, checking what the recipe's prose promises.

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// recipe is a README block made runnable: Caddy serving it, an upstream,
// and an application registered at the IdP for its hosts.
type recipe struct {
	t     *testing.T
	idp   *devIdP
	site  string // http://localhost:<port>
	port  int
	up    *recordingUpstream
	caddy *caddyInstance
}

// startRecipe runs caddyfile (a README block made runnable, or a fragment
// wrapped in a site: wrap gets the site address and the block). hosts are
// the wildcard site's subdomains to register redirect URIs for.
func startRecipe(t *testing.T, b readmeBlock, all []readmeBlock, wrap func(site, block string) string, hosts ...string) *recipe {
	t.Helper()
	requireStack(t)
	r := &recipe{t: t, idp: env.idp, port: freePort(t), up: newRecordingUpstream(t)}
	r.site = fmt.Sprintf("http://localhost:%d", r.port)
	caddyfile := b.runnable(t, all, recipeSite{port: r.port, upstream: r.up.addr()})
	if wrap != nil {
		caddyfile = wrap(r.site, caddyfile)
	}
	redirects := []string{r.site + "/logto/sign-in-callback"}
	for _, h := range hosts {
		redirects = append(redirects, r.host(h)+"/logto/sign-in-callback")
	}
	a := registerApp(t, r.idp, logtoApp{}, redirects, []string{r.site + "/"}, "")
	r.caddy = runCaddy(t, "readme "+b.title, r.port, caddyGlobals(t.TempDir(), "")+caddyfile, caddyVars(r.idp, a))
	if out := r.caddy.p.out.String(); strings.Contains(out, "not formatted") {
		t.Errorf("Caddy warns about the recipe's format:\n%s", tail(out, 2000))
	}
	return r
}

// host is the wildcard site's URL for a subdomain.
func (r *recipe) host(sub string) string {
	return fmt.Sprintf("http://%s.app.localhost:%d", sub, r.port)
}

func (r *recipe) signIn(v *visitor, base, path, user string) {
	r.t.Helper()
	signInAs(r.t, v, base, r.idp.base, path, user)
}

func expectStatus(t *testing.T, who string, res *response, want int) {
	t.Helper()
	if res.StatusCode != want {
		t.Errorf("%s: %s %s answered %s (Location %q), want %d\n%s", who, res.Request.Method, res.Request.URL, res.Status, res.location(), want, tail(res.body, 300))
	}
}

// authQuery is the query of the authorization request a navigation was
// sent to.
func authQuery(t *testing.T, v *visitor, u, idpBase string) url.Values {
	t.Helper()
	res := v.navigate(u)
	if !res.isRedirect() || !strings.HasPrefix(res.location(), idpBase+"/oidc/auth") {
		t.Fatalf("navigation to %s: %s Location=%q, want a redirect to sign in", u, res.Status, res.location())
	}
	loc, err := res.Request.URL.Parse(res.location())
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query()
}

// recipeChecks hold what each README recipe promises, by the start of its
// title. A README block without an entry fails the test: a new recipe
// needs a test.
var recipeChecks = map[string]func(t *testing.T, b readmeBlock, all []readmeBlock){
	"Quick start":        checkQuickStart,
	"Sign in with Kakao": checkKakao,
	"A public page that knows who is signed in":          checkPublicPage,
	"Protect an app behind `reverse_proxy`":              checkReverseProxy,
	"An API that receives a Logto access token":          checkAPI,
	"An API section under a site-wide sign-in":           checkAPISection,
	"A B2B site where the subdomain is the organization": checkB2B,
	"Keep authorization codes out of Caddy's logs":       checkCodesOutOfLogs,
	"Custom error pages":                                 checkErrorPage,
	"Protect an API for apps and machines":               checkAPIClients,
	// The grammar of the directive, not a Caddyfile to run (it is checked
	// by caddy fmt all the same).
	"Options": nil,
	// Global options for third-party storage plugins (Redis, Consul) that
	// this machine's module proxy does not serve; the cluster they make is
	// run by TestClusterOnRedis with a storage module of the tests' own.
	"Running several instances": nil,
}

// TestReadmeRecipes runs every Caddyfile recipe of the README.
func TestReadmeRecipes(t *testing.T) {
	t.Parallel()
	all := readmeCaddyfiles(t)
	for _, b := range all {
		var check func(*testing.T, readmeBlock, []readmeBlock)
		found := false
		for prefix, c := range recipeChecks {
			if strings.HasPrefix(b.title, prefix) {
				check, found = c, true
			}
		}
		if !found {
			t.Errorf("README line %d (%q) has a Caddyfile no test runs: add it to recipeChecks", b.line, b.title)
			continue
		}
		if check == nil {
			continue
		}
		t.Run(b.title, func(t *testing.T) {
			t.Parallel()
			check(t, b, all)
		})
	}
}

// "That is the whole minimal config: every request to example.com needs a
// signed-in Logto user."
func checkQuickStart(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, nil)
	v := newVisitor(t)
	expectStatus(t, "anonymous fetch", v.fetch(r.site+"/"), http.StatusUnauthorized)
	r.signIn(v, r.site, "/", "carol")
	res := v.navigate(r.site + "/")
	expectStatus(t, "carol", res, http.StatusOK)
	if !strings.Contains(res.body, "caddy-logto demo") {
		t.Errorf("the signed-in user does not get the site:\n%s", tail(res.body, 300))
	}
}

// "To send users straight to Kakao, skipping Logto's page".
func checkKakao(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, func(site, block string) string {
		return site + " {\n" + indent(block) + "\trespond \"signed in\"\n}\n"
	})
	q := authQuery(t, newVisitor(t), r.site+"/", r.idp.base)
	if got := q["direct_sign_in"]; !slices.Equal(got, []string{"social:kakao"}) {
		t.Errorf("sign-in sends direct_sign_in %v, want social:kakao", got)
	}
}

// A public home page in pass mode that knows who is signed in, and
// /private/ behind sign-in.
func checkPublicPage(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, nil)
	v := newVisitor(t)
	res := v.navigate(r.site + "/")
	expectStatus(t, "anonymous home page", res, http.StatusOK)
	if !strings.Contains(res.body, "Not authenticated") {
		t.Errorf("anonymous home page:\n%s", tail(res.body, 300))
	}
	if q := authQuery(t, v, r.site+"/private/", r.idp.base); !slices.Contains(strings.Fields(q.Get("scope")), "email") {
		t.Errorf("sign-in asks for scope %q, without email", q.Get("scope"))
	}
	r.signIn(v, r.site, "/private/", "alice")
	expectStatus(t, "alice on /private/", v.navigate(r.site+"/private/"), http.StatusOK)
	res = v.navigate(r.site + "/")
	if !strings.Contains(res.body, "Alice Park") || !strings.Contains(res.body, "alice@example.com") {
		t.Errorf("the home page does not say who is signed in:\n%s", tail(res.body, 600))
	}
}

// The app behind reverse_proxy learns who the user is from headers the
// client cannot forge, and never sees the module's cookies.
func checkReverseProxy(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, nil)
	v := newVisitor(t)
	r.signIn(v, r.site, "/", "alice")
	alice := r.idp.userID(t, "alice")
	e := decodeEcho(t, v.fetch(r.site+"/app", "X-User-Id", "admin", "X-User-Email", "root@example.com", "Logto-ID-Token", "forged"))
	if got := e.Header.Values("X-User-Id"); !slices.Equal(got, []string{alice}) {
		t.Errorf("upstream X-User-Id %v, want [%s]", got, alice)
	}
	if got := e.Header.Values("X-User-Email"); !slices.Equal(got, []string{"alice@example.com"}) {
		t.Errorf("upstream X-User-Email %v, want [alice@example.com]", got)
	}
	idt := jwtPayload(t, e.Header.Get("Logto-ID-Token"))
	if idt["sub"] != alice {
		t.Errorf("upstream Logto-ID-Token is for %v, want %s", idt["sub"], alice)
	}
	if roles, _ := idt["roles"].([]any); !slices.Contains(roles, any("admin")) {
		t.Errorf("the ID token has no roles although the recipe asks for them: %v", idt["roles"])
	}
	if own := moduleCookiesIn(e.Header.Get("Cookie")); len(own) > 0 {
		t.Errorf("the module's cookies reached the app: %v", own)
	}
}

// The API receives the user's token for https://api.example.com, and only
// users whose roles grant read:docs get through.
func checkAPI(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, nil)
	alice := newVisitor(t)
	r.signIn(alice, r.site, "/", "alice")
	expectAPIToken(t, "alice", alice.fetch(r.site+"/docs"), "read:docs")
	carol := newVisitor(t)
	r.signIn(carol, r.site, "/", "carol")
	expectStatus(t, "carol (no role grants read:docs)", carol.fetch(r.site+"/docs"), http.StatusForbidden)
}

// expectAPIToken checks the upstream got a token for the API resource with
// the permission.
func expectAPIToken(t *testing.T, who string, res *response, perm string) {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		t.Errorf("%s: %s answered %s, want 200\n%s", who, res.Request.URL, res.Status, tail(res.body, 300))
		return
	}
	tok := jwtPayload(t, decodeEcho(t, res).bearer())
	if tok["aud"] != "https://api.example.com" || !slices.Contains(strings.Fields(fmt.Sprint(tok["scope"])), perm) {
		t.Errorf("%s: upstream token aud %v scope %q, want https://api.example.com with %s", who, tok["aud"], tok["scope"], perm)
	}
}

// Sign-in at any page asks for what /api/* needs, so a user whose roles
// grant write:docs reaches it without signing in again; others get 403.
func checkAPISection(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, nil)
	alice := newVisitor(t)
	q := authQuery(t, alice, r.site+"/", r.idp.base)
	if !slices.Contains(q["resource"], "https://api.example.com") || !slices.Contains(strings.Fields(q.Get("scope")), "write:docs") {
		t.Errorf("sign-in from / asks for scope %q resources %v, want write:docs and https://api.example.com", q.Get("scope"), q["resource"])
	}
	r.signIn(alice, r.site, "/", "alice")
	expectStatus(t, "alice on /", alice.navigate(r.site+"/"), http.StatusOK)
	expectAPIToken(t, "alice", alice.fetch(r.site+"/api/docs"), "write:docs")
	bob := newVisitor(t)
	r.signIn(bob, r.site, "/", "bob")
	expectStatus(t, "bob on /", bob.navigate(r.site+"/"), http.StatusOK)
	expectStatus(t, "bob (viewer) on /api/", bob.fetch(r.site+"/api/docs"), http.StatusForbidden)
	expectStatus(t, "bob (viewer) navigating to /api/", bob.navigate(r.site+"/api/docs"), http.StatusForbidden)
}

// Members of the subdomain's organization reach the app with their
// organization token; only its admins reach /admin; others get 403.
func checkB2B(t *testing.T, b readmeBlock, all []readmeBlock) {
	acme := env.idp.orgID(t, "acme")
	r := startRecipe(t, b, all, nil, acme)
	site := r.host(acme)
	orgToken := func(who string, res *response) {
		t.Helper()
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: %s answered %s, want 200\n%s", who, res.Request.URL, res.Status, tail(res.body, 300))
			return
		}
		if aud := jwtPayload(t, decodeEcho(t, res).bearer())["aud"]; aud != "urn:logto:organization:"+acme {
			t.Errorf("%s: upstream token aud %v, want the organization's", who, aud)
		}
	}
	alice := loopbackVisitor(t)
	r.signIn(alice, site, "/", "alice")
	orgToken("alice (acme admin) on /", alice.fetch(site+"/"))
	orgToken("alice (acme admin) on /admin/", alice.fetch(site+"/admin/users"))
	expectStatus(t, "alice navigating to /admin/", alice.navigate(site+"/admin/users"), http.StatusOK)

	bob := loopbackVisitor(t)
	r.signIn(bob, site, "/", "bob")
	orgToken("bob (acme member) on /", bob.fetch(site+"/"))
	expectStatus(t, "bob (acme member) on /admin/", bob.fetch(site+"/admin/users"), http.StatusForbidden)
	expectStatus(t, "bob navigating to /admin/", bob.navigate(site+"/admin/users"), http.StatusForbidden)

	carol := loopbackVisitor(t)
	r.signIn(carol, site, "/admin/users", "carol")
	expectStatus(t, "carol (no organization) on /", carol.fetch(site+"/"), http.StatusForbidden)
}

// The callback's code is kept out of the access log.
func checkCodesOutOfLogs(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, func(site, block string) string {
		return site + " {\n" + indent(block) + "\tlogto {\n\t\tendpoint {env.LOGTO_ENDPOINT}\n\t\tapp_id {env.LOGTO_APP_ID}\n\t\tapp_secret {env.LOGTO_APP_SECRET}\n\t}\n\trespond \"signed in\"\n}\n"
	})
	v := newVisitor(t)
	first := v.navigate(r.site + "/")
	callback := v.loginAtIdP(resolve(first.Request.URL, first.location()), r.site+"/logto/sign-in-callback", "alice", "alice")
	expectStatus(t, "the callback", v.navigate(callback), http.StatusFound)
	code := strings.SplitN(strings.SplitN(callback, "code=", 2)[1], "&", 2)[0]
	// Caddy's log reaches us through a pipe, a moment after the answer.
	out := r.caddy.p.out.String()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out, "sign-in-callback") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		out = r.caddy.p.out.String()
	}
	if !strings.Contains(out, "sign-in-callback") {
		t.Fatalf("the callback was not logged at all:\n%s", tail(out, 2000))
	}
	if strings.Contains(out, code) {
		t.Errorf("the authorization code is in Caddy's log")
	}
}

// A signed-in user who fails a rule gets the handle_errors page.
func checkErrorPage(t *testing.T, b readmeBlock, all []readmeBlock) {
	r := startRecipe(t, b, all, func(site, block string) string {
		return site + " {\n\tlogto {\n\t\tendpoint {env.LOGTO_ENDPOINT}\n\t\tapp_id {env.LOGTO_APP_ID}\n\t\tapp_secret {env.LOGTO_APP_SECRET}\n\t\trequire role admin\n\t}\n\trespond \"admins only\"\n" + indent(block) + "}\n"
	})
	bob := newVisitor(t)
	r.signIn(bob, r.site, "/", "bob")
	res := bob.navigate(r.site + "/")
	expectStatus(t, "bob (viewer)", res, http.StatusForbidden)
	if !strings.Contains(res.body, "You are signed in, but this page is not for you.") {
		t.Errorf("bob does not get the recipe's error page:\n%s", tail(res.body, 300))
	}
	alice := newVisitor(t)
	r.signIn(alice, r.site, "/", "alice")
	if res := alice.navigate(r.site + "/"); res.StatusCode != http.StatusOK || !strings.Contains(res.body, "admins only") {
		t.Errorf("alice (admin): %s\n%s", res.Status, tail(res.body, 300))
	}
}

// indent puts a fragment one tab deeper, inside a site block.
func indent(block string) string {
	var sb strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(block, "\n"), "\n") {
		if l != "" {
			sb.WriteString("\t")
		}
		sb.WriteString(l + "\n")
	}
	return sb.String()
}

// One API for browsers and API clients (api.example.com): a machine's or an
// app's token with read:docs gets through, with the caller's id for the API
// and the Authorization header unchanged; a token without the permission
// gets 403 insufficient_scope; a browser still signs in. The machine-only
// site (m2m.example.com, bearer_only) needs write:docs and never redirects.
// The two sites run one at a time, each on the test's localhost.
func checkAPIClients(t *testing.T, b readmeBlock, all []readmeBlock) {
	cut := strings.Index(b.text, "\nm2m.example.com {")
	if cut < 0 {
		t.Fatalf("README line %d: no m2m.example.com site in the recipe", b.line)
	}
	apiBlock, m2mBlock := b, b
	apiBlock.text = strings.TrimSpace(b.text[:cut]) + "\n"
	m2mBlock.text = strings.TrimSpace(b.text[cut:]) + "\n"
	reporter, noRole := env.idp.machineApps(t)
	readDocs := env.idp.m2mToken(t, reporter, url.Values{"resource": {apiResource}, "scope": {"read:docs write:docs"}})
	none := env.idp.m2mToken(t, noRole, url.Values{"resource": {apiResource}, "scope": {"read:docs"}})

	api := startRecipe(t, apiBlock, all, nil)
	res := bearerReq(t, http.MethodGet, api.site+"/docs", "Authorization", "Bearer "+readDocs, "X-User-Id", "forged")
	expectStatus(t, "a machine with read:docs", res, http.StatusOK)
	if res.StatusCode == http.StatusOK {
		e := decodeEcho(t, res)
		if got := e.Header.Get("X-User-Id"); got != reporter.ID {
			t.Errorf("the API got X-User-Id %q, want the machine's id %q", got, reporter.ID)
		}
		if got := e.Header.Get("Authorization"); got != "Bearer "+readDocs {
			t.Errorf("the API got Authorization %.20q..., want the client's header unchanged", got)
		}
	}
	mustChallenge(t, "a machine without read:docs", bearerReq(t, http.MethodGet, api.site+"/docs", "Authorization", "Bearer "+none), http.StatusForbidden, "insufficient_scope")
	alice := newVisitor(t)
	q := authQuery(t, alice, api.site+"/docs", api.idp.base)
	if !slices.Contains(q["resource"], apiResource) || !slices.Contains(strings.Fields(q.Get("scope")), "read:docs") {
		t.Errorf("a browser's sign-in asks for scope %q resources %v, want read:docs and %s", q.Get("scope"), q["resource"], apiResource)
	}
	api.signIn(alice, api.site, "/docs", "alice")
	expectStatus(t, "alice's browser", alice.fetch(api.site+"/docs"), http.StatusOK)

	m2m := startRecipe(t, m2mBlock, all, nil)
	mustChallenge(t, "a machine with read:docs only, on the write:docs site", bearerReq(t, http.MethodPost, m2m.site+"/docs", "Authorization", "Bearer "+readDocs), http.StatusForbidden, "insufficient_scope")
	mustChallenge(t, "no token on the machine-only site", bearerReq(t, http.MethodGet, m2m.site+"/docs"), http.StatusUnauthorized, "")
	nav := newVisitor(t).navigate(m2m.site + "/docs")
	expectStatus(t, "a browser navigating to the machine-only site", nav, http.StatusUnauthorized)
	writer := userTokens(t, env.idp, registerApp(t, env.idp, logtoApp{}, []string{m2m.site + "/cb"}, nil, ""), m2m.site+"/cb", "alice", "write:docs")
	tok, _ := writer["access_token"].(string)
	expectStatus(t, "an app's token for alice (write:docs)", bearerReq(t, http.MethodPost, m2m.site+"/docs", "Authorization", "Bearer "+tok), http.StatusOK)
}
