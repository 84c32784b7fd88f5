package logto

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
	"golang.org/x/oauth2"
)

// `caddy logto check`: loads a config as `caddy run` would, finds every
// logto handler in it, and asks each handler's Logto tenant whether it
// will accept what the handler sends (checkconfig.go works that out,
// checktenant.go asks), before the first visitor finds out.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "logto",
		Usage: "check [--config <path>] [--adapter <name>] [--json]",
		Short: "Commands for the Logto sign-in module (logto check)",
		Long: `
Commands for the logto handler (http.handlers.logto).

  caddy logto check    checks every Logto application in a config against its tenant
`,
		CobraFunc: func(cmd *cobra.Command) {
			check := &cobra.Command{
				Use:   "check [--config <path>] [--adapter <name>] [--json]",
				Short: "Checks every Logto application in a config against its Logto tenant",
				Long: `
Loads the config as 'caddy run' would (the Caddyfile in the current
directory unless --config says otherwise), finds every logto handler in
it, and asks each one's Logto tenant, without signing anyone in or out:

  - does discovery answer with issuer <endpoint>/oidc, and do the
    tenant's signing keys use an algorithm the module verifies;
  - are app_id and app_secret accepted;
  - is every redirect URI the sites will send registered, and every post
    sign-out redirect URI;
  - does every API resource the sign-ins ask for (resources,
    token_resource, organization) or bearer accepts exist;
  - does this machine's clock agree with Logto's.

Each line says what was checked and whether it passed; a failure says
how to fix it in Logto Console. What cannot be checked from here (a
wildcard site, the back-channel logout URI) is said, not passed over.
Secrets are never printed.

--json prints the same as one JSON document.

Exit status: 0 when every check passed, 1 when any failed, 2 when the
config cannot be loaded.
`,
				Args: cobra.NoArgs,
				RunE: runCheckCommand,
			}
			checkFlags(check)
			cmd.AddCommand(check)
		},
	})
}

func checkFlags(cmd *cobra.Command) {
	cmd.Flags().StringP("config", "c", "", "Configuration file (default: ./Caddyfile)")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply")
	cmd.Flags().Bool("json", false, "Print the result as one JSON document")
}

// Exit statuses of caddy logto check. Not Caddy's ExitCodeFailedStartup
// (1) for a config that cannot be loaded: 1 means the checks failed.
const (
	exitChecksFailed = 1
	exitConfigError  = 2
)

// errCheckFailed ends the command with status 1 once the report, which
// says what failed, is printed.
var errCheckFailed = errors.New("logto check: some checks failed")

func runCheckCommand(cmd *cobra.Command, _ []string) error {
	fl := caddycmd.Flags{FlagSet: cmd.Flags()}
	code, err := cmdCheck(fl, cmd.OutOrStdout())
	switch {
	case code == exitChecksFailed:
		// The report said it all; Caddy's Main turns any error into 1.
		cmd.SilenceErrors = true
		return errCheckFailed
	case code == exitConfigError:
		// As caddy validate: the error logged, the status kept.
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, err })(cmd, nil)
	}
	return nil
}

// cmdCheck loads the config, checks it and writes the report to out. It
// returns 0 when every check passed, 1 when any failed, and 2 with the
// error when the config cannot be loaded.
func cmdCheck(fl caddycmd.Flags, out io.Writer) (int, error) {
	asJSON := fl.Bool("json")
	fail := func(err error) (int, error) {
		if asJSON {
			writeReportJSON(out, checkReport{Tenants: []tenantReport{}, Error: err.Error()})
		}
		return exitConfigError, err
	}
	config, file, adapter, err := caddycmd.LoadConfig(fl.String("config"), fl.String("adapter"))
	if err != nil {
		return fail(err)
	}
	if len(config) == 0 {
		return fail(errors.New("no config to check: there is no Caddyfile in the current directory (use --config)"))
	}
	rep, err := checkConfig(context.Background(), config, nil)
	if err != nil {
		return fail(err)
	}
	rep.Config, rep.Adapter = file, adapter
	var buf bytes.Buffer
	if asJSON {
		writeReportJSON(&buf, rep)
	} else {
		rep.writeText(&buf)
	}
	// Nothing printed holds a secret; this makes sure of it.
	_, _ = out.Write(redact(buf.Bytes(), rep.secrets))
	if rep.Failed > 0 {
		return exitChecksFailed, nil
	}
	return 0, nil
}

// checkReport is what `caddy logto check` found, by tenant.
type checkReport struct {
	Config     string         `json:"config,omitempty"`
	Adapter    string         `json:"adapter,omitempty"`
	OK         bool           `json:"ok"`
	Passed     int            `json:"passed"`
	Failed     int            `json:"failed"`
	NotChecked int            `json:"not_checked"`
	Tenants    []tenantReport `json:"tenants"`
	// Why the config could not be loaded (exit status 2); nothing else is
	// set then.
	Error string `json:"error,omitempty"`

	secrets []string
}

// checkConfig checks every logto handler of a Caddy JSON config against
// its tenant, tenants at once. transport, when not nil, carries the
// requests (tests). An error means the config cannot be loaded: a handler
// that would not provision stops `caddy run` just as well.
func checkConfig(ctx context.Context, config []byte, transport http.RoundTripper) (checkReport, error) {
	app, placed, err := findBlocks(config)
	if err != nil {
		return checkReport{}, err
	}
	apps, cleanup, err := planApps(app, placed)
	defer cleanup()
	if err != nil {
		return checkReport{}, err
	}

	rep := checkReport{Tenants: []tenantReport{}}
	var endpoints []string
	byEndpoint := map[string][]*appPlan{}
	for _, ap := range apps {
		if byEndpoint[ap.endpoint] == nil {
			endpoints = append(endpoints, ap.endpoint)
		}
		byEndpoint[ap.endpoint] = append(byEndpoint[ap.endpoint], ap)
		if ap.appSecret != "" {
			rep.secrets = append(rep.secrets, ap.appSecret)
		}
	}
	rep.Tenants = make([]tenantReport, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep.Tenants[i] = newProber(transport).checkTenant(ctx, ep, byEndpoint[ep])
		}()
	}
	wg.Wait()
	for _, t := range rep.Tenants {
		rep.count(t.Checks)
		for _, a := range t.Applications {
			rep.count(a.Checks)
		}
	}
	rep.OK = rep.Failed == 0
	return rep, nil
}

