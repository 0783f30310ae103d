package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

func topologyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "topology", Short: "Validate, compare, apply and export topology files"}
	cmd.AddCommand(validateCommand(g), diffCommand(g), applyCommand(g), exportCommand(g), schemaCommand(g))
	return cmd
}

func validateCommand(g *globals) *cobra.Command {
	var version string
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a topology file by the library's rules: every problem, with its line and field",
		Long: `validate checks every spec of the file by the library's rules, and, with
--rabbitmq, by what that version of RabbitMQ refuses: 4.3 refuses non-durable
non-exclusive queues, x-queue-mode and x-queue-master-locator; -1 as a
delivery limit is 4.0's; x-consumer-timeout needs 3.12, stream filters 3.13.`,
		Example: `  warren topology validate topology.yaml
  warren topology validate topology.yaml --rabbitmq 4.3 -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			target, err := parseTarget(version)
			if err != nil {
				return err
			}
			t, problems, err := loadTopologyFor(a[0], target)
			if err != nil && !errors.Is(err, ErrInvalidFile) {
				return err
			}
			if g.json() {
				if err := g.printJSON(map[string]any{"file": a[0], "valid": len(problems) == 0, "problems": problems}); err != nil {
					return err
				}
			} else {
				for _, p := range problems {
					fmt.Fprintln(g.stdout, p)
				}
				if len(problems) == 0 {
					fmt.Fprintf(g.stdout, "%s: valid (%d exchanges, %d queues, %d bindings)\n", a[0], len(t.Exchanges), len(t.Queues), len(t.Bindings))
				}
			}
			if len(problems) > 0 {
				return &exitError{exitInvalidFile, fmt.Errorf("%s: %d problem(s)", a[0], len(problems))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&version, "rabbitmq", "", "also check by the rules of this RabbitMQ version (3.10, 3.12, 3.13, 4.0, 4.3)")
	return cmd
}

// parseTarget reads a --rabbitmq version ("" is none).
func parseTarget(v string) (topology.Target, error) {
	if v == "" {
		return topology.Target{}, nil
	}
	t, ok := topology.ParseTarget(v)
	if !ok {
		return t, &usageError{fmt.Errorf("--rabbitmq %q: want a version such as 3.13 or 4.3", v)}
	}
	return t, nil
}

// difference is one way the broker differs from a file.
type difference struct {
	Kind   string `json:"kind"` // missing or different
	Entity string `json:"entity"`
	Detail string `json:"detail,omitempty"`
}

func diffCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "diff FILE",
		Short: "Show what is missing on the broker and what exists with other arguments, changing nothing",
		Long: `diff compares a topology file with the broker, over AMQP alone (no management
plugin needed): each exchange and queue is looked up passively, and one that
exists is declared again with the file's arguments on a throwaway channel,
which the broker accepts when they are equal and refuses, naming the argument,
when they are not. Nothing is created or changed. AMQP cannot list bindings:
their number is reported as not checked. Exit code 4 when something differs.`,
		Example: `  warren topology diff topology.yaml
  warren topology diff topology.yaml -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			t, problems, err := loadTopology(a[0])
			if err != nil {
				return invalidFile(g, a[0], problems, err)
			}
			c, _, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			diffs, err := diff(cmd.Context(), c, t)
			if err != nil {
				return err
			}
			if diffs == nil {
				diffs = []difference{}
			}
			if g.json() {
				if err := g.printJSON(map[string]any{"file": a[0], "differences": diffs, "unchecked_bindings": len(t.Bindings)}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "%s against %s\n", a[0], g.broker)
				printDiff(g, diffs, len(t.Bindings))
			}
			if len(diffs) > 0 {
				return &exitError{exitDiffers, nil}
			}
			return nil
		},
	}
}

func invalidFile(g *globals, path string, problems []Problem, err error) error {
	if !errors.Is(err, ErrInvalidFile) {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(g.stderr, p)
	}
	return &exitError{exitInvalidFile, fmt.Errorf("%s: %d problem(s); see warren topology validate", path, len(problems))}
}

