package e2e

// The README's Caddyfiles, read from README.md itself so the README and the
// tests cannot drift. Each ```caddyfile block is named by the bold lead-in
// ("**A B2B site ...**") or, failing that, the heading above it, and made
// runnable here by a small fixed convention:
//
//   - https://your-tenant.logto.app is the endpoint: {env.LOGTO_ENDPOINT};
//   - a site address with a dot (example.com, app.example.com) is
//     http://localhost:<port>; *.example.com is http://*.app.localhost:<port>,
//     so {labels.2} is still the subdomain;
//   - reverse_proxy upstreams localhost:3000 and localhost:9000 are an echo
//     upstream; /srv/site is examples/static-site/site;
//   - a block that imports a snippet it does not define (the B2B recipe's
//     logto_app) gets the snippet of that name from an earlier block;
//   - a fragment (a bare logto, log or handle_errors block) is put into a
//     site by its test.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeBlock is one ```caddyfile block of README.md.
type readmeBlock struct {
	title string // the bold lead-in or heading before it
	line  int    // where it starts in README.md
	text  string // as written, the list indentation removed
}

var (
	boldLead  = regexp.MustCompile(`^\*\*(.+?)\*\*`)
	fenceOpen = regexp.MustCompile("^(\\s*)```caddyfile\\s*$")
	// otherFence opens a code block of another language, whose lines
	// (a shell comment, say) must not be taken for headings.
	otherFence  = regexp.MustCompile("^\\s*```")
	fenceClose  = regexp.MustCompile("^\\s*```\\s*$")
	headingLine = regexp.MustCompile(`^#+\s+(.*)$`)
)

// readmeCaddyfiles returns every ```caddyfile block of README.md.
func readmeCaddyfiles(t *testing.T) []readmeBlock {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []readmeBlock
	var heading, bold string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if m := headingLine.FindStringSubmatch(line); m != nil {
			heading, bold = m[1], ""
			continue
		}
		if m := boldLead.FindStringSubmatch(line); m != nil {
			bold = m[1]
			continue
		}
		m := fenceOpen.FindStringSubmatch(line)
		if m == nil {
			if otherFence.MatchString(line) {
				for sc.Scan() {
					n++
					if fenceClose.MatchString(sc.Text()) {
						break
					}
				}
			}
			continue
		}
		blk := readmeBlock{title: heading, line: n}
		if bold != "" {
			blk.title = bold
		}
		var body []string
		for sc.Scan() {
			n++
			l := sc.Text()
			if fenceClose.MatchString(l) {
				break
			}
			body = append(body, strings.TrimPrefix(l, m[1]))
		}
		blk.text = strings.Join(body, "\n") + "\n"
		out = append(out, blk)
	}
	if len(out) == 0 {
		t.Fatal("README.md has no caddyfile blocks")
	}
	return out
}

// recipeSite is where a recipe runs: its port, and the upstream that
// stands in for localhost:3000, localhost:9000 and localhost:9001.
type recipeSite struct {
	port     int
	upstream string // host:port
}

var (
	siteAddressLine = regexp.MustCompile(`(?m)^(\S+\.\S+) \{$`)
	importLine      = regexp.MustCompile(`(?m)^\s*import (\S+)\s*$`)
)

// runnable applies the convention above to a README block.
func (b readmeBlock) runnable(t *testing.T, all []readmeBlock, rs recipeSite) string {
	t.Helper()
	s := b.text
	for _, m := range importLine.FindAllStringSubmatch(s, -1) {
		if !strings.Contains(s, "("+m[1]+") {") {
			s = snippet(t, all, m[1]) + "\n" + s
		}
	}
	s = strings.ReplaceAll(s, "https://your-tenant.logto.app", "{env.LOGTO_ENDPOINT}")
	s = siteAddressLine.ReplaceAllStringFunc(s, func(line string) string {
		if strings.HasPrefix(line, "*.") {
			return fmt.Sprintf("http://*.app.localhost:%d {", rs.port)
		}
		return fmt.Sprintf("http://localhost:%d {", rs.port)
	})
	for _, up := range []string{"localhost:3000", "localhost:9000", "localhost:9001"} {
		s = strings.ReplaceAll(s, "reverse_proxy "+up, "reverse_proxy "+rs.upstream)
	}
	return strings.ReplaceAll(s, "/srv/site", filepath.Join(env.root, "examples/static-site/site"))
}

// snippet is the definition of snippet name from the README block that has
// it.
func snippet(t *testing.T, all []readmeBlock, name string) string {
	t.Helper()
	for _, b := range all {
		start := strings.Index(b.text, "("+name+") {\n")
		if start < 0 {
			continue
		}
		end := strings.Index(b.text[start:], "\n}\n")
		if end < 0 {
			t.Fatalf("README line %d: snippet %s is not closed", b.line, name)
		}
		return b.text[start : start+end+3]
	}
	t.Fatalf("no README block defines the snippet %s", name)
	return ""
}

// TestReadmeCaddyfilesAreFormatted: Caddy warns "Caddyfile input is not
// formatted" on a Caddyfile that `caddy fmt` would change, so a newcomer
// copying a README block (or running an example) would be greeted by a
// warning. Every block, and every example's Caddyfile, must come out of
// `caddy fmt` unchanged.
func TestReadmeCaddyfilesAreFormatted(t *testing.T) {
	if env.buildErr != nil {
		t.Fatal(env.buildErr)
	}
	dir := t.TempDir()
	blocks := readmeCaddyfiles(t)
	examples, _ := filepath.Glob(filepath.Join(env.root, "examples/*/Caddyfile"))
	if len(examples) == 0 {
		t.Fatal("no examples/*/Caddyfile")
	}
	for _, f := range examples {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(env.root, f)
		blocks = append(blocks, readmeBlock{title: rel, line: 1, text: string(b)})
	}
	for i, b := range blocks {
		file := filepath.Join(dir, fmt.Sprintf("block%d", i))
		if err := os.WriteFile(file, []byte(b.text), 0o600); err != nil {
			t.Fatal(err)
		}
		// caddy fmt exits 1 when its output differs from the input; the
		// output is what counts.
		out, err := exec.Command(env.caddy, "fmt", file).Output()
		if len(out) == 0 {
			t.Errorf("README line %d (%s): caddy fmt: %v", b.line, b.title, err)
			continue
		}
		if string(out) != b.text {
			diff, _ := exec.Command(env.caddy, "fmt", "--diff", file).Output()
			t.Errorf("README line %d (%s) is not as caddy fmt writes it:\n%s", b.line, b.title, diff)
		}
	}
}
