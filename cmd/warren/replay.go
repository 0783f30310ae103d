package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/headers"
	"github.com/warrenmq/warren/middleware"
)

// Headers a replay writes on what it sends back, so that an operator (and
// the next replay) can tell a replayed message from a new one.
const (
	// headerReplayedFrom names the dead-letter queue a replay took the
	// message from.
	headerReplayedFrom = "warren-replayed-from"
	// headerReplayedAt is when that replay started (RFC 3339): a message
	// that comes back to the dead-letter queue during the same replay
	// (its handler failed again) carries it, and the replay leaves it.
	headerReplayedAt = "warren-replayed-at"
)

// replayFilter selects what a replay sends back.
type replayFilter struct {
	reason               string
	olderThan, newerThan time.Duration
	headers              map[string]string
}

type replaySummary struct {
	Queue              string `json:"queue"`
	Broker             string `json:"broker"`
	Replayed           int    `json:"replayed"`
	Skipped            int    `json:"skipped_by_filter"`
	Failed             int    `json:"failed"`
	PossibleDuplicates int    `json:"possible_duplicates"`
	// AckedAgain are replayed messages whose removal a lost connection
	// undid: the same delivery, confirmed already, only removed again.
	AckedAgain int `json:"acked_again"`
	// CameBack are messages this replay sent back that were dead-lettered
	// again while it ran (their handler still fails): left in the queue.
	CameBack     int            `json:"came_back"`
	Reconnects   int            `json:"reconnects"`
	Destinations map[string]int `json:"destinations"`
	DryRun       bool           `json:"dry_run,omitempty"`
	// Moved: a move (dlq move) rather than a replay.
	Moved bool `json:"moved,omitempty"`
}

// replayFlags are the flags replay and move share.
type replayFlags struct {
	filter       replayFilter
	headers      []string
	perSecond    float64
	dryRun       bool
	limit        int
	topicMapping string
}

func (f *replayFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.filter.reason, "reason", "", "only messages whose error type is this, or whose error contains it")
	cmd.Flags().DurationVar(&f.filter.olderThan, "older-than", 0, "only messages dead-lettered longer ago than this")
	cmd.Flags().DurationVar(&f.filter.newerThan, "newer-than", 0, "only messages dead-lettered within this")
	cmd.Flags().StringArrayVar(&f.headers, "header", nil, "only messages with this header value (key=value; repeatable)")
	cmd.Flags().Float64Var(&f.perSecond, "rate", 0, "at most this many messages per second (0: as fast as confirms come)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "say what would be done; take nothing")
	cmd.Flags().IntVar(&f.limit, "limit", 0, "at most this many messages (0: all)")
}

// replayer builds the replayer of queue with these flags.
func (f *replayFlags) replayer(g *globals, queue string) (*replayer, error) {
	f.filter.headers = map[string]string{}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			return nil, &usageError{fmt.Errorf("--header %q: want key=value", h)}
		}
		f.filter.headers[k] = v
	}
	m := topicMapping(f.topicMapping)
	if _, _, err := m.route("t"); err != nil {
		return nil, err
	}
	r := &replayer{g: g, queue: queue, filter: f.filter, dryRun: f.dryRun, limit: f.limit, mapping: m}
	if f.perSecond > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(f.perSecond), 1)
	}
	return r, nil
}