// diff compares t with the broker c is connected to.
func diff(ctx context.Context, c *conn.Conn, t topology.Topology) ([]difference, error) {
	// probe runs declare on a channel of its own: a refusal closes it.
	probe := func(declare func(ch *conn.Channel) error) error {
		ch, err := c.NewChannel(ctx)
		if err != nil {
			return err
		}
		defer ch.Close()
		return declare(ch)
	}
	var out []difference
	classify := func(entity string, passive, active func(ch *conn.Channel) error) error {
		if err := probe(passive); err != nil {
			if errors.Is(err, conn.ErrNotFound) {
				out = append(out, difference{Kind: "missing", Entity: entity})
				return nil
			}
			return err
		}
		if err := probe(active); err != nil {
			if errors.Is(err, conn.ErrPreconditionFailed) {
				out = append(out, difference{Kind: "different", Entity: entity, Detail: preconditionDetail(err.Error())})
				return nil
			}
			return err
		}
		return nil
	}
	for _, x := range t.Exchanges {
		if x.IsReadOnly() {
			continue
		}
		err := classify(fmt.Sprintf("exchange %q", x.Name),
			func(ch *conn.Channel) error { return ch.ExchangeDeclarePassive(ctx, x.Name, string(x.Type)) },
			func(ch *conn.Channel) error {
				return ch.ExchangeDeclare(ctx, x.Name, string(x.Type), x.Durable, x.AutoDelete, x.Internal, false, x.Args.Table())
			})
		if err != nil {
			return nil, err
		}
	}
	for _, q := range t.Queues {
		err := classify(fmt.Sprintf("queue %q", q.Name),
			func(ch *conn.Channel) error {
				_, err := ch.QueueDeclarePassive(ctx, q.Name)
				return err
			},
			func(ch *conn.Channel) error {
				_, err := ch.QueueDeclare(ctx, q.Name, q.Durable, q.AutoDelete, q.Exclusive, false, q.Args.Table())
				return err
			})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// preconditionDetail is the useful part of a 406 reply: "inequivalent arg
// 'x-message-ttl' for queue 'q' in vhost '/': received ... but current is
// ...".
func preconditionDetail(reason string) string {
	if i := strings.Index(reason, "PRECONDITION_FAILED - "); i >= 0 {
		reason = reason[i+len("PRECONDITION_FAILED - "):]
	}
	if m := inequivalent.FindStringSubmatch(reason); m != nil {
		return fmt.Sprintf("%s: the file has %s, the broker has %s", m[1], m[2], m[3])
	}
	return reason
}

// inequivalent parses the broker's "inequivalent arg 'x-message-ttl' for
// queue 'q' in vhost 'v': received '90000' but current is '60000'" (the
// file's value is what it received).
var inequivalent = regexp.MustCompile(`inequivalent arg '([^']+)' for .*: received (.+) but current is (.+)$`)

func printDiff(g *globals, diffs []difference, unchecked int) {
	tw := newTable(g.stdout)
	counts := map[string]int{}
	for _, d := range diffs {
		mark := map[string]string{"missing": "+", "different": "~"}[d.Kind]
		fmt.Fprintf(tw, "%s %s\t%s\t%s\n", mark, d.Entity, d.Kind, d.Detail)
		counts[d.Kind]++
	}
	_ = tw.Flush()
	if len(diffs) == 0 {
		fmt.Fprint(g.stdout, "no differences")
	} else {
		fmt.Fprintf(g.stdout, "%d missing, %d different", counts["missing"], counts["different"])
	}
	if unchecked > 0 {
		fmt.Fprintf(g.stdout, " (%d binding(s) not checked: AMQP cannot list bindings; apply declares them)", unchecked)
	}
	fmt.Fprintln(g.stdout)
}

func applyCommand(g *globals) *cobra.Command {
	var force, acceptLoss bool
	cmd := &cobra.Command{
		Use:   "apply FILE",
		Short: "Declare what the topology file names and the broker lacks",
		Long: `apply declares every exchange, queue and binding of the file (declaring what
exists with the same arguments changes nothing). An entity that exists with
other arguments is an error, unless --force: then it is deleted and declared
again, with its bindings; a queue that holds messages is still refused
(exit code 5) unless --accept-message-loss is given too. It needs --url or
WARREN_URL: it never guesses which broker to change.`,
		Example: `  warren topology apply topology.yaml
  warren topology apply topology.yaml --force`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			t, problems, err := loadTopology(a[0])
			if err != nil {
				return invalidFile(g, a[0], problems, err)
			}
			if acceptLoss && !force {
				return &usageError{errors.New("--accept-message-loss needs --force")}
			}
			c, ops, err := g.connectToChange(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			opts := []broker.Option{broker.NoRestore()}
			if force {
				opts = append(opts, broker.WithForce())
			}
			if acceptLoss {
				opts = append(opts, broker.AcceptMessageLoss())
			}
			if err := ops.Apply(cmd.Context(), t, opts...); err != nil {
				var fr *broker.ForceRefusedError
				switch {
				case errors.As(err, &fr):
					return &exitError{exitRefused, fmt.Errorf("queue %q exists with other arguments and holds %d message(s): --force would delete them; "+
						"add --accept-message-loss to accept that (%s)", fr.Queue, fr.Messages, preconditionDetail(fr.Cause.Error()))}
				case errors.Is(err, conn.ErrPreconditionFailed):
					return fmt.Errorf("%s on %s: %s; `warren topology diff %s` lists every difference, and --force recreates what differs "+
						"(a queue that holds messages also needs --accept-message-loss)", a[0], g.broker, preconditionDetail(err.Error()), a[0])
				}
				return err
			}
			if g.json() {
				return g.printJSON(map[string]any{"file": a[0], "exchanges": len(t.Exchanges), "queues": len(t.Queues), "bindings": len(t.Bindings)})
			}
			fmt.Fprintf(g.stdout, "applied %s on %s: %d exchanges, %d queues, %d bindings\n", a[0], g.broker, len(t.Exchanges), len(t.Queues), len(t.Bindings))
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "recreate entities that exist with other arguments")
	cmd.Flags().BoolVar(&acceptLoss, "accept-message-loss", false, "with --force, also recreate queues that hold messages")
	return cmd
}

// definitions is the part of the broker's definitions export warren reads
// (rabbitmqctl export_definitions, or the management UI's export).
type definitions struct {
	Exchanges []struct {
		Name       string         `json:"name"`
		Vhost      string         `json:"vhost"`
		Type       string         `json:"type"`
		Durable    bool           `json:"durable"`
		AutoDelete bool           `json:"auto_delete"`
		Internal   bool           `json:"internal"`
		Arguments  map[string]any `json:"arguments"`
	} `json:"exchanges"`
	Queues []struct {
		Name       string         `json:"name"`
		Vhost      string         `json:"vhost"`
		Durable    bool           `json:"durable"`
		AutoDelete bool           `json:"auto_delete"`
		Arguments  map[string]any `json:"arguments"`
	} `json:"queues"`
	Bindings []struct {
		Source          string         `json:"source"`
		Vhost           string         `json:"vhost"`
		Destination     string         `json:"destination"`
		DestinationType string         `json:"destination_type"`
		RoutingKey      string         `json:"routing_key"`
		Arguments       map[string]any `json:"arguments"`
	} `json:"bindings"`
}

func exportCommand(g *globals) *cobra.Command {
	var vhost, format string
	var includeWarren bool
	cmd := &cobra.Command{
		Use:   "export DEFINITIONS.json",
		Short: "Turn the broker's definitions into a topology file (YAML) or Go",
		Long: `export reads the broker's definitions, as "rabbitmqctl export_definitions" or
the management UI's export writes them, and prints the topology of one vhost
as a topology file (YAML, the default) or as Go (a topology.Topology
literal). Typed arguments become the file's fields; the others stay under
arguments. Server-named and exclusive queues are not definitions and are not
exported. warren's own infrastructure (warren.*: the delay levels, the
hand-over of due messages) is left out, since warren declares it itself;
--include-warren keeps it.`,
		Example: `  rabbitmqctl export_definitions /tmp/defs.json && warren topology export /tmp/defs.json --vhost /
  warren topology export defs.json --vhost orders --format go`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if format != "yaml" && format != "go" {
				return &usageError{fmt.Errorf("--format %q: want yaml or go", format)}
			}
			raw, err := os.ReadFile(a[0])
			if err != nil {
				return err
			}
			var defs definitions
			if err := json.Unmarshal(raw, &defs); err != nil {
				return fmt.Errorf("%s: not a definitions export: %w", a[0], err)
			}
			t := fromDefinitions(defs, vhost)
			if !includeWarren {
				var n int
				if t, n = withoutWarren(t); n > 0 {
					fmt.Fprintf(g.stderr, "left out %d of warren's own entities (warren.*: delay levels, hand-over), which warren declares itself; --include-warren keeps them\n", n)
				}
			}
			if format == "go" {
				fmt.Fprint(g.stdout, goTopology(t))
				return nil
			}
			enc := yaml.NewEncoder(g.stdout)
			enc.SetIndent(2)
			if err := enc.Encode(fileOf(t)); err != nil {
				return err
			}
			return enc.Close()
		},
	}
	cmd.Flags().StringVar(&vhost, "vhost", "/", "the vhost to export")
	cmd.Flags().StringVar(&format, "format", "yaml", "yaml or go")
	cmd.Flags().BoolVar(&includeWarren, "include-warren", false, "keep warren's own infrastructure (warren.*)")
	return cmd
}

// warrenOwned reports whether an entity is warren's own infrastructure,
// which routers and publishers declare themselves.
func warrenOwned(name string) bool { return strings.HasPrefix(name, "warren.") }

// withoutWarren is t without warren's own entities and the bindings from
// or to them, and how many it left out.
func withoutWarren(t topology.Topology) (topology.Topology, int) {
	var out topology.Topology
	n := 0
	for _, x := range t.Exchanges {
		if warrenOwned(x.Name) {
			n++
			continue
		}
		out.Exchanges = append(out.Exchanges, x)
	}
	for _, q := range t.Queues {
		if warrenOwned(q.Name) {
			n++
			continue
		}
		out.Queues = append(out.Queues, q)
	}
	for _, b := range t.Bindings {
		if warrenOwned(b.Source) || warrenOwned(b.Destination) {
			n++
			continue
		}
		out.Bindings = append(out.Bindings, b)
	}
	return out, n
}

// fromDefinitions is the topology of vhost in defs, typed arguments parsed
// back into their fields.
func fromDefinitions(defs definitions, vhost string) topology.Topology {
	var t topology.Topology
	for _, x := range defs.Exchanges {
		if x.Vhost != vhost || x.Name == "" || strings.HasPrefix(x.Name, "amq.") {
			continue
		}
		args := amqp.Table(x.Arguments)
		spec := topology.ExchangeSpec{Name: x.Name, Type: topology.ExchangeType(x.Type), Durable: x.Durable, AutoDelete: x.AutoDelete, Internal: x.Internal}
		if ae, ok := args["alternate-exchange"].(string); ok {
			spec.Args.AlternateExchange = ae
			delete(args, "alternate-exchange")
		}
		spec.Args.Extra = nonEmpty(args)
		t.Exchanges = append(t.Exchanges, spec)
	}
	for _, q := range defs.Queues {
		if q.Vhost != vhost {
			continue
		}
		t.Queues = append(t.Queues, topology.QueueSpec{Name: q.Name, Durable: q.Durable, AutoDelete: q.AutoDelete, Args: queueArgs(q.Arguments)})
	}
	for _, b := range defs.Bindings {
		if b.Vhost != vhost || b.Source == "" {
			continue
		}
		spec := topology.BindSpec{Source: b.Source, Destination: b.Destination, RoutingKey: b.RoutingKey, Args: nonEmpty(amqp.Table(b.Arguments))}
		if b.DestinationType == "exchange" {
			spec.Kind = topology.BindExchange
		}
		t.Bindings = append(t.Bindings, spec)
	}
	sort.Slice(t.Exchanges, func(i, j int) bool { return t.Exchanges[i].Name < t.Exchanges[j].Name })
	sort.Slice(t.Queues, func(i, j int) bool { return t.Queues[i].Name < t.Queues[j].Name })
	sort.SliceStable(t.Bindings, func(i, j int) bool {
		a, b := t.Bindings[i], t.Bindings[j]
		return a.Source+"\x00"+a.Destination+"\x00"+a.RoutingKey < b.Source+"\x00"+b.Destination+"\x00"+b.RoutingKey
	})
	return t
}

func nonEmpty(t amqp.Table) amqp.Table {
	if len(t) == 0 {
		return nil
	}
	return t
}
