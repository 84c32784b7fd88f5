package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// moduleFileName is a module file as the README's Development section
// names it: `gate.go` or `module/gate.go`. Paths into other directories
// (`examples/caddy/main.go`) do not match.
var moduleFileName = regexp.MustCompile("`(?:module/)?([a-z0-9_]+\\.go)`")

// TestREADMEDevelopmentListsModuleFiles: the Development section is where a
// newcomer learns where a behaviour lives, so it must name every file of
// module/ (tests aside) and no file that is gone. A file added, renamed or
// merged without the README fails here.
func TestREADMEDevelopmentListsModuleFiles(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(env.root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := developmentSection(string(b))
	if section == "" {
		t.Fatal("README.md has no ## Development section")
	}
	named := map[string]bool{}
	for _, m := range moduleFileName.FindAllStringSubmatch(section, -1) {
		named[m[1]] = true
	}

	entries, err := os.ReadDir(filepath.Join(env.root, "module"))
	if err != nil {
		t.Fatal(err)
	}
	exists := map[string]bool{}
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() && strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			exists[n] = true
		}
	}

	var missing, gone []string
	for n := range exists {
		if !named[n] {
			missing = append(missing, n)
		}
	}
	for n := range named {
		if !exists[n] {
			gone = append(gone, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(gone)
	if len(missing) > 0 {
		t.Errorf("module files the README's Development section does not name: %s", strings.Join(missing, ", "))
	}
	if len(gone) > 0 {
		t.Errorf("the README's Development section names module files that do not exist: %s", strings.Join(gone, ", "))
	}
}

// developmentSection is the text of the README's "## Development" section.
func developmentSection(readme string) string { return readmeSection(readme, "## Development") }

// readmeSection is the text from the heading to the next heading of the same
// or a higher level, or the end. A "# " line inside a code block (a shell
// comment) is not a heading.
func readmeSection(readme, heading string) string {
	lines := strings.Split(readme, "\n")
	start := -1
	fenced := false
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if start < 0 {
			if strings.TrimSpace(l) == heading {
				start = i + 1
			}
			continue
		}
		if strings.HasPrefix(l, "# ") || strings.HasPrefix(l, "## ") {
			return strings.Join(lines[start:i], "\n")
		}
	}
	if start < 0 {
		return ""
	}
	return strings.Join(lines[start:], "\n")
}
