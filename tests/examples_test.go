package tests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/internal/rabbittest"
)

// TestExamples builds every example and runs it against the broker with a
// bounded time, so none can rot.
func TestExamples(t *testing.T) {
	t.Parallel()
	b := rabbittest.Shared(t)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "./examples/...")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/...: %v\n%s", err, out)
	}
	want := map[string][]string{
		"quickstart": {"consumed \"hello, warren\"", "succeeds on call 3 (attempt 3: back after a 1s delayed retry)", "dead-lettered to quickstart.orders.dlq", "reconnecting -> connected", "order B-2 succeeds", "done"},
		"worker":     {"job-3 fails (attempt 6)", "dead-lettered job-3 after 6 attempts", "finished 4 jobs"},
		"tracing": {"spans, 1 trace(s)", "  send example.tracing [producer]", "    process example.tracing [consumer] ERROR: payment service unavailable",
			"      ! exception (attempt 1)", "      retry [internal] ERROR", "        process example.tracing [consumer] ERROR: middleware: delayed retries exhausted",
			"      ! exception (attempt 2)", "          ! exception (attempt 4)", "          send example.tracing.dlq [producer]", "          ack example.tracing [client]", "      ack example.tracing [client]"},
		"plain-watermill": {"flaky: attempt 2", "flaky: handled on attempt 4; it never spun", "plain Watermill router: 3 messages through warren"},
		"reconnect":       {"connected -> reconnecting", "reconnecting -> connected", "closing -> closed"},
		"rpc":             {"tea costs 300", "biscuits costs 800", "remote error (not_sold): we do not sell unicorns", "unroutable after", "done"},
		"scheduled":       {"stand up          due", "drink water       due", "water the plants  due", "done"},
		"cluster":         {"connecting -> connecting (attempt 1)", "connected to amqp://127.0.0.1:5672/"},
	}
	entries, err := os.ReadDir("../examples")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), "_") {
			continue
		}
		if _, err := os.Stat(filepath.Join("../examples", e.Name(), "go.mod")); err == nil {
			continue // a module of its own, tested there (make test runs it)
		}
		name := e.Name()
		if _, ok := want[name]; !ok {
			t.Errorf("example %s has no expectations here", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, name))
			cmd.Env = append(os.Environ(), "WARREN_URL="+b.URL)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, out.String())
			}
			for _, s := range want[name] {
				if !strings.Contains(out.String(), s) {
					t.Errorf("%s output lacks %q:\n%s", name, s, out.String())
				}
			}
		})
	}
}

// TestReadmeQuickStartCompiles builds the README's quick-start program.
func TestReadmeQuickStartCompiles(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(package main.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no ```go block with a main package")
	}
	dir, err := os.MkdirTemp("../examples", "_readme-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"vet", "./" + filepath.Base(dir)}, {"build", "-o", os.DevNull, "./" + filepath.Base(dir)}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = "../examples"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v of the README quick start: %v\n%s", args, err, out)
		}
	}
}

// TestExamplesImportOnlyPublicPackages: an example can be copied out of the
// repository and still build: it imports no internal package of warren's.
func TestExamplesImportOnlyPublicPackages(t *testing.T) {
	for _, dir := range []string{"..", "../examples/cqrs", "../examples/observability", "../examples/kubernetes", "../pg"} {
		pattern := "./examples/..."
		if dir != ".." {
			pattern = "./..."
		}
		cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, pattern)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list in %s: %v\n%s", dir, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			fields := strings.Fields(line)
			if len(fields) == 0 || !strings.Contains(fields[0], "example") {
				continue
			}
			for _, imp := range fields[1:] {
				if strings.HasPrefix(imp, "github.com/warrenmq/warren/") && strings.Contains(imp, "/internal") {
					t.Errorf("example %s imports %s: it cannot be copied out", fields[0], imp)
				}
			}
		}
	}
}