// planApps provisions each handler as Caddy would (placeholders expanded,
// defaults set, rules compiled; Provision never contacts Logto), works out
// what it sends, and groups the handlers by application. cleanup releases
// what provisioning took.
func planApps(app *httpAppConfig, placed []placedBlock) ([]*appPlan, func(), error) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	repl := caddy.NewReplacer()
	var blocks []blockPlan
	for i, b := range placed {
		h, err := provisionForCheck(ctx, b.raw)
		if err != nil {
			return nil, cancel, fmt.Errorf("logto handler %d (%s): %w", i+1, b.where(), err)
		}
		blocks = append(blocks, planBlock(app, b, h, repl))
	}
	return groupApps(blocks), cancel, nil
}

// provisionForCheck decodes and provisions a handler as Caddy's module
// loader does: without the "handler" key, unknown fields refused.
func provisionForCheck(ctx caddy.Context, raw json.RawMessage) (*Handler, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	delete(fields, "handler")
	stripped, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	// Caddy's own logger: a context without a running config would give
	// Provision a development logger, which prints stack traces.
	h := &Handler{logger: caddy.Log().Named("http.handlers.logto")}
	if err := caddy.StrictUnmarshalJSON(stripped, h); err != nil {
		return nil, err
	}
	if err := h.Provision(ctx); err != nil {
		return nil, err
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return h, nil
}

// where names a block's place for an error message.
func (b placedBlock) where() string {
	if b.hosts == nil {
		return "server " + b.server
	}
	return fmt.Sprintf("server %s, %s", b.server, strings.Join(b.hosts, ", "))
}

func (r *checkReport) count(checks []checkResult) {
	for _, c := range checks {
		switch c.Status {
		case statusPassed:
			r.Passed++
		case statusFailed:
			r.Failed++
		case statusNotChecked:
			r.NotChecked++
		}
	}
}

// writeText writes the report for a terminal: a block per tenant, its
// applications indented below it.
func (r *checkReport) writeText(w io.Writer) {
	if len(r.Tenants) == 0 {
		fmt.Fprintf(w, "No logto handler in %s: nothing to check.\n", r.configName())
		return
	}
	fmt.Fprintf(w, "Checking the logto handlers of %s against Logto.\n", r.configName())
	for _, t := range r.Tenants {
		fmt.Fprintf(w, "\nLogto at %s\n", t.Endpoint)
		writeLines(w, "  ", t.Checks)
		for _, a := range t.Applications {
			name := "Application " + a.AppID
			if a.AppID == "" {
				name = "bearer_only blocks, no application"
			}
			if len(a.Sites) > 0 {
				name += " (" + strings.Join(a.Sites, ", ") + ")"
			}
			fmt.Fprintf(w, "\n  %s\n", name)
			writeLines(w, "    ", a.Checks)
		}
	}
	fmt.Fprintln(w)
	if r.Failed == 0 {
		fmt.Fprintf(w, "All checks passed: %d passed, %d not checked.\n", r.Passed, r.NotChecked)
		return
	}
	fmt.Fprintf(w, "%d failed, %d passed, %d not checked.\n", r.Failed, r.Passed, r.NotChecked)
}

func writeLines(w io.Writer, indent string, checks []checkResult) {
	for _, c := range checks {
		switch c.Status {
		case statusPassed:
			fmt.Fprintf(w, "%s✓ %s\n", indent, c.Message)
		case statusFailed:
			fmt.Fprintf(w, "%s✗ %s\n", indent, c.Message)
			if c.Fix != "" {
				fmt.Fprintf(w, "%s    fix: %s\n", indent, c.Fix)
			}
		default:
			fmt.Fprintf(w, "%s- not checked: %s\n", indent, c.Message)
		}
	}
}

func (r *checkReport) configName() string {
	if r.Config == "" {
		return "the config"
	}
	return r.Config
}

func writeReportJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// redact blanks out any secret in out. The report is built from URIs,
// ids and Logto's answers and holds none; this is the belt to those
// braces, for secrets long enough not to blank out ordinary words.
func redact(out []byte, secrets []string) []byte {
	for _, s := range secrets {
		if len(s) >= 8 {
			out = bytes.ReplaceAll(out, []byte(s), []byte("[secret]"))
		}
	}
	return out
}

// What a config will send Logto, for `caddy logto check`: every logto
// handler in a Caddy JSON config and where it sits (server, host names),
// and from that the redirect URIs its sign-ins carry, the post sign-out
// URIs its sign-outs carry and the API resources its sign-ins ask for.
// Nothing here touches the network.

// httpAppConfig is the part of Caddy's http app that says where handlers
// sit and how their sites are served. Only what the checker reads is
// decoded; everything else in the config is ignored.
type httpAppConfig struct {
	HTTPPort  int                      `json:"http_port,omitempty"`
	HTTPSPort int                      `json:"https_port,omitempty"`
	Servers   map[string]*serverConfig `json:"servers,omitempty"`
}

type serverConfig struct {
	Listen []string      `json:"listen,omitempty"`
	Routes []routeConfig `json:"routes,omitempty"`
	Errors *struct {
		Routes []routeConfig `json:"routes,omitempty"`
	} `json:"errors,omitempty"`
	NamedRoutes     map[string]*routeConfig    `json:"named_routes,omitempty"`
	AutoHTTPS       *caddyhttp.AutoHTTPSConfig `json:"automatic_https,omitempty"`
	TLSConnPolicies []json.RawMessage          `json:"tls_connection_policies,omitempty"`
}

type routeConfig struct {
	Match  []map[string]json.RawMessage `json:"match,omitempty"`
	Handle []json.RawMessage            `json:"handle,omitempty"`
}

// placedBlock is one logto handler and where it sits.
type placedBlock struct {
	server string   // its server's name in apps.http.servers
	hosts  []string // the host names its routes match; nil: any host
	raw    json.RawMessage
}

// findBlocks returns every logto handler of a Caddy JSON config, in the
// order of its servers (by name) and routes, with the host names the
// routes around it match: top-level routes, subroutes (handle, route, a
// Caddyfile site block), named routes reached by invoke, and error
// routes.
func findBlocks(config []byte) (*httpAppConfig, []placedBlock, error) {
	var cfg struct {
		Apps struct {
			HTTP *httpAppConfig `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, nil, fmt.Errorf("decoding config: %v", err)
	}
	app := cfg.Apps.HTTP
	if app == nil {
		return &httpAppConfig{}, nil, nil
	}
	names := make([]string, 0, len(app.Servers))
	for name := range app.Servers {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []placedBlock
	for _, name := range names {
		srv := app.Servers[name]
		if srv == nil {
			continue
		}
		w := &blockWalker{server: name, srv: srv, invoked: map[string]bool{}}
		if err := w.routes(srv.Routes, nil); err != nil {
			return nil, nil, err
		}
		if srv.Errors != nil {
			if err := w.routes(srv.Errors.Routes, nil); err != nil {
				return nil, nil, err
			}
		}
		out = append(out, w.found...)
	}
	return app, out, nil
}

type blockWalker struct {
	server  string
	srv     *serverConfig
	invoked map[string]bool // named routes being walked, against invoke loops
	found   []placedBlock
}

func (w *blockWalker) routes(routes []routeConfig, hosts []string) error {
	for _, r := range routes {
		if err := w.route(r, hosts); err != nil {
			return err
		}
	}
	return nil
}

func (w *blockWalker) route(r routeConfig, outer []string) error {
	hosts := routeHosts(r.Match, outer)
	for _, raw := range r.Handle {
		var h struct {
			Handler string        `json:"handler"`
			Routes  []routeConfig `json:"routes"`
			Name    string        `json:"name"`
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			return fmt.Errorf("decoding a handler of server %s: %v", w.server, err)
		}
		switch h.Handler {
		case "logto":
			w.found = append(w.found, placedBlock{server: w.server, hosts: hosts, raw: raw})
		case "subroute":
			if err := w.routes(h.Routes, hosts); err != nil {
				return err
			}
		case "invoke":
			named := w.srv.NamedRoutes[h.Name]
			if named == nil || w.invoked[h.Name] {
				continue
			}
			w.invoked[h.Name] = true
			err := w.route(*named, hosts)
			w.invoked[h.Name] = false
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// routeHosts are the host names a route matches, within the outer routes'
// (nil: any). Matcher sets are alternatives, so a set without a host
// matcher lets any host of the outer routes through.
func routeHosts(match []map[string]json.RawMessage, outer []string) []string {
	if len(match) == 0 {
		return outer
	}
	var hosts []string
	for _, set := range match {
		raw, ok := set["host"]
		if !ok {
			return outer
		}
		var hs []string
		if json.Unmarshal(raw, &hs) != nil || len(hs) == 0 {
			return outer
		}
		for _, h := range hs {
			if !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}

func (a *httpAppConfig) httpPort() int {
	if a.HTTPPort == 0 {
		return caddyhttp.DefaultHTTPPort
	}
	return a.HTTPPort
}

func (a *httpAppConfig) httpsPort() int {
	if a.HTTPSPort == 0 {
		return caddyhttp.DefaultHTTPSPort
	}
	return a.HTTPSPort
}

// serverTLS reports whether the server's listeners (other than on the HTTP
// port) speak TLS, deciding as Caddy's automatic HTTPS does: explicit
// connection policies; else, unless automatic HTTPS is off or every
// listener is on the HTTP port, a server only on the HTTPS port, or one
// whose top-level routes name a host that is not in its skip list (a
// Caddyfile puts http:// site addresses there).
func (a *httpAppConfig) serverTLS(srv *serverConfig, repl *caddy.Replacer) bool {
	if len(srv.TLSConnPolicies) > 0 {
		return true
	}
	if srv.AutoHTTPS != nil && srv.AutoHTTPS.Disabled {
		return false
	}
	if !listensOtherThan(srv.Listen, a.httpPort(), repl) {
		return false
	}
	if !listensOtherThan(srv.Listen, a.httpsPort(), repl) {
		return true
	}
	var skip []string
	if srv.AutoHTTPS != nil {
		skip = srv.AutoHTTPS.Skip
	}
	for _, r := range srv.Routes {
		for _, set := range r.Match {
			var hs []string
			if raw, ok := set["host"]; ok && json.Unmarshal(raw, &hs) == nil {
				for _, h := range hs {
					if !slices.Contains(skip, repl.ReplaceKnown(h, "")) {
						return true
					}
				}
			}
		}
	}
	return false
}

func listensOtherThan(listen []string, port int, repl *caddy.Replacer) bool {
	for _, l := range listen {
		na, err := caddy.ParseNetworkAddress(repl.ReplaceKnown(l, ""))
		if err != nil {
			continue
		}
		if uint(port) > na.EndPort || uint(port) < na.StartPort {
			return true
		}
	}
	return false
}

// origin is one scheme://host[:port] at which browsers reach a site, or,
// when that cannot be known from the config, the host as written and why.
type origin struct {
	url  string
	host string
	why  string
}

// maxPortRange bounds the ports of one listener turned into origins.
const maxPortRange = 16

// origins are the scheme://host[:port] a block's sign-ins send as the
// base of their redirect URIs (siteURL: base_url, or the request's
// scheme and Host): each of its host names on each of its server's
// listeners. A listener on the HTTP port is http; others are https when
// the server speaks TLS. Hosts a browser's request names but the config
// does not (wildcards, placeholders, a site without a host) are returned
// with the reason instead.
func (a *httpAppConfig) origins(b placedBlock, baseURL string, repl *caddy.Replacer) []origin {
	if baseURL != "" {
		return []origin{{url: baseURL, host: baseURL}}
	}
	srv := a.Servers[b.server]
	if srv == nil {
		return nil
	}
	if b.hosts == nil {
		return []origin{{host: "(any host)", why: fmt.Sprintf("its site (server %s) has no host name, so the callback follows the Host of each request; give the site address a host name or set base_url", b.server)}}
	}
	tls := a.serverTLS(srv, repl)
	var out []origin
	for _, written := range b.hosts {
		host := strings.ToLower(repl.ReplaceKnown(written, ""))
		switch {
		case host == "":
			out = append(out, origin{host: written, why: "its host name is empty once placeholders are expanded (is its environment variable set?)"})
			continue
		case strings.Contains(host, "{"):
			out = append(out, origin{host: written, why: "its host name is a placeholder known only per request; set base_url, or register the callback of every host it takes"})
			continue
		case strings.Contains(host, "*"):
			out = append(out, origin{host: written, why: "a wildcard site: the callback follows the host each visitor uses; register it for every host name in use (or set base_url)"})
			continue
		}
		for _, l := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(repl.ReplaceKnown(l, ""))
			switch {
			case err != nil:
				out = append(out, origin{host: written, why: fmt.Sprintf("its listener %q is not an address: %v", l, err)})
				continue
			case caddy.IsUnixNetwork(na.Network) || caddy.IsFdNetwork(na.Network):
				out = append(out, origin{host: written, why: fmt.Sprintf("it listens on %s, behind something else whose address browsers use; set base_url", l)})
				continue
			case na.PortRangeSize() > maxPortRange:
				out = append(out, origin{host: written, why: fmt.Sprintf("it listens on %d ports (%s); set base_url", na.PortRangeSize(), l)})
				continue
			}
			for p := na.StartPort; p <= na.EndPort; p++ {
				scheme := "http"
				if tls && int(p) != a.httpPort() {
					scheme = "https"
				}
				u := originURL(scheme, host, int(p))
				if !slices.ContainsFunc(out, func(o origin) bool { return o.url == u }) {
					out = append(out, origin{url: u, host: written})
				}
			}
		}
	}
	return out
}

// originURL is what a browser puts in Host for the port, as siteURL reads
// it: the port only when it is not the scheme's default.
func originURL(scheme, host string, port int) string {
	if (scheme == "https" && port == 443) || (scheme == "http" && port == 80) {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return scheme + "://" + host
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// blockPlan is what one provisioned block will send Logto.
type blockPlan struct {
	h           *Handler
	placed      placedBlock
	origins     []origin
	redirects   []string // redirect URIs of its sign-ins
	postSignOut []string // post_logout_redirect_uri of its sign-outs
	backchannel []string // its back-channel logout endpoint, per origin
}

// planBlock works out what a provisioned block sends: for each origin its
// callback (as startSignIn builds redirect_uri), its sign-out landing (as
// signOut builds post_logout_redirect_uri) and its back-channel endpoint.
// A bearer_only block serves no flow endpoints, so it sends none.
func planBlock(a *httpAppConfig, b placedBlock, h *Handler, repl *caddy.Replacer) blockPlan {
	p := blockPlan{h: h, placed: b}
	if h.BearerOnly {
		return p
	}
	p.origins = a.origins(b, h.BaseURL, repl)
	for _, o := range p.origins {
		if o.url == "" {
			continue
		}
		p.redirects = appendNew(p.redirects, o.url+h.paths.callback)
		p.backchannel = appendNew(p.backchannel, o.url+h.paths.backchannel)
		landing := h.PostSignOutRedirect
		if strings.HasPrefix(landing, "/") {
			landing = o.url + landing
		}
		p.postSignOut = appendNew(p.postSignOut, landing)
	}
	if !strings.HasPrefix(h.PostSignOutRedirect, "/") {
		// An absolute landing is sent as it is, from any site.
		p.postSignOut = appendNew(p.postSignOut, h.PostSignOutRedirect)
	}
	return p
}

func appendNew(list []string, v ...string) []string {
	for _, s := range v {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// appPlan is one Logto application (endpoint and app_id) and what all of
// its blocks send. Blocks that are bearer_only without app_id form an
// application of their own with an empty appID: they have no client.
type appPlan struct {
	endpoint  string
	appID     string
	appSecret string
	secretRef string // the placeholder app_secret is read from, for the fix
	blocks    []blockPlan

	sites       []string // where its blocks sit, for the report
	redirects   []string
	postSignOut []string
	backchannel []string
	unknown     []origin   // origins that cannot be known from the config
	resources   []resource // what its sign-ins ask for, then bearer indicators
	cookies     bool       // some block has cookie sessions (not bearer_only)
}

// resource is an API resource indicator and why the application uses it.
type resource struct {
	indicator string
	signIn    bool // asked for at sign-in (resources, token_resource, organization, rules)
	bearer    bool // accepted in bearer tokens
}

// groupApps groups blocks by application, in the order they were found.
// What a sign-in asks for is the union of every block's needs, as the
// application registry (registerNeeds) makes it at run time.
func groupApps(blocks []blockPlan) []*appPlan {
	var apps []*appPlan
	byKey := map[string]*appPlan{}
	for _, b := range blocks {
		c := b.h.client.idp
		key := c.endpoint + "\x00" + c.appID
		ap := byKey[key]
		if ap == nil {
			ap = &appPlan{endpoint: c.endpoint, appID: c.appID, appSecret: c.appSecret}
			byKey[key] = ap
			apps = append(apps, ap)
		}
		if ap.secretRef == "" && isPlaceholderOnly(b.h.AppSecret) {
			ap.secretRef = b.h.AppSecret
		}
		ap.blocks = append(ap.blocks, b)
		ap.cookies = ap.cookies || !b.h.BearerOnly
		ap.redirects = appendNew(ap.redirects, b.redirects...)
		ap.postSignOut = appendNew(ap.postSignOut, b.postSignOut...)
		ap.backchannel = appendNew(ap.backchannel, b.backchannel...)
		for _, o := range b.origins {
			if o.url != "" {
				ap.sites = appendNew(ap.sites, o.url)
				continue
			}
			ap.sites = appendNew(ap.sites, o.host)
			if !slices.ContainsFunc(ap.unknown, func(u origin) bool { return u.host == o.host }) {
				ap.unknown = append(ap.unknown, o)
			}
		}
		if b.h.BearerOnly && len(b.placed.hosts) > 0 {
			ap.sites = appendNew(ap.sites, b.placed.hosts...)
		}
	}
	for _, ap := range apps {
		var want needs
		for _, b := range ap.blocks {
			if !b.h.BearerOnly {
				want.add(b.h.needs)
			}
		}
		for _, r := range want.resources {
			ap.addResource(r, true, false)
		}
		for _, b := range ap.blocks {
			for _, r := range b.h.Bearer {
				if r != organizationIndicator {
					ap.addResource(r, false, true)
				}
			}
		}
	}
	return apps
}

func (ap *appPlan) addResource(ind string, signIn, bearer bool) {
	for i := range ap.resources {
		if ap.resources[i].indicator == ind {
			ap.resources[i].signIn = ap.resources[i].signIn || signIn
			ap.resources[i].bearer = ap.resources[i].bearer || bearer
			return
		}
	}
	ap.resources = append(ap.resources, resource{indicator: ind, signIn: signIn, bearer: bearer})
}

// isPlaceholderOnly reports whether s is one {env.*} or {file.*}
// placeholder, which may be named in the output; anything else in
// app_secret may be the secret itself.
func isPlaceholderOnly(s string) bool {
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") || strings.Count(s, "{") != 1 {
		return false
	}
	return strings.HasPrefix(s, "{env.") || strings.HasPrefix(s, "{file.")
}

// The probes of `caddy logto check`: questions a Logto tenant answers
// without signing anyone in or out and without issuing anything (LOGTO.md,
// "Probing a tenant without signing anyone in"). Redirects are never
// followed, and every request gives up after checkTimeout.

// checkTimeout bounds each request to the tenant: an endpoint that never
// answers is a failure to report, not a hang.
const checkTimeout = 10 * time.Second

// probeParallel bounds the probes of one tenant in flight at once.
const probeParallel = 6

// checkAlgs are the signing algorithms the module verifies (ID tokens,
// access tokens, logout tokens), with the key each needs.
var checkAlgs = []string{"ES256", "ES384", "ES512", "RS256"}

type checkStatus string

const (
	statusPassed     checkStatus = "passed"
	statusFailed     checkStatus = "failed"
	statusNotChecked checkStatus = "not_checked"
)

// checkResult is one line of the report.
type checkResult struct {
	// What was checked: discovery, signing_keys, clock, credentials,
	// redirect_uri, post_sign_out_redirect_uri, api_resource,
	// backchannel_logout_uri.
	Check string `json:"check"`
	// The URI or indicator checked, when the check is about one.
	Subject string      `json:"subject,omitempty"`
	Status  checkStatus `json:"status"`
	// What was found, or why it was not checked.
	Message string `json:"message"`
	// For a failure: what to change, in Logto Console's words.
	Fix string `json:"fix,omitempty"`
}

func passed(check, subject, msg string) checkResult {
	return checkResult{Check: check, Subject: subject, Status: statusPassed, Message: msg}
}

func failed(check, subject, msg, fix string) checkResult {
	return checkResult{Check: check, Subject: subject, Status: statusFailed, Message: msg, Fix: fix}
}

func notChecked(check, subject, why string) checkResult {
	return checkResult{Check: check, Subject: subject, Status: statusNotChecked, Message: why}
}

// prober asks one tenant its questions.
type prober struct {
	hc  *http.Client
	now func() time.Time
	sem chan struct{}
}

func newProber(transport http.RoundTripper) *prober {
	return &prober{
		hc: &http.Client{
			Timeout:   checkTimeout,
			Transport: transport,
			// An answer's redirect is the answer: following it could
			// only reach a sign-in page or the application.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
		sem: make(chan struct{}, probeParallel),
	}
}

// run calls f in a goroutine of wg, within the tenant's probe budget.
func (pr *prober) run(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		pr.sem <- struct{}{}
		defer func() { <-pr.sem }()
		f()
	}()
}

// discovery is what the discovery probe learned.
type discovery struct {
	md             *metadata
	date           time.Time // Logto's Date header; zero when absent
	sent, received time.Time // this machine's clock around the request
}

// discover fetches the discovery document and checks that it is the one
// the module will use: issuer <endpoint>/oidc, absolute endpoints.
func (pr *prober) discover(ctx context.Context, endpoint string) (*discovery, checkResult) {
	const check = "discovery"
	issuer := endpoint + "/oidc"
	u := issuer + "/.well-known/openid-configuration"
	fixEndpoint := "set endpoint to your Logto endpoint (Console → Applications → your application → Logto endpoint, without /oidc) and make sure this machine can reach it"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: %s is not a URL: %v", u, err), fixEndpoint)
	}
	req.Header.Set("Accept", "application/json")
	d := &discovery{sent: pr.now()}
	resp, err := pr.hc.Do(req)
	if err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: cannot reach Logto at %s: %v", u, scrubURLError(err)), fixEndpoint)
	}
	defer resp.Body.Close()
	d.received = pr.now()
	if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		d.date = t
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: reading %s: %v", u, err), fixEndpoint)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, failed(check, u, fmt.Sprintf("discovery: %s answered %s, not Logto's discovery document", u, resp.Status), fixEndpoint)
	}
	var md metadata
	if err := json.Unmarshal(body, &md); err != nil {
		return nil, failed(check, u, fmt.Sprintf("discovery: %s answered something that is not JSON", u), fixEndpoint)
	}
	if md.Issuer != issuer {
		fix := fixEndpoint
		if right, ok := strings.CutSuffix(md.Issuer, "/oidc"); ok && right != "" {
			fix = fmt.Sprintf("set endpoint to %s (the issuer without /oidc)", right)
		}
		return nil, failed(check, u, fmt.Sprintf("discovery: the issuer is %q, not %q", md.Issuer, issuer), fix)
	}
	for name, v := range map[string]string{
		"authorization_endpoint": md.AuthorizationEndpoint,
		"token_endpoint":         md.TokenEndpoint,
		"jwks_uri":               md.JWKSURI,
	} {
		if pu, err := url.Parse(v); err != nil || !pu.IsAbs() {
			return nil, failed(check, u, fmt.Sprintf("discovery: its %s %q is not an absolute URL", name, v), fixEndpoint)
		}
	}
	d.md = &md
	return d, passed(check, u, "discovery: Logto answers, issuer "+issuer)
}

// clock compares this machine's clock with the Date of Logto's answer.
// Date has whole seconds, so Logto's clock was in [Date, Date+1s) when it
// answered, somewhere between sending and receiving.
func (d *discovery) clock() checkResult {
	const check = "clock"
	if d.date.IsZero() {
		return notChecked(check, "", "clock: Logto's answer had no Date header to compare with")
	}
	local := d.sent.Add(d.received.Sub(d.sent) / 2)
	skew := local.Sub(d.date.Add(500 * time.Millisecond))
	abs := skew.Abs()
	allowed := fmt.Sprintf("the module allows %d s", int(clockSkew/time.Second))
	if abs > clockSkew {
		dir := "ahead of"
		if skew < 0 {
			dir = "behind"
		}
		return failed(check, "", fmt.Sprintf("clock: this machine is %d s %s Logto (%s): Logto's tokens would look expired or not yet valid", int(abs.Round(time.Second)/time.Second), dir, allowed),
			"set this machine's clock right, and keep it so with NTP (e.g. `timedatectl set-ntp true`)")
	}
	if abs <= 1500*time.Millisecond {
		return passed(check, "", fmt.Sprintf("clock: this machine agrees with Logto within 1 s (%s)", allowed))
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	return passed(check, "", fmt.Sprintf("clock: this machine is %d s %s Logto (%s)", int(abs.Round(time.Second)/time.Second), dir, allowed))
}

// keys checks that the tenant's JWKS holds a key the module can verify
// with, in an algorithm Logto says it signs with.
func (pr *prober) keys(ctx context.Context, md *metadata) checkResult {
	const check = "signing_keys"
	fix := "rotate the tenant's signing keys to EC (ES384, Logto's default) or RSA in Console → Tenant settings → Signing keys"
	body, err := fetchJWKS(ctx, pr.hc, md.JWKSURI)
	if err != nil {
		return failed(check, md.JWKSURI, fmt.Sprintf("signing keys: cannot read %s: %v", md.JWKSURI, unavailableCause(err)),
			"make sure this machine can reach Logto's "+md.JWKSURI)
	}
	var set struct {
		Keys []struct {
			jwk
			Alg string `json:"alg"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return failed(check, md.JWKSURI, "signing keys: "+md.JWKSURI+" is not a JSON key set", fix)
	}
	signs := md.IDTokenAlgs
	if len(signs) == 0 {
		signs = []string{"ES384", "RS256"} // as provider.install assumes
	}
	var usable, seen []string
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		alg := k.Alg
		if alg == "" {
			alg = keyAlg(k.jwk)
		}
		seen = append(seen, k.Kty+"/"+alg)
		if _, err := k.publicKey(); err != nil || !slices.Contains(checkAlgs, alg) || !slices.Contains(signs, alg) {
			continue
		}
		usable = appendNew(usable, alg)
	}
	if len(usable) == 0 {
		return failed(check, md.JWKSURI, fmt.Sprintf("signing keys: none the module can verify with (the key set has %s; Logto signs with %s; the module verifies %s)",
			orNone(seen), strings.Join(signs, ", "), strings.Join(checkAlgs, ", ")), fix)
	}
	keys := "1 key"
	if len(set.Keys) != 1 {
		keys = fmt.Sprintf("%d keys", len(set.Keys))
	}
	return passed(check, md.JWKSURI, fmt.Sprintf("signing keys: %s, which the module verifies (%s in the set)", strings.Join(usable, ", "), keys))
}

// keyAlg is the algorithm a key without "alg" signs with, as Logto uses
// them: EC curves by size, RSA with RS256.
func keyAlg(k jwk) string {
	switch {
	case k.Kty == "EC" && k.Crv == "P-256":
		return "ES256"
	case k.Kty == "EC" && k.Crv == "P-384":
		return "ES384"
	case k.Kty == "EC" && k.Crv == "P-521":
		return "ES512"
	case k.Kty == "RSA":
		return "RS256"
	}
	return "?"
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "no signing key"
	}
	return strings.Join(list, ", ")
}