func dlqReplayCommand(g *globals) *cobra.Command {
	var f replayFlags
	var to string
	cmd := &cobra.Command{
		Use:   "replay QUEUE",
		Short: "Send dead letters back to where they came from (or --to a queue), confirmed before each is removed",
		Long: `replay takes the messages of a dead-letter queue one by one and publishes each
back where it came from, without the record of its death: it is a first
attempt again. Where it came from is what the dead letter says in its
dialect: warren's diagnostic headers (the original exchange and routing key),
the broker's x-death (the first death outside warren's delay levels), or
Watermill's poison metadata (the topic, published through --topic-mapping); a
due scheduled message goes to its destination. --to sends them to a queue
instead.

Each is removed from the dead-letter queue only once the broker confirmed its
publish, so a lost connection loses nothing: replay reconnects and goes on. A
message whose publish was confirmed only after a reconnect may have been
published twice: those are counted as possible duplicates. A message is
removed without being published again only when it is the very delivery
whose publish was confirmed before a connection loss took its removal, never
because a message of the same id was replayed before: a message the service
dead-lettered again while the replay ran (its handler still fails) stays in
the queue, counted as "came back". Messages the filters do not select stay
in the queue, in their order. The user id a dead-letter copy moved to a
header is restored when the replaying user is that user, and the
per-message TTL always. It needs --url or WARREN_URL.`,
		Example: `  warren dlq replay orders.dlq
  warren dlq replay orders.dlq --reason _OTHER --older-than 1h --rate 100
  warren dlq replay orders.dlq --header tenant=acme --to orders.retry --dry-run
  warren dlq replay orders_poison --topic-mapping fanout`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			r, err := f.replayer(g, a[0])
			if err != nil {
				return err
			}
			r.to = to
			return r.execute(cmd.Context())
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&to, "to", "", "send to this queue instead of where the messages came from")
	cmd.Flags().StringVar(&f.topicMapping, "topic-mapping", "queue", "where a Watermill topic (a poisoned message's) is published: queue (the default exchange, the topic as queue), fanout (the exchange named by the topic), topic:EXCHANGE (the topic as routing key)")
	return cmd
}

func dlqMoveCommand(g *globals) *cobra.Command {
	var f replayFlags
	cmd := &cobra.Command{
		Use:   "move SRC DST",
		Short: "Move dead letters to another queue as they are, confirmed before each is removed",
		Long: `move takes the messages of queue SRC one by one and publishes each to queue DST
(through the default exchange) as it is: its death record and diagnostics
kept (the broker's x-death as warren-original-x-death, which a client may
not set), its TTL and user id in headers so that it can neither expire nor
be refused. Each is removed from SRC only once the broker confirmed it in
DST; a lost connection loses nothing, and move goes on after it, like
replay. The filters select what moves; the rest stays in SRC, in order. It
needs --url or WARREN_URL.`,
		Example: `  warren dlq move orders.dlq orders.dlq.parked --reason card_declined
  warren dlq move warren.delay.unroutable orders.dlq`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if a[0] == a[1] {
				return &usageError{errors.New("SRC and DST are the same queue")}
			}
			f.topicMapping = "queue"
			r, err := f.replayer(g, a[0])
			if err != nil {
				return err
			}
			r.to, r.move = a[1], true
			return r.execute(cmd.Context())
		},
	}
	f.register(cmd)
	return cmd
}

// execute connects, runs the replay and prints its summary.
func (r *replayer) execute(ctx context.Context) error {
	connect := r.g.connectToChange
	if r.dryRun {
		connect = r.g.connect // takes nothing
	}
	c, ops, err := connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	r.c, r.ops = c, ops
	r.user = userOf(r.g)
	sum, err := r.run(ctx)
	if r.g.json() {
		if jerr := r.g.printJSON(sum); jerr != nil {
			return jerr
		}
	} else {
		printReplay(r.g, sum)
	}
	if err != nil {
		return err
	}
	if sum.Failed > 0 {
		return &exitError{exitFailed, fmt.Errorf("%d message(s) could not be sent; they are still in %s", sum.Failed, r.queue)}
	}
	return nil
}

// userOf is the user the command connects as.
func userOf(g *globals) string {
	url, _ := g.target()
	if u, err := conn.ParseURL(url); err == nil {
		return u.Username
	}
	return ""
}

func printReplay(g *globals, s replaySummary) {
	verb := "replayed"
	switch {
	case s.DryRun && s.Moved:
		verb = "would move"
	case s.DryRun:
		verb = "would replay"
	case s.Moved:
		verb = "moved"
	}
	fmt.Fprintf(g.stdout, "%s %d message(s) from %s on %s", verb, s.Replayed, s.Queue, s.Broker)
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
		if s.CameBack > 0 {
			fmt.Fprintf(g.stdout, "  dead-lettered again while the replay ran (still in the queue): %d\n", s.CameBack)
		}
		fmt.Fprintf(g.stdout, "  possible duplicates: %d (published again after a lost confirm)\n", s.PossibleDuplicates)
		if s.AckedAgain > 0 {
			fmt.Fprintf(g.stdout, "  removed again after a reconnect (already sent, the same delivery): %d\n", s.AckedAgain)
		}
		fmt.Fprintf(g.stdout, "  reconnects: %d\n", s.Reconnects)
	}
}

