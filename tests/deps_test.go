package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deps lists what the packages import, transitively.
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

func importsAny(pkgs []string, prefixes ...string) []string {
	var hits []string
	for _, pkg := range pkgs {
		for _, p := range prefixes {
			if pkg == p || strings.HasPrefix(pkg, p+"/") {
				hits = append(hits, pkg)
			}
		}
	}
	return hits
}

// TestLibraryBuildsWithoutCommandDependencies: the library's packages build
// from the mission's four libraries (and what they bring) alone; the
// command's CLI framework, YAML parser and progress bar live in the
// command's own module, and the core module does not even require them.
func TestLibraryBuildsWithoutCommandDependencies(t *testing.T) {
	all := deps(t, "github.com/warrenmq/warren", "github.com/warrenmq/warren/conn", "github.com/warrenmq/warren/broker",
		"github.com/warrenmq/warren/topology", "github.com/warrenmq/warren/ack", "github.com/warrenmq/warren/telemetry",
		"github.com/warrenmq/warren/middleware", "github.com/warrenmq/warren/router", "github.com/warrenmq/warren/retry")
	if hits := importsAny(all, "github.com/spf13/cobra", "go.yaml.in/yaml", "github.com/schollz/progressbar", "golang.org/x/term",
		"golang.org/x/time", "github.com/jackc/pgx", "github.com/prometheus/client_golang", "github.com/Shopify/toxiproxy"); len(hits) > 0 {
		t.Errorf("the library imports %v", hits)
	}
	mod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"github.com/spf13/cobra", "github.com/schollz/progressbar", "github.com/Shopify/toxiproxy", "github.com/prometheus"} {
		if strings.Contains(string(mod), m) {
			t.Errorf("the core module requires %s: a service that imports warren would have it in its module graph", m)
		}
	}
}

// TestLayersImportOnlyDown: conn (the bottom) knows neither Watermill nor
// the ack vocabulary; topology (the data) imports no engine; telemetry
// imports neither ack nor Watermill.
func TestLayersImportOnlyDown(t *testing.T) {
	for pkg, forbidden := range map[string][]string{
		"github.com/warrenmq/warren/conn":      {"github.com/ThreeDotsLabs/watermill", "github.com/warrenmq/warren/ack"},
		"github.com/warrenmq/warren/topology":  {"github.com/warrenmq/warren/conn", "github.com/warrenmq/warren/broker", "github.com/rabbitmq/amqp091-go/internal"},
		"github.com/warrenmq/warren/telemetry": {"github.com/ThreeDotsLabs/watermill", "github.com/warrenmq/warren/ack"},
		"github.com/warrenmq/warren/broker":    {"github.com/ThreeDotsLabs/watermill", "github.com/warrenmq/warren/ack"},
	} {
		if hits := importsAny(deps(t, pkg), forbidden...); len(hits) > 0 {
			t.Errorf("%s imports %v", pkg, hits)
		}
	}
}
