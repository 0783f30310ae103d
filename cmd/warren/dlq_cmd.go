package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/topology"
)

func dlqCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Look at dead-letter queues, replay and purge them"}
	cmd.AddCommand(dlqLsCommand(g), dlqShowCommand(g), dlqReplayCommand(g), dlqPurgeCommand(g))
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
(warren-dl-error-type) or, for what the broker dead-lettered, from x-death
("x-death:rejected", "x-death:expired", "x-death:delivery_limit"). Up to
--scan messages of each queue are read without being taken.`,
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
back in their order when show ends: nothing is lost or reordered.`,
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
			fmt.Fprintf(g.stdout, "%s: %d message(s), showing %d\n", a[0], count, len(msgs))
			for i, d := range msgs {
				diag := diagnose(d)
				fmt.Fprintf(g.stdout, "\n#%d  %s\n", i+1, orDash(diag.MessageID))
				tw := newTable(g.stdout)
				row := func(k, v string) {
					if v != "" {
						fmt.Fprintf(tw, "    %s\t%s\n", k, v)
					}
				}
				row("error", diag.Error)
				row("error type", diag.ErrorType)
				if diag.Attempts > 0 {
					row("attempts", fmt.Sprint(diag.Attempts))
				}
				row("from", fmt.Sprintf("exchange %q, routing key %q", diag.Exchange, diag.RoutingKey))
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
				fmt.Fprintln(g.stdout, indent(prettyBody(d.Body), "      "))
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

// jsonHeaders makes AMQP headers printable as JSON (byte slices as text).
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
		return string(x)
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

// replayFilter selects what a replay sends back.
type replayFilter struct {
	reason               string
	olderThan, newerThan time.Duration
	headers              map[string]string
}

type replaySummary struct {
	Queue              string `json:"queue"`
	Replayed           int    `json:"replayed"`
	Skipped            int    `json:"skipped_by_filter"`
	Failed             int    `json:"failed"`
	PossibleDuplicates int    `json:"possible_duplicates"`
	// AckedAgain are replayed messages whose removal a lost connection
	// undid: confirmed already, they were only removed again.
	AckedAgain   int            `json:"acked_again"`
	Reconnects   int            `json:"reconnects"`
	Destinations map[string]int `json:"destinations"`
	DryRun       bool           `json:"dry_run,omitempty"`
}

func dlqReplayCommand(g *globals) *cobra.Command {
	var f replayFilter
	var headers []string
	var to string
	var perSecond float64
	var dryRun bool
	var limit int
	cmd := &cobra.Command{
		Use:   "replay QUEUE",
		Short: "Send dead letters back to where they came from (or --to a queue), confirmed before each is removed",
		Long: `replay takes the messages of a dead-letter queue one by one and publishes each
back to its original exchange and routing key (from warren's diagnostic
headers or the broker's x-death), or to the queue --to names, without its
death record: it is a first attempt again. Each is removed from the
dead-letter queue only once the broker confirmed its publish, so a lost
connection loses nothing: replay reconnects and goes on. A message whose
publish was confirmed only after a reconnect may have been published twice:
those are counted as possible duplicates. Messages the filters do not select
stay in the queue, in their order.`,
		Example: `  warren dlq replay orders.dlq
  warren dlq replay orders.dlq --reason _OTHER --older-than 1h --rate 100
  warren dlq replay orders.dlq --header tenant=acme --to orders.retry --dry-run`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			f.headers = map[string]string{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, "=")
				if !ok {
					return &usageError{fmt.Errorf("--header %q: want key=value", h)}
				}
				f.headers[k] = v
			}
			c, ops, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			r := &replayer{g: g, c: c, ops: ops, queue: a[0], filter: f, to: to, dryRun: dryRun, limit: limit}
			if perSecond > 0 {
				r.limiter = rate.NewLimiter(rate.Limit(perSecond), 1)
			}
			sum, err := r.run(cmd.Context())
			if g.json() {
				if jerr := g.printJSON(sum); jerr != nil {
					return jerr
				}
			} else {
				printReplay(g, sum)
			}
			if err != nil {
				return err
			}
			if sum.Failed > 0 {
				return &exitError{exitFailed, fmt.Errorf("%d message(s) could not be replayed; they are still in %s", sum.Failed, a[0])}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.reason, "reason", "", "only messages whose error type is this, or whose error contains it")
	cmd.Flags().DurationVar(&f.olderThan, "older-than", 0, "only messages dead-lettered longer ago than this")
	cmd.Flags().DurationVar(&f.newerThan, "newer-than", 0, "only messages dead-lettered within this")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "only messages with this header value (key=value; repeatable)")
	cmd.Flags().StringVar(&to, "to", "", "send to this queue instead of where the messages came from")
	cmd.Flags().Float64Var(&perSecond, "rate", 0, "at most this many messages per second (0: as fast as confirms come)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be replayed; take nothing")
	cmd.Flags().IntVar(&limit, "limit", 0, "replay at most this many messages (0: all)")
	return cmd
}