// replayer sends the messages of one queue back (replay) or on (move).
type replayer struct {
	g       *globals
	c       *conn.Conn
	ops     *broker.Ops
	queue   string
	filter  replayFilter
	to      string
	move    bool
	dryRun  bool
	limit   int
	limiter *rate.Limiter
	mapping topicMapping
	user    string

	started   string // the run's start, RFC 3339 (headerReplayedAt)
	sum       replaySummary
	confirmed map[string]bool // fingerprints of the deliveries whose publish was confirmed
	// held are the messages left in the queue (not selected, failed, back
	// again), by fingerprint: a later pass meets them again and counts
	// them once.
	skipped, failed, back map[string]bool
	// uncertain: fingerprints whose publish a lost connection left
	// without a confirm.
	uncertain map[string]bool
}

// fingerprint tells one delivery from every other message, including a
// new dead letter of the same message (which carries other death records,
// timestamps and the replay's headers): every property, every header, the
// body. Only a redelivery of the same message has the same one.
func fingerprint(d amqp.Delivery) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%d\x00%d\x00%s\x00%s\x00%s\x00%s\x00%s\x00", d.MessageId, d.CorrelationId,
		d.ContentType, d.ContentEncoding, d.ReplyTo, d.Expiration, d.DeliveryMode, d.Priority, d.Timestamp.UTC().Format(time.RFC3339Nano),
		d.Type, d.UserId, d.AppId, d.RoutingKey)
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%#v\x00", k, d.Headers[k])
	}
	h.Write(d.Body)
	return hex.EncodeToString(h.Sum(nil))
}