// unavailableCause is err without the errUnavailable prefix.
func unavailableCause(err error) string {
	return strings.TrimPrefix(err.Error(), errUnavailable.Error()+": ")
}

// credentials says how Logto took the application's id and secret.
type credentials int

const (
	credsUnknown   credentials = iota // not learned (Logto unreachable, odd answer)
	credsOK                           // the client authenticated
	credsNoApp                        // Logto has no application with this id
	credsBadSecret                    // the id exists, the secret is wrong
)

// probeCredentials asks the token endpoint to redeem a code that cannot
// exist, with the application's id and secret as the module sends them
// (client_secret_basic, provider.post): Logto authenticates the client
// before it looks at the code, so invalid_grant means the credentials are
// good and invalid_client that they are not. Nothing is issued either way.
func (pr *prober) probeCredentials(ctx context.Context, md *metadata, ap *appPlan) (credentials, checkResult) {
	const check = "credentials"
	p := newProvider(ap.endpoint, ap.appID, ap.appSecret, pr.hc)
	// redirect_uri too: Logto may leave it out only for an application
	// with one registered (node-oidc-provider's
	// allowOmittingSingleRegisteredRedirectUri), and asks for it, as
	// invalid_request, before it looks for the code. Which one does not
	// matter: a code that is not found is refused first.
	redirect := "https://caddy-logto-check.invalid/"
	if len(ap.redirects) > 0 {
		redirect = ap.redirects[0]
	}
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {"caddy-logto-check-" + randomString(18)},
		"redirect_uri": {redirect},
	}
	secretFrom := "app_secret"
	if ap.secretRef != "" {
		secretFrom = "app_secret (" + ap.secretRef + ")"
	}
	err := p.post(ctx, callToken, md.TokenEndpoint, form, nil)
	var te *TokenError
	switch {
	case err == nil:
		return credsUnknown, failed(check, "", "app_id and app_secret: the token endpoint accepted a code that cannot exist; is endpoint a Logto tenant?", "")
	case errors.As(err, &te) && te.Code == "invalid_grant":
		return credsOK, passed(check, "", "app_id and app_secret: Logto accepts them")
	case errors.As(err, &te) && te.Code == "invalid_client" && strings.HasPrefix(te.Description, "invalid client"):
		return credsNoApp, failed(check, "", fmt.Sprintf("app_id: Logto has no application %q (Logto: invalid_client, %q)", ap.appID, te.Description),
			"set app_id to the App ID of your Traditional web application (Console → Applications → your application → App ID)")
	case errors.As(err, &te) && te.Code == "invalid_client":
		return credsBadSecret, failed(check, "", fmt.Sprintf("%s: Logto refuses it for application %s (Logto: invalid_client, %q)", secretFrom, ap.appID, te.Description),
			fmt.Sprintf("set %s to one of the App secrets in Console → Applications → %s → Endpoints & Credentials", secretFrom, ap.appID))
	case errors.As(err, &te) && te.Code == "unauthorized_client":
		return credsOK, failed(check, "", fmt.Sprintf("app_id: application %s may not use the authorization code flow (Logto: unauthorized_client, %q)", ap.appID, te.Description),
			"use a Traditional web application (Console → Applications → Create application → Traditional web) and its App ID and App secret")
	case errors.As(err, &te):
		return credsUnknown, failed(check, "", fmt.Sprintf("app_id and app_secret: Logto answered %d %s (%q)", te.Status, te.Code, te.Description), "")
	default:
		return credsUnknown, failed(check, "", fmt.Sprintf("app_id and app_secret: %s: %s", md.TokenEndpoint, unavailableCause(err)),
			"make sure this machine can reach Logto's "+md.TokenEndpoint)
	}
}