func printReplay(g *globals, s replaySummary) {
	verb := "replayed"
	if s.DryRun {
		verb = "would replay"
	}
	fmt.Fprintf(g.stdout, "%s %d message(s) from %s", verb, s.Replayed, s.Queue)
	var dests []string
	for d, n := range s.Destinations {
		dests = append(dests, fmt.Sprintf("%s (%d)", d, n))
	}
	sort.Strings(dests)
	if len(dests) > 0 {
		fmt.Fprintf(g.stdout, " to %s", strings.Join(dests, ", "))
	}
	fmt.Fprintln(g.stdout)
	fmt.Fprintf(g.stdout, "  left by the filters: %d\n", s.Skipped)
	if !s.DryRun {
		fmt.Fprintf(g.stdout, "  failed (still in the queue): %d\n", s.Failed)
		fmt.Fprintf(g.stdout, "  possible duplicates: %d (published again after a lost confirm)\n", s.PossibleDuplicates)
		if s.AckedAgain > 0 {
			fmt.Fprintf(g.stdout, "  removed again after a reconnect (already replayed): %d\n", s.AckedAgain)
		}
		fmt.Fprintf(g.stdout, "  reconnects: %d\n", s.Reconnects)
	}
}

// replayer moves the messages of one dead-letter queue.
type replayer struct {
	g       *globals
	c       *conn.Conn
	ops     *topology.Ops
	queue   string
	filter  replayFilter
	to      string
	dryRun  bool
	limit   int
	limiter *rate.Limiter

	sum       replaySummary
	confirmed map[string]bool // identities confirmed this run
	// held are the messages left in the queue (not selected, or failed),
	// by identity: a later pass meets them again and counts them once.
	skipped, failed map[string]bool
	// uncertain: publishes a lost connection left without a confirm.
	uncertain map[string]bool
}

// identity tells a message apart across redeliveries: its message id, or
// its content when it has none.
func identity(d amqp.Delivery) string {
	if d.MessageId != "" {
		return "id:" + d.MessageId
	}
	return fmt.Sprintf("body:%x:%d", d.Body, d.Timestamp.UnixNano())
}

// run replays in passes: a pass gets messages (basic.get, unacked) until
// the queue has none ready; held messages (not selected, failed) go back
// when the pass's channel closes. A lost connection ends a pass; the next
// one, on the new connection, finds what was not acked.
func (r *replayer) run(ctx context.Context) (replaySummary, error) {
	r.sum = replaySummary{Queue: r.queue, Destinations: map[string]int{}, DryRun: r.dryRun}
	r.confirmed, r.skipped, r.failed, r.uncertain = map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	var bar *progressbar.ProgressBar
	for {
		done, _, err := r.pass(ctx, &bar)
		if err == nil && done {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(r.g.stderr)
			}
			return r.sum, nil
		}
		if err != nil && !lost(r.c, err) && !lostChannel(err) {
			return r.sum, err
		}
		// The connection went: wait for the next one and go on.
		r.sum.Reconnects++
		wctx, cancel := context.WithTimeout(ctx, r.g.timeout)
		werr := r.c.WaitConnected(wctx)
		cancel()
		if werr != nil {
			return r.sum, fmt.Errorf("connection lost and not back within %s: %w", r.g.timeout, werr)
		}
	}
}

// lost reports whether err came from the connection going away (rather
// than from a refusal of this message or queue).
func lost(c *conn.Conn, err error) bool {
	if errors.Is(err, amqp.ErrClosed) || errors.Is(err, conn.ErrClosed) || c.State() != conn.StateConnected {
		return true
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.ConnectionForced, amqp.FrameError, amqp.ChannelError, amqp.UnexpectedFrame, amqp.InternalError:
			return true
		}
	}
	return false
}