// run replays in passes: a pass gets messages (basic.get, unacked) until
// the queue has none ready; held messages (not selected, failed, back
// again) go back when the pass's channel closes. A lost connection ends a
// pass; the next one, on the new connection, finds what was not acked.
func (r *replayer) run(ctx context.Context) (replaySummary, error) {
	r.started = time.Now().UTC().Format(time.RFC3339Nano)
	r.sum = replaySummary{Queue: r.queue, Broker: r.g.broker, Destinations: map[string]int{}, DryRun: r.dryRun, Moved: r.move}
	r.confirmed, r.skipped, r.failed, r.back, r.uncertain = map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
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

// hold counts a message left in the queue in set, once.
func (r *replayer) hold(set map[string]bool, id string, count *int, bar *progressbar.ProgressBar) {
	if set[id] {
		return
	}
	set[id] = true
	*count++
	r.tick(bar)
}

func (r *replayer) pass(ctx context.Context, bar **progressbar.ProgressBar) (done bool, total int, err error) {
	ch, err := r.c.NewChannel(ctx)
	if err != nil {
		return false, 0, err
	}
	defer ch.Close() // requeues what this pass held, in order
	defer func() {
		if err != nil && connx.ConnectionLost(ch) {
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
		id := fingerprint(d)
		if r.confirmed[id] && d.Redelivered {
			// The very delivery whose publish was confirmed before a
			// connection loss took its ack: in its destination already.
			// Only the ack is left to do.
			if err := d.Ack(false); err != nil {
				return false, q.Messages, err
			}
			r.sum.AckedAgain++
			continue
		}
		if at, _ := d.Headers[headerReplayedAt].(string); at == r.started && !r.move {
			// Sent back by this replay and dead-lettered again since: its
			// handler still fails. It stays (held until the pass ends).
			r.hold(r.back, id, &r.sum.CameBack, *bar)
			continue
		}
		diag := diagnose(d)
		if !r.filter.matches(diag, d, now) {
			r.hold(r.skipped, id, &r.sum.Skipped, *bar)
			continue
		}
		exchange, key := "", r.to
		if r.to == "" {
			var known bool
			exchange, key, known, err = diag.originVia(r.mapping)
			if err != nil {
				return false, q.Messages, err
			}
			if !known {
				r.fail(id, *bar, fmt.Sprintf("message %s (%s dialect) says nothing of where it came from; give --to", orDash(d.MessageId), diag.Dialect))
				continue
			}
		}
		dest := fmt.Sprintf("exchange %q, routing key %q", exchange, key)
		if r.to != "" {
			dest = fmt.Sprintf("queue %q", r.to)
		}
		if r.dryRun {
			r.sum.Replayed++
			r.sum.Destinations[dest]++
			r.tick(*bar)
			continue
		}
		if r.limiter != nil {
			if err := r.limiter.Wait(ctx); err != nil {
				return false, q.Messages, err
			}
		}
		msg := r.cleanForReplay(d)
		if r.move {
			msg = keptWhole(d)
		}
		gen := r.c.Generation()
		perr := first(r.ops.PublishAll(ctx, []broker.Outgoing{{Ctx: ctx, Exchange: exchange, RoutingKey: key, Mandatory: true, Msg: msg}}))
		if perr != nil {
			if lost(r.c, perr) {
				r.uncertain[id] = true // it may have reached the broker
				return false, q.Messages, perr
			}
			r.fail(id, *bar, fmt.Sprintf("send %s to %s: %s", orDash(d.MessageId), dest, redact(perr.Error())))
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
// sent, once, and says why.
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

// deathRecord reports the headers that record a message's death and its
// retries, which a replay drops: it is a first attempt again.
func deathRecord(k string) bool {
	switch {
	case headers.BrokerDeath(k), headers.Internal(k), strings.HasPrefix(k, "warren-dl-"), strings.HasSuffix(k, "_poisoned"),
		k == ack.AttemptHeader, k == middleware.HeaderRetryRound, k == middleware.HeaderRetryLevel, k == middleware.HeaderFirstFailure,
		k == ack.HeaderOriginalDeath, k == headerReplayedFrom, k == headerReplayedAt:
		return true
	}
	return false
}

// cleanForReplay is the message as a replay sends it back: its properties
// and headers without the record of its death (x-death, warren's
// diagnostic and retry headers, Watermill's poison metadata, the delay
// levels' routing), so that it is a first attempt again; with its
// per-message TTL restored, and its user id restored when the replaying
// user is that user (the broker refuses another user's id; the header stays
// then). headerReplayedFrom and headerReplayedAt say where and when.
func (r *replayer) cleanForReplay(d amqp.Delivery) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		if !deathRecord(k) {
			h[k] = v
		}
	}
	p := amqp.Publishing{
		ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
		Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, UserId: d.UserId, Body: d.Body,
	}
	if exp := headerString(h, ack.HeaderOriginalExpiration); exp != "" {
		p.Expiration = exp
		delete(h, ack.HeaderOriginalExpiration)
	}
	if v, ok := d.Headers[headers.ScheduledExpiration].(string); ok && p.Expiration == "" {
		p.Expiration = v
	}
	if uid := headerString(h, ack.HeaderOriginalUserID); uid != "" && uid == r.user {
		p.UserId = uid
		delete(h, ack.HeaderOriginalUserID)
	}
	if p.UserId != "" && p.UserId != r.user {
		// The broker refuses a user id other than the publisher's own.
		h[ack.HeaderOriginalUserID] = p.UserId
		p.UserId = ""
	}
	h[headerReplayedFrom] = r.queue
	h[headerReplayedAt] = r.started
	p.Headers = h
	return p
}

// keptWhole is the message as a move sends it on: everything it carries,
// its death record and diagnostics included, as a copy (ack.Copy) keeps a
// message: the broker's x-death under warren-original-x-death (a client may
// not set x-death), its TTL and user id in headers (a kept message must not
// expire, nor be refused for another user's id), the plumbing dropped.
func keptWhole(d amqp.Delivery) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		switch {
		case k == "x-death":
			if _, earlier := d.Headers[ack.HeaderOriginalDeath]; !earlier {
				h[ack.HeaderOriginalDeath] = v
			}
		case headers.BrokerDeath(k), headers.Internal(k):
		default:
			h[k] = v
		}
	}
	p := amqp.Publishing{
		ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
		Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppId: d.AppId, Body: d.Body,
	}
	if d.Expiration != "" {
		h[ack.HeaderOriginalExpiration] = d.Expiration
	}
	if d.UserId != "" {
		h[ack.HeaderOriginalUserID] = d.UserId
	}
	if len(h) > 0 {
		p.Headers = h
	}
	return p
}