// authAnswer is how Logto answered an authorization request.
type authAnswer struct {
	status    int
	signIn    bool   // sent on to Logto's sign-in page: all was accepted
	back      bool   // sent back to the redirect URI (with error)
	err, desc string // the OAuth error, in the body or on the way back
	failure   error  // the request did not get an answer
}

// probeAuthorization sends an authorization request like the module's
// sign-ins (code flow, PKCE S256, state), with only openid asked for and
// the redirect not followed: Logto checks the client, then the redirect
// URI (400 invalid_redirect_uri), then the resources (back to the
// redirect URI with invalid_target), and only then sends the browser to
// its sign-in page, where nobody will sign in.
func (pr *prober) probeAuthorization(ctx context.Context, md *metadata, clientID, redirectURI, resource string) authAnswer {
	q := url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"response_type":         {"code"},
		"scope":                 {"openid"},
		"state":                 {randomString(16)},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
		"code_challenge_method": {"S256"},
	}
	if resource != "" {
		q.Set("resource", resource)
	}
	resp, body, err := pr.get(ctx, withQuery(md.AuthorizationEndpoint, q))
	if err != nil {
		return authAnswer{failure: err}
	}
	a := authAnswer{status: resp.StatusCode}
	if loc, err := resp.Location(); err == nil && resp.StatusCode/100 == 3 {
		back := *loc
		back.RawQuery, back.Fragment = "", ""
		if back.String() == redirectURI {
			a.back = true
			a.err, a.desc = loc.Query().Get("error"), loc.Query().Get("error_description")
		} else {
			a.signIn = true
		}
		return a
	}
	a.err, a.desc = readOAuthError(body)
	return a
}