func (r *replayer) pass(ctx context.Context, bar **progressbar.ProgressBar) (done bool, total int, err error) {
	ch, err := r.c.NewChannel(ctx)
	if err != nil {
		return false, 0, err
	}
	defer ch.Close() // requeues what this pass held, in order
	defer func() {
		if err != nil && ch.ConnectionLost() {
			err = &channelLost{err}
		}
	}()
	q, err := ch.QueueDeclarePassive(ctx, r.queue)
	if err != nil {
		return false, 0, fmt.Errorf("queue %q: %w", r.queue, err)
	}
	if *bar == nil && r.g.terminal && !r.g.json() && q.Messages > 0 {
		*bar = progressbar.NewOptions(q.Messages, progressbar.OptionSetWriter(r.g.stderr), progressbar.OptionSetDescription("replay "+r.queue),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true))
	}
	now := time.Now()
	for {
		if r.limit > 0 && r.sum.Replayed >= r.limit {
			return true, q.Messages, nil
		}
		if err := ctx.Err(); err != nil {
			return false, q.Messages, err
		}
		d, ok, err := ch.Get(ctx, r.queue, false)
		if err != nil {
			return false, q.Messages, err
		}
		if !ok {
			return true, q.Messages, nil
		}
		diag := diagnose(d)
		id := identity(d)
		if !r.filter.matches(diag, d, now) {
			if !r.skipped[id] {
				r.skipped[id] = true
				r.sum.Skipped++ // held: back in place when the channel closes
				r.tick(*bar)
			}
			continue
		}
		exchange, key, known := diag.origin()
		if r.to != "" {
			exchange, key, known = "", r.to, true
		}
		if !known {
			r.fail(id, *bar, fmt.Sprintf("message %s says nothing of where it came from; give --to", orDash(d.MessageId)))
			continue
		}
		dest := fmt.Sprintf("exchange %q, routing key %q", exchange, key)
		if r.dryRun {
			r.sum.Replayed++
			r.sum.Destinations[dest]++
			r.tick(*bar)
			continue
		}
		if r.confirmed[id] {
			// Confirmed before a connection loss took its ack: it is in
			// its queue already. Only the ack is left to do.
			if err := d.Ack(false); err != nil {
				return false, q.Messages, err
			}
			r.sum.AckedAgain++
			continue
		}
		if r.limiter != nil {
			if err := r.limiter.Wait(ctx); err != nil {
				return false, q.Messages, err
			}
		}
		gen := r.c.Generation()
		perr := first(r.ops.PublishAll(ctx, []topology.Outgoing{{Ctx: ctx, Exchange: exchange, RoutingKey: key, Mandatory: true,
			Msg: cleanForReplay(d, r.queue)}}))
		if perr != nil {
			if lost(r.c, perr) {
				r.uncertain[id] = true // it may have reached the broker
				return false, q.Messages, perr
			}
			r.fail(id, *bar, fmt.Sprintf("replay of %s to %s: %s", orDash(d.MessageId), dest, redact(perr.Error())))
			continue
		}
		r.confirmed[id] = true
		if r.c.Generation() != gen || r.uncertain[id] {
			r.sum.PossibleDuplicates++ // an earlier publish of it may have arrived too
		}
		r.sum.Replayed++
		r.sum.Destinations[dest]++
		if err := d.Ack(false); err != nil {
			return false, q.Messages, err
		}
		r.tick(*bar)
	}
}

// fail counts a message that stays in the queue because it could not be
// replayed, once, and says why.
func (r *replayer) fail(id string, bar *progressbar.ProgressBar, why string) {
	if r.failed[id] {
		return
	}
	r.failed[id] = true
	r.sum.Failed++
	fmt.Fprintln(r.g.stderr, "warren:", why)
	r.tick(bar)
}

func (r *replayer) tick(bar *progressbar.ProgressBar) {
	if bar != nil {
		_ = bar.Add(1)
	}
}

func first(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func dlqPurgeCommand(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "purge QUEUE",
		Short: "Delete every message of a dead-letter queue, after asking",
		Long: `purge asks before it deletes (answer y), or deletes at once with --yes. Without
a terminal to ask on, it refuses unless --yes is given (exit code 5).`,
		Example: `  warren dlq purge orders.dlq
  warren dlq purge orders.dlq --yes`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, _, err := g.connect(cmd.Context())
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
				fmt.Fprintf(g.stderr, "purge %d message(s) from %s? [y/N] ", q.Messages, a[0])
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
			fmt.Fprintf(g.stdout, "purged %d message(s) from %s\n", n, a[0])
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
