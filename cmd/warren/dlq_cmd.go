package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/topology"
)

func dlqCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Look at dead-letter queues, replay, move and purge them",
		Long: `dlq reads dead letters in every dialect a warren service meets: warren's
diagnostic headers (a route's dead-letter queue), the broker's own
dead-lettering (x-death: a reject, an expiry, a length or delivery limit),
Watermill's PoisonQueue middleware (reason_poisoned, topic_poisoned), and the
delay levels' queues (warren.delay.due, warren.delay.unroutable).`,
	}
	cmd.AddCommand(dlqLsCommand(g), dlqShowCommand(g), dlqReplayCommand(g), dlqMoveCommand(g), dlqPurgeCommand(g))
	return cmd
}

// peek reads up to limit messages of queue without taking them: they are
// consumed unacked and handed back, in their order, when the channel
// closes.
func peek(ctx context.Context, c *conn.Conn, queue string, limit int) ([]amqp.Delivery, int, error) {
	ch, err := c.NewChannel(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer ch.Close() // hands every message back, in order
	q, err := ch.QueueDeclarePassive(ctx, queue)
	if err != nil {
		return nil, 0, fmt.Errorf("queue %q: %w", queue, err)
	}
	n := min(q.Messages, limit)
	var out []amqp.Delivery
	for len(out) < n {
		d, ok, err := ch.Get(ctx, queue, false)
		if err != nil {
			return out, q.Messages, err
		}
		if !ok {
			break
		}
		out = append(out, d)
	}
	return out, q.Messages, nil
}

type queueSummary struct {
	Queue      string        `json:"queue"`
	Messages   int           `json:"messages"`
	OldestAge  string        `json:"oldest_age,omitempty"`
	TopReasons []reasonCount `json:"top_reasons,omitempty"`
	Scanned    int           `json:"scanned"`
	oldest     time.Duration
	reasons    map[string]int
}

type reasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

func dlqLsCommand(g *globals) *cobra.Command {
	var fromFile string
	var scan int
	cmd := &cobra.Command{
		Use:   "ls [QUEUE...]",
		Short: "Dead-letter queues with their message counts, oldest message age and top error reasons",
		Long: `ls summarises dead-letter queues: named ones, or those of a topology file
(--topology: every queue another queue dead-letters into, and every queue
whose name ends in .dlq). The reasons come from warren's diagnostic headers
(warren-dl-error-type), Watermill's poison metadata ("poisoned") or, for what
the broker dead-lettered, from x-death ("x-death:rejected", "x-death:expired",
"x-death:delivery_limit"). Up to --scan messages of each queue are read
without being taken.`,
		Example: `  warren dlq ls orders.dlq billing.dlq
  warren dlq ls --topology topology.yaml -o json`,
		RunE: func(cmd *cobra.Command, a []string) error {
			queues := a
			if fromFile != "" {
				t, problems, err := loadTopology(fromFile)
				if err != nil {
					return invalidFile(g, fromFile, problems, err)
				}
				queues = append(queues, deadLetterQueues(t)...)
			}
			if len(queues) == 0 {
				return &usageError{errors.New("name the dead-letter queues, or give --topology")}
			}
			c, _, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			now := time.Now()
			var out []queueSummary
			for _, q := range queues {
				msgs, count, err := peek(cmd.Context(), c, q, scan)
				if err != nil {
					return err
				}
				s := queueSummary{Queue: q, Messages: count, Scanned: len(msgs), reasons: map[string]int{}}
				for _, d := range msgs {
					diag := diagnose(d)
					s.reasons[diag.ErrorType]++
					if at := diag.deadLetteredAt(d); !at.IsZero() && now.Sub(at) > s.oldest {
						s.oldest = now.Sub(at)
					}
				}
				if s.oldest > 0 {
					s.OldestAge = s.oldest.Round(time.Second).String()
				}
				for r, n := range s.reasons {
					s.TopReasons = append(s.TopReasons, reasonCount{r, n})
				}
				sort.Slice(s.TopReasons, func(i, j int) bool {
					if s.TopReasons[i].Count != s.TopReasons[j].Count {
						return s.TopReasons[i].Count > s.TopReasons[j].Count
					}
					return s.TopReasons[i].Reason < s.TopReasons[j].Reason
				})
				if len(s.TopReasons) > 3 {
					s.TopReasons = s.TopReasons[:3]
				}
				out = append(out, s)
			}
			if g.json() {
				return g.printJSON(out)
			}
			fmt.Fprintf(g.stdout, "on %s\n", g.broker)
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "QUEUE\tMESSAGES\tOLDEST\tTOP REASONS")
			for _, s := range out {
				var rs []string
				for _, r := range s.TopReasons {
					rs = append(rs, fmt.Sprintf("%s (%d)", r.Reason, r.Count))
				}
				oldest := s.OldestAge
				if oldest == "" {
					oldest = "-"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s.Queue, s.Messages, oldest, strings.Join(rs, ", "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&fromFile, "topology", "", "list the dead-letter queues of this topology file")
	cmd.Flags().IntVar(&scan, "scan", 1000, "messages read per queue for ages and reasons")
	return cmd
}

// deadLetterQueues are the queues of t that others dead-letter into.
func deadLetterQueues(t topology.Topology) []string {
	set := map[string]bool{}
	dlx := map[string]bool{}
	for _, q := range t.Queues {
		if strings.HasSuffix(q.Name, ".dlq") {
			set[q.Name] = true
		}
		switch {
		case q.Args.DeadLetterExchange == "" && q.Args.DeadLetterRoutingKey != "":
			set[q.Args.DeadLetterRoutingKey] = true
		case q.Args.DeadLetterExchange != "":
			dlx[q.Args.DeadLetterExchange] = true
		}
	}
	for _, b := range t.Bindings {
		if dlx[b.Source] && b.Kind == topology.BindQueue {
			set[b.Destination] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

func dlqShowCommand(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "show QUEUE",
		Short: "The messages of a dead-letter queue with their diagnostics, without taking them",
		Long: `show prints each message's diagnostics (error, error type, attempts, original
exchange, routing key and queue, first and last failure, trace id) and its
body, pretty-printed when it is JSON. The messages are read unacked and handed
back in their order when show ends: nothing is lost or reordered. With -o
json, headers keep their AMQP types: a byte array is {"amqp_type":
"bytearray", "base64": ...}, a timestamp {"amqp_type": "timestamp", "value":
...}, a decimal {"amqp_type": "decimal", ...}.`,
		Example: `  warren dlq show orders.dlq
  warren dlq show orders.dlq --limit 5 -o json`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, _, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			msgs, count, err := peek(cmd.Context(), c, a[0], limit)
			if err != nil {
				return err
			}
			if g.json() {
				type shown struct {
					diagnosis
					Headers map[string]any `json:"headers,omitempty"`
					Body    any            `json:"body"`
				}
				out := []shown{}
				for _, d := range msgs {
					var body any = string(d.Body)
					if json.Valid(d.Body) {
						body = json.RawMessage(d.Body)
					}
					out = append(out, shown{diagnose(d), jsonHeaders(d.Headers), body})
				}
				return g.printJSON(map[string]any{"queue": a[0], "messages": count, "shown": out})
			}
			fmt.Fprintf(g.stdout, "%s on %s: %d message(s), showing %d\n", a[0], g.broker, count, len(msgs))
			for i, d := range msgs {
				diag := diagnose(d)
				fmt.Fprintf(g.stdout, "\n#%d  %s\n", i+1, orDash(diag.MessageID))
				tw := newTable(g.stdout)
				row := func(k, v string) {
					if v != "" {
						fmt.Fprintf(tw, "    %s\t%s\n", k, v)
					}
				}
				row("dialect", diag.Dialect)
				row("error", diag.Error)
				row("error type", diag.ErrorType)
				if diag.Attempts > 0 {
					if diag.AttemptsAtLeast {
						row("attempts", fmt.Sprintf("at least %d (the broker does not count in-process retries)", diag.Attempts))
					} else {
						row("attempts", fmt.Sprint(diag.Attempts))
					}
				}
				switch {
				case diag.Dialect == dialectWatermill:
					row("from", fmt.Sprintf("topic %q", diag.Topic))
				case diag.origin:
					row("from", fmt.Sprintf("exchange %q, routing key %q", diag.Exchange, diag.RoutingKey))
				default:
					row("from", "unknown (replay needs --to)")
				}
				row("queue", diag.Queue)
				row("handler", diag.Handler)
				if !diag.FirstFailed.IsZero() {
					row("first failure", diag.FirstFailed.UTC().Format(time.RFC3339))
				}
				if !diag.LastFailed.IsZero() {
					row("last failure", diag.LastFailed.UTC().Format(time.RFC3339))
				}
				row("trace id", diag.TraceID)
				_ = tw.Flush()
				fmt.Fprintln(g.stdout, "    body:")
				fmt.Fprintln(g.stdout, indent(describeBody(d), "      "))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most this many messages")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// describeBody is what show prints of a body: the body when it is text,
// else what it is (a payload step's output the command does not undo:
// a claim check, a sealed or compressed body, binary), never garbage.
func describeBody(d amqp.Delivery) string {
	if ref, ok := d.Headers[payload.HeaderClaimCheck].(string); ok {
		return fmt.Sprintf("(a claim check: the body, %v bytes, is blob %s in the producer's store)", d.Headers[payload.HeaderClaimSize], ref)
	}
	if alg, ok := d.Headers[payload.HeaderEncryption].(string); ok {
		return fmt.Sprintf("(encrypted: %s with key %v, %d bytes; the command does not decrypt)", alg, d.Headers[payload.HeaderKeyID], len(d.Body))
	}
	if d.ContentEncoding != "" && d.ContentEncoding != "identity" {
		return fmt.Sprintf("(content-encoding %s, %d bytes, not shown)", d.ContentEncoding, len(d.Body))
	}
	if !utf8.Valid(d.Body) {
		return fmt.Sprintf("(binary, %d bytes, not shown)", len(d.Body))
	}
	return prettyBody(d.Body)
}

func prettyBody(b []byte) string {
	if json.Valid(b) {
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err == nil {
			return buf.String()
		}
	}
	return string(b)
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// jsonHeaders makes AMQP headers printable as JSON, whole: what JSON has a
// type for as it is, the rest tagged with its AMQP type (a byte array in
// base64, never text with U+FFFD in it).
func jsonHeaders(h amqp.Table) map[string]any {
	if len(h) == 0 {
		return nil
	}
	out := map[string]any{}
	for k, v := range h {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case []byte:
		return map[string]any{"amqp_type": "bytearray", "base64": base64.StdEncoding.EncodeToString(x)}
	case time.Time:
		return map[string]any{"amqp_type": "timestamp", "value": x.UTC().Format(time.RFC3339)}
	case amqp.Decimal:
		return map[string]any{"amqp_type": "decimal", "scale": x.Scale, "value": x.Value}
	case amqp.Table:
		return jsonHeaders(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	}
	return v
}

func dlqPurgeCommand(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "purge QUEUE",
		Short: "Delete every message of a dead-letter queue, after asking",
		Long: `purge asks before it deletes (answer y), or deletes at once with --yes. Without
a terminal to ask on, it refuses unless --yes is given (exit code 5). It needs
--url or WARREN_URL: it never guesses which broker to empty a queue of.`,
		Example: `  warren dlq purge orders.dlq
  warren dlq purge orders.dlq --yes`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, _, err := g.connectToChange(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			ch, err := c.NewChannel(cmd.Context())
			if err != nil {
				return err
			}
			defer ch.Close()
			q, err := ch.QueueDeclarePassive(cmd.Context(), a[0])
			if err != nil {
				return fmt.Errorf("queue %q: %w", a[0], err)
			}
			if !yes {
				fmt.Fprintf(g.stderr, "purge %d message(s) from %s on %s? [y/N] ", q.Messages, a[0], g.broker)
				answer, _ := bufio.NewReader(g.stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return &exitError{exitRefused, errors.New("not purged")}
				}
			}
			n, err := ch.QueuePurge(cmd.Context(), a[0])
			if err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(map[string]any{"queue": a[0], "purged": n})
			}
			fmt.Fprintf(g.stdout, "purged %d message(s) from %s on %s\n", n, a[0], g.broker)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask")
	return cmd
}

// channelLost is an error of a pass whose connection went away.
type channelLost struct{ err error }

func (e *channelLost) Error() string { return e.err.Error() }
func (e *channelLost) Unwrap() error { return e.err }

func lostChannel(err error) bool {
	var cl *channelLost
	return errors.As(err, &cl)
}
