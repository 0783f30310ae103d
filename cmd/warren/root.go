package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/telemetry"
)

// globals are the flags every command takes.
type globals struct {
	url     string // --url
	output  string
	timeout time.Duration
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	// terminal: stdout is a terminal (progress bars, prompts).
	terminal bool
	// secrets hides the passwords of --url and WARREN_URL in every output.
	secrets *scrubber
	// broker is where the command connected, for the human-readable
	// outputs: "127.0.0.1:5672, vhost "/"".
	broker string
}

// localURL is the broker of a command that only reads, when neither --url
// nor WARREN_URL names one.
const localURL = "amqp://guest:guest@127.0.0.1:5672/"

// usageError is wrong usage (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func isUsage(err error) bool {
	var u *usageError
	if errors.As(err, &u) {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.Contains(msg, "arg(s)") || strings.HasPrefix(msg, "required flag")
}

func newRoot(stdin *os.File, stdout, stderr *os.File, secrets *scrubber) *cobra.Command {
	g := &globals{stdin: stdin, stdout: secrets.wrap(stdout), stderr: secrets.wrap(stderr), terminal: isTerminal(stdout), secrets: secrets}
	root := &cobra.Command{
		Use:   "warren",
		Short: "Topology as code, dead-letter triage and replay, and debugging for RabbitMQ services built with warren",
		Long: `warren is the operators' command of the warren library.

The broker is --url, or WARREN_URL. Commands that change the broker (topology
apply, dlq replay, dlq move, dlq purge, publish) refuse to run without one;
commands that only read fall back to amqp://guest:guest@127.0.0.1:5672/. Every
output names the host and vhost the command acted on. The URL takes the
library's options (heartbeat, connection_timeout, cacertfile, certfile,
keyfile, auth_mechanism=external for a client certificate, several hosts
separated by commas). Passwords are never printed.

Exit codes: 0 done (nothing differs), 1 failed, 2 wrong usage, 3 invalid
topology file, 4 diff found differences, 5 refused (apply would destroy
messages, purge not confirmed).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Example: `  warren topology diff services/orders/topology.yaml
  warren dlq ls orders.dlq billing.dlq
  warren dlq replay orders.dlq --reason _OTHER --rate 50
  warren tail shop 'order.#'`,
	}
	root.SetIn(stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.PersistentFlags().StringVar(&g.url, "url", "", "broker URL (default: $WARREN_URL; commands that only read: "+localURL+")")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", time.Minute, "give up on a lost broker after this long")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.output != "table" && g.output != "json" {
			return &usageError{fmt.Errorf("--output %q: want table or json", g.output)}
		}
		return nil
	}
	root.AddCommand(topologyCommand(g), dlqCommand(g), publishCommand(g), tailCommand(g))
	return root
}

// args wraps a cobra argument check so that its error is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// target is the broker URL: --url, else WARREN_URL; explicit is false when
// neither names one (the local broker, for commands that only read).
func (g *globals) target() (url string, explicit bool) {
	if g.url != "" {
		return g.url, true
	}
	if env := os.Getenv("WARREN_URL"); env != "" {
		return env, true
	}
	return localURL, false
}

// errNoTarget: a command that changes the broker was given none.
var errNoTarget = errors.New("this command changes the broker: name it with --url or WARREN_URL (it would otherwise act on " + localURL + ")")

// connectToChange is connect for the commands that change the broker: they
// never guess which one.
func (g *globals) connectToChange(ctx context.Context) (*conn.Conn, *broker.Ops, error) {
	if _, explicit := g.target(); !explicit {
		return nil, nil, &usageError{errNoTarget}
	}
	return g.connect(ctx)
}

// connect opens the connection: one attempt at first (a wrong URL fails at
// once), then reconnecting for --timeout after a loss.
func (g *globals) connect(ctx context.Context) (*conn.Conn, *broker.Ops, error) {
	url, _ := g.target()
	g.secrets.add(url)
	c, err := conn.New(url, conn.Config{
		ConnectionName: "warren-cli",
		Telemetry:      telemetry.Disabled(),
		Reconnect:      conn.RetryPolicy{FirstRetryImmediate: true, MaxElapsedTime: g.timeout, Backoff: retry.Backoff{MaxInterval: time.Second}},
	})
	if err != nil {
		return nil, nil, err
	}
	if err := c.Open(ctx); err != nil {
		_ = c.Close(context.Background())
		return nil, nil, fmt.Errorf("connect to %s: %w", redact(url), err)
	}
	if u, err := conn.ParseURL(url); err == nil {
		host := strings.TrimPrefix(strings.TrimPrefix(c.Endpoint(), "amqp://"), "amqps://")
		host, _, _ = strings.Cut(host, "/")
		g.broker = fmt.Sprintf("%s, vhost %q", host, u.Vhost)
	}
	ops, err := broker.NewOps(c, broker.OpsConfig{})
	if err != nil {
		_ = c.Close(context.Background())
		return nil, nil, err
	}
	return c, ops, nil
}

// userinfo finds the password of a URL.
var userinfo = regexp.MustCompile(`(amqps?://[^:/@\s]*:)[^@\s]*@`)

// redact hides passwords in s.
func redact(s string) string { return userinfo.ReplaceAllString(s, "${1}***@") }

// printJSON writes v as indented JSON.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (g *globals) json() bool { return g.output == "json" }

// table is a tabwriter for aligned columns whose lines carry no trailing
// blanks (an empty last column would leave them).
type table struct {
	buf bytes.Buffer
	tw  *tabwriter.Writer
	out io.Writer
}

func newTable(out io.Writer) *table {
	t := &table{out: out}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 4, 2, ' ', 0)
	return t
}

func (t *table) Write(p []byte) (int, error) { return t.tw.Write(p) }

// Flush writes the aligned lines.
func (t *table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		if line == "" {
			continue
		}
		nl := strings.HasSuffix(line, "\n")
		line = strings.TrimRight(line, " \n")
		if nl {
			line += "\n"
		}
		if _, err := io.WriteString(t.out, line); err != nil {
			return err
		}
	}
	t.buf.Reset()
	return nil
}