// probeEndSession asks the end-session endpoint to accept a post sign-out
// URI for the application, without a Logto session: a registered URI gets
// the page that would confirm the sign-out (which ends nothing, as there
// is no session, and is not submitted), an unregistered one 400.
func (pr *prober) probeEndSession(ctx context.Context, md *metadata, clientID, uri string) authAnswer {
	q := url.Values{"client_id": {clientID}, "post_logout_redirect_uri": {uri}}
	resp, body, err := pr.get(ctx, withQuery(md.EndSessionEndpoint, q))
	if err != nil {
		return authAnswer{failure: err}
	}
	a := authAnswer{status: resp.StatusCode}
	a.err, a.desc = readOAuthError(body)
	return a
}

func (pr *prober) get(ctx context.Context, u string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json, text/html")
	resp, err := pr.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", endpointName(u), scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIdPResponse))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", endpointName(u), err)
	}
	return resp, body, nil
}

func withQuery(endpoint string, q url.Values) string {
	if strings.Contains(endpoint, "?") {
		return endpoint + "&" + q.Encode()
	}
	return endpoint + "?" + q.Encode()
}

// readOAuthError reads an OAuth error answer; Logto answers errors as JSON.
func readOAuthError(body []byte) (code, desc string) {
	var oe struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &oe) != nil {
		return "", ""
	}
	return oe.Error, truncate(oe.Description, 200)
}

