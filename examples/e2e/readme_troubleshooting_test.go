package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// quotedField is a field of a log line as Troubleshooting quotes it:
	// "msg":"..." or "reason":"...".
	quotedField = regexp.MustCompile(`"(msg|reason)":"([^"]+)"`)
	// metricReason is a sign-in failure reason Troubleshooting points to.
	metricReason = regexp.MustCompile("Metric reason: `([a-z_]+)`")
	// composedRuleReason is the reason of a rule that is not met, which
	// the module builds from the rule's kind.
	composedRuleReason = regexp.MustCompile(`^require (role|scope|organization|organization_role|claim) not met$`)
)

// TestREADMETroubleshootingQuotesRealLogLines: an operator searches the
// logs for the line Troubleshooting quotes, so every "msg" and "reason" it
// quotes must be one the module writes, word for word, and every metric
// reason it names one the module counts. A log line reworded in the code
// without the README fails here.
func TestREADMETroubleshootingQuotesRealLogLines(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(env.root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := readmeSection(string(b), "## Troubleshooting")
	if section == "" {
		t.Fatal("README.md has no ## Troubleshooting section")
	}
	// Quotes wrap across lines in prose; the code has them on one.
	section = strings.Join(strings.Fields(section), " ")

	source := moduleSource(t)
	quotes := quotedField.FindAllStringSubmatch(section, -1)
	if len(quotes) < 10 {
		t.Fatalf("Troubleshooting quotes %d log fields; expected the section's log lines", len(quotes))
	}
	for _, q := range quotes {
		field, text := q[1], q[2]
		if field == "reason" && composedRuleReason.MatchString(text) {
			if !strings.Contains(source, `"require " + rule.Kind + " not met"`) {
				t.Errorf("Troubleshooting quotes reason %q, but the module no longer builds rule reasons that way", text)
			}
			continue
		}
		if !strings.Contains(source, `"`+text+`"`) {
			t.Errorf("Troubleshooting quotes %s %q, which no module/*.go file writes", field, text)
		}
	}
	for _, m := range metricReason.FindAllStringSubmatch(section, -1) {
		if !strings.Contains(source, `"`+m[1]+`"`) {
			t.Errorf("Troubleshooting names the metric reason %q, which module/*.go does not count", m[1])
		}
	}
}

// moduleSource is every non-test Go file of module/, joined.
func moduleSource(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(env.root, "module", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	return all.String()
}
