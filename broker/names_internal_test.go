package broker

import (
	"regexp"
	"testing"
)

// TestGeneratedNames: a generated queue name and a generated tag are their
// prefix and 24 random hex digits.
func TestGeneratedNames(t *testing.T) {
	for _, c := range []struct {
		gen  func() string
		want *regexp.Regexp
	}{
		{generatedQueueName, regexp.MustCompile(`^warren\.gen-[0-9a-f]{24}$`)},
		{generatedTag, regexp.MustCompile(`^warren-[0-9a-f]{24}$`)},
	} {
		a, b := c.gen(), c.gen()
		if !c.want.MatchString(a) || !c.want.MatchString(b) || a == b {
			t.Fatalf("generated %q and %q, want two different names matching %s", a, b, c.want)
		}
	}
}