// describe says what Logto answered, for a failure's message.
func (a authAnswer) describe() string {
	switch {
	case a.failure != nil:
		return a.failure.Error()
	case a.err != "" && a.desc != "":
		return fmt.Sprintf("Logto: %d %s, %q", a.status, a.err, a.desc)
	case a.err != "":
		return fmt.Sprintf("Logto: %d %s", a.status, a.err)
	}
	return fmt.Sprintf("Logto answered %d %s", a.status, http.StatusText(a.status))
}

// tenantReport is everything checked against one Logto endpoint: the
// tenant's own checks, then each application's.
type tenantReport struct {
	Endpoint     string        `json:"endpoint"`
	Checks       []checkResult `json:"checks"`
	Applications []appReport   `json:"applications"`
}

// appReport is one application's checks. AppID is empty for bearer_only
// blocks without one: they have no application at Logto.
type appReport struct {
	AppID  string        `json:"app_id,omitempty"`
	Sites  []string      `json:"sites"`
	Checks []checkResult `json:"checks"`
}

// appProbe is one application's checks in the making.
type appProbe struct {
	ap    *appPlan
	creds credentials
	cred  checkResult

	redirects  []checkResult
	registered []string // redirect URIs Logto accepted
	signOuts   []checkResult
	resources  []checkResult
}

