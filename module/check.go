package logto

// `caddy logto check`: loads a config as `caddy run` would, finds every
// logto handler in it, and asks each handler's Logto tenant whether it
// will accept what the handler sends (checkconfig.go works that out,
// checktenant.go asks), before the first visitor finds out.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

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
