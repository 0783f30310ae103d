package tests

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLibraryBuildsWithoutCommandDependencies: the library's packages build
// from the mission's four libraries (and what they bring) alone; the
// command's CLI framework, YAML parser and progress bar stay in cmd/warren.
func TestLibraryBuildsWithoutCommandDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/warrenmq/warren", "github.com/warrenmq/warren/conn",
		"github.com/warrenmq/warren/topology", "github.com/warrenmq/warren/ack", "github.com/warrenmq/warren/telemetry",
		"github.com/warrenmq/warren/middleware", "github.com/warrenmq/warren/router").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, forbidden := range []string{"github.com/spf13/cobra", "go.yaml.in/yaml", "github.com/schollz/progressbar", "golang.org/x/term",
		"golang.org/x/time", "github.com/jackc/pgx", "github.com/prometheus/client_golang"} {
		for _, pkg := range strings.Fields(string(out)) {
			if strings.HasPrefix(pkg, forbidden) {
				t.Errorf("the library imports %s", pkg)
			}
		}
	}
}
