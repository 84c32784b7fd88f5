package logto

// What a config will send Logto, for `caddy logto check`: every logto
// handler in a Caddy JSON config and where it sits (server, host names),
// and from that the redirect URIs its sign-ins carry, the post sign-out
// URIs its sign-outs carry and the API resources its sign-ins ask for.
// Nothing here touches the network.

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

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