// checkTenant runs every check of one tenant: discovery first (every other
// question is asked at an endpoint it names), then the keys and each
// application's credentials, redirect and post sign-out URIs at once, then
// the API resources, which need a redirect URI Logto accepted.
func (pr *prober) checkTenant(ctx context.Context, endpoint string, apps []*appPlan) tenantReport {
	rep := tenantReport{Endpoint: endpoint}
	d, res := pr.discover(ctx, endpoint)
	rep.Checks = append(rep.Checks, res)
	if d == nil || d.md == nil {
		rep.Checks = append(rep.Checks, notChecked("signing_keys", "", "signing keys: Logto's discovery failed"))
		if d != nil {
			rep.Checks = append(rep.Checks, d.clock())
		} else {
			rep.Checks = append(rep.Checks, notChecked("clock", "", "clock: Logto did not answer"))
		}
		for _, ap := range apps {
			ar := appReport{AppID: ap.appID, Sites: ap.sitesOrNone()}
			what := "the application, its redirect and post sign-out URIs and API resources"
			if ap.appID == "" {
				what = "the API resources of these bearer_only blocks"
			}
			ar.Checks = append(ar.Checks, notChecked("application", "", what+": Logto's discovery failed, so nothing more could be asked"))
			ar.Checks = append(ar.Checks, ap.unknownOrigins()...)
			rep.Applications = append(rep.Applications, ar)
		}
		return rep
	}
	md := d.md

	var wg sync.WaitGroup
	var keys checkResult
	pr.run(&wg, func() { keys = pr.keys(ctx, md) })
	probes := make([]*appProbe, len(apps))
	for i, ap := range apps {
		probes[i] = &appProbe{ap: ap}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.checkApp(ctx, md, probes[i])
		}()
	}
	wg.Wait()
	rep.Checks = append(rep.Checks, keys, d.clock())

	// Resources are the tenant's, so any application's accepted redirect
	// URI will do to ask about them, its own first.
	var anyClient, anyRedirect string
	for _, p := range probes {
		if len(p.registered) > 0 {
			anyClient, anyRedirect = p.ap.appID, p.registered[0]
			break
		}
	}
	for _, p := range probes {
		client, redirect := anyClient, anyRedirect
		if len(p.registered) > 0 {
			client, redirect = p.ap.appID, p.registered[0]
		}
		p.resources = make([]checkResult, len(p.ap.resources))
		for j, r := range p.ap.resources {
			if redirect == "" {
				p.resources[j] = notChecked("api_resource", r.indicator, fmt.Sprintf("API resource %s: Logto is asked about resources with a redirect URI it accepts, and none was", r.indicator))
				continue
			}
			pr.run(&wg, func() { p.resources[j] = pr.checkResource(ctx, md, client, redirect, r) })
		}
	}
	wg.Wait()

	for _, p := range probes {
		rep.Applications = append(rep.Applications, p.report())
	}
	return rep
}

// checkApp checks an application's credentials, then (if Logto knows the
// application) its redirect and post sign-out URIs.
func (pr *prober) checkApp(ctx context.Context, md *metadata, p *appProbe) {
	ap := p.ap
	switch {
	case ap.appID == "":
		p.cred = notChecked("credentials", "", "app_id, redirect and post sign-out URIs: these bearer_only blocks have no app_id (they need none); only the API resources their tokens are for are checked")
		return
	case !ap.cookies:
		p.cred = notChecked("credentials", "", "app_id and app_secret: every block of this application is bearer_only and never uses them")
		return
	}
	p.creds, p.cred = pr.probeCredentials(ctx, md, ap)
	if p.creds == credsNoApp {
		return
	}
	var wg sync.WaitGroup
	p.redirects = make([]checkResult, len(ap.redirects))
	accepted := make([]bool, len(ap.redirects))
	for i, uri := range ap.redirects {
		pr.run(&wg, func() { p.redirects[i], accepted[i] = pr.checkRedirect(ctx, md, ap.appID, uri) })
	}
	p.signOuts = make([]checkResult, len(ap.postSignOut))
	for i, uri := range ap.postSignOut {
		if md.EndSessionEndpoint == "" {
			p.signOuts[i] = notChecked("post_sign_out_redirect_uri", uri, fmt.Sprintf("post sign-out redirect URI %s: Logto's discovery names no end-session endpoint, so sign-out lands there directly", uri))
			continue
		}
		pr.run(&wg, func() { p.signOuts[i] = pr.checkSignOut(ctx, md, ap.appID, uri) })
	}
	wg.Wait()
	for i, ok := range accepted {
		if ok {
			p.registered = append(p.registered, ap.redirects[i])
		}
	}
}

func (pr *prober) checkRedirect(ctx context.Context, md *metadata, clientID, uri string) (checkResult, bool) {
	const check = "redirect_uri"
	a := pr.probeAuthorization(ctx, md, clientID, uri, "")
	switch {
	case a.failure != nil:
		return failed(check, uri, fmt.Sprintf("redirect URI %s: %s", uri, a.describe()), "make sure this machine can reach Logto's "+md.AuthorizationEndpoint), false
	case a.signIn:
		return passed(check, uri, fmt.Sprintf("redirect URI %s is registered", uri)), true
	case a.back:
		return passed(check, uri, fmt.Sprintf("redirect URI %s is registered (Logto sent the request back to it with %s)", uri, a.err)), true
	case a.err == "invalid_redirect_uri":
		return failed(check, uri, fmt.Sprintf("redirect URI %s is not registered (%s)", uri, a.describe()),
			fmt.Sprintf("Console → Applications → %s → Redirect URIs: add `%s`", clientID, uri)), false
	}
	return failed(check, uri, fmt.Sprintf("redirect URI %s: %s", uri, a.describe()), ""), false
}

func (pr *prober) checkSignOut(ctx context.Context, md *metadata, clientID, uri string) checkResult {
	const check = "post_sign_out_redirect_uri"
	a := pr.probeEndSession(ctx, md, clientID, uri)
	switch {
	case a.failure != nil:
		return failed(check, uri, fmt.Sprintf("post sign-out redirect URI %s: %s", uri, a.describe()), "make sure this machine can reach Logto's "+md.EndSessionEndpoint)
	case a.status == http.StatusOK:
		return passed(check, uri, fmt.Sprintf("post sign-out redirect URI %s is registered", uri))
	case a.status == http.StatusBadRequest && strings.Contains(a.desc, "post_logout_redirect_uri"):
		return failed(check, uri, fmt.Sprintf("post sign-out redirect URI %s is not registered (%s)", uri, a.describe()),
			fmt.Sprintf("Console → Applications → %s → Post sign-out redirect URIs: add `%s`", clientID, uri))
	}
	return failed(check, uri, fmt.Sprintf("post sign-out redirect URI %s: %s", uri, a.describe()), "")
}

func (pr *prober) checkResource(ctx context.Context, md *metadata, clientID, redirectURI string, r resource) checkResult {
	const check = "api_resource"
	var use, harm string
	switch {
	case r.signIn && r.bearer:
		use, harm = "asked for at sign-in, accepted in bearer tokens", "every sign-in of this application is refused, and no API client can get a token for it, until it does"
	case r.signIn:
		use, harm = "asked for at sign-in", "every sign-in of this application is refused until it does"
	default:
		use, harm = "accepted in bearer tokens", "no API client can get a token for it until it does"
	}
	a := pr.probeAuthorization(ctx, md, clientID, redirectURI, r.indicator)
	switch {
	case a.failure != nil:
		return failed(check, r.indicator, fmt.Sprintf("API resource %s: %s", r.indicator, a.describe()), "make sure this machine can reach Logto's "+md.AuthorizationEndpoint)
	case a.signIn:
		return passed(check, r.indicator, fmt.Sprintf("API resource %s exists (%s)", r.indicator, use))
	case a.back && a.err == "invalid_target":
		fix := fmt.Sprintf("Console → API resources → Create API resource with the API identifier `%s` (or correct the indicator in resources, token_resource or bearer)", r.indicator)
		if strings.HasPrefix(r.indicator, "urn:logto:") {
			fix = "this Logto has no organizations: upgrade Logto, or remove organization and the organization rules"
		}
		return failed(check, r.indicator, fmt.Sprintf("API resource %s does not exist (Logto: invalid_target, %q; %s): %s", r.indicator, a.desc, use, harm), fix)
	case a.err == "invalid_redirect_uri":
		return notChecked(check, r.indicator, fmt.Sprintf("API resource %s: Logto no longer accepts the redirect URI it was asked with", r.indicator))
	}
	return failed(check, r.indicator, fmt.Sprintf("API resource %s: %s", r.indicator, a.describe()), "")
}

// report puts the application's checks in the report's order.
func (p *appProbe) report() appReport {
	ap := p.ap
	ar := appReport{AppID: ap.appID, Sites: ap.sitesOrNone()}
	ar.Checks = append(ar.Checks, p.cred)
	if p.creds == credsNoApp && (len(ap.redirects) > 0 || len(ap.postSignOut) > 0) {
		ar.Checks = append(ar.Checks, notChecked("redirect_uri", "", fmt.Sprintf("redirect and post sign-out URIs: Logto has no application %q to ask about", ap.appID)))
	}
	ar.Checks = append(ar.Checks, p.redirects...)
	ar.Checks = append(ar.Checks, ap.unknownOrigins()...)
	ar.Checks = append(ar.Checks, p.signOuts...)
	ar.Checks = append(ar.Checks, p.resources...)
	if ap.appID != "" && len(ap.backchannel) > 0 && p.creds != credsNoApp {
		ar.Checks = append(ar.Checks, notChecked("backchannel_logout_uri", "", fmt.Sprintf(
			"back-channel logout URI: only Logto's Management API can read it; for sign-out everywhere, set Console → Applications → %s → Backchannel logout URI to %s",
			ap.appID, strings.Join(ap.backchannel, " or "))))
	}
	return ar
}

// unknownOrigins are the lines for sites whose address the config does
// not tell: never a silent pass.
func (ap *appPlan) unknownOrigins() []checkResult {
	var out []checkResult
	for _, o := range ap.unknown {
		out = append(out, notChecked("redirect_uri", o.host, fmt.Sprintf("redirect and post sign-out URIs of %s: %s", o.host, o.why)))
	}
	return out
}

func (ap *appPlan) sitesOrNone() []string {
	if ap.sites == nil {
		return []string{}
	}
	return ap.sites
}
