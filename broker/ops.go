package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/configerr"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/workgroup"
	"github.com/warrenmq/warren/topology"
)

// OpsConfig shapes Ops. The zero value is usable.
type OpsConfig struct {
	// Timeout bounds each operation whose ctx has no deadline. Default: 10s.
	Timeout time.Duration
	// ConfirmChannels is how many confirm-mode channels this Ops publishes
	// on (opened on first use, shared by concurrent publishes). Default: 1.
	ConfirmChannels int
	// Target is the RabbitMQ version the specs are checked against
	// (QueueSpec.ValidateFor) before they are declared, and whose warnings
	// are logged (a quorum queue without a dead-letter target). Default:
	// the version the connection's broker reports (conn.Conn.
	// ServerVersion), so that a spec the broker would refuse or treat
	// otherwise fails here with the reason; Validate's rules alone before
	// the first connection. Set it to the oldest version a service must
	// run on, to check for all of them.
	Target topology.Target
	// Logger. Default: the connection's logger.
	Logger *slog.Logger
}

func (c *OpsConfig) setDefaults(cn *conn.Conn) {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.ConfirmChannels == 0 {
		c.ConfirmChannels = 1
	}
	if c.Logger == nil {
		c.Logger = connx.Logger(cn)
	}
}

// Validate reports every problem of c, each naming its field.
func (c *OpsConfig) Validate() error {
	f := configerr.For("broker.OpsConfig")
	f.Check(c.Timeout < 0, "Timeout", "must not be negative")
	f.Check(c.ConfirmChannels < 0 || c.ConfirmChannels > 256, "ConfirmChannels", "want 1-256")
	return f.Err()
}

// Ops declares, binds, deletes, inspects, publishes and consumes on one
// connection. Every Ops of a connection shares the connection's Registry
// (RegistryOf): what one declares with restore (the default) is restored
// after every reconnect in one run with everything the others declared.
// An Ops owns only its confirm channels and the consumers it started, which
// its Close stops. Every method takes a ctx; the Timeout applies when ctx
// has no deadline. Safe for concurrent use.
type Ops struct {
	conn *conn.Conn
	reg  *Registry
	cfg  OpsConfig

	confirmsOnce sync.Once
	confirmsPool *confirmPool // made by the first publish

	group workgroup.Group // consumers' loops

	warned sync.Map // the warnings logged already (warn)

	mu        sync.Mutex
	closed    bool
	consumers consumerList

	closeOnce sync.Once
	closeErr  error
}

// NewOps returns Ops on c, sharing c's Registry.
func NewOps(c *conn.Conn, cfg OpsConfig) (*Ops, error) {
	if c == nil {
		return nil, &conn.ConfigError{Field: "broker.NewOps.conn", Reason: "must not be nil"}
	}
	cfg.setDefaults(c)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Ops{conn: c, reg: RegistryOf(c), cfg: cfg}, nil
}

// confirms is the Ops' confirm channels, made on first use: an Ops that
// only consumes (a Subscriber's) never holds any.
func (o *Ops) confirms() *confirmPool {
	o.confirmsOnce.Do(func() { o.confirmsPool = newConfirmPool(o.conn, o.cfg.ConfirmChannels, o.cfg.Timeout) })
	return o.confirmsPool
}

// Registry is the connection's registry.
func (o *Ops) Registry() *Registry { return o.reg }

// Conn is the connection Ops works on.
func (o *Ops) Conn() *conn.Conn { return o.conn }

// Close stops every consumer started through o (letting each finish the
// delivery in hand, bounded by ctx), closes its confirm channels and waits
// for its goroutines; when ctx ends first, the error names what is still
// running. The registry and the connection stay. Idempotent.
func (o *Ops) Close(ctx context.Context) error {
	o.closeOnce.Do(func() {
		o.mu.Lock()
		o.closed = true
		all := o.consumers.all()
		o.mu.Unlock()
		var errs []error
		for _, c := range all {
			if err := c.stop(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		o.confirmsOnce.Do(func() {}) // no pool after Close
		if o.confirmsPool != nil {
			o.confirmsPool.close()
		}
		o.group.Close()
		errs = append(errs, o.group.Wait(ctx, "broker: Ops"))
		o.closeErr = errors.Join(errs...)
	})
	return o.closeErr
}

// Option changes how one call records and declares.
type Option func(*options)

type options struct {
	noRestore  bool
	force      bool
	acceptLoss bool
	ifMissing  bool
}

// NoRestore declares without recording: the entity is not restored after a
// reconnect.
func NoRestore() Option { return func(o *options) { o.noRestore = true } }

// WithForce recreates an entity that exists with other properties (406
// PRECONDITION_FAILED): delete, declare again, and re-apply its recorded
// bindings; the new spec replaces the registered one. A queue holding
// messages is refused (ErrMessagesAtStake) unless AcceptMessageLoss is given
// too.
func WithForce() Option { return func(o *options) { o.force = true } }

// AcceptMessageLoss lets WithForce delete a queue that holds messages.
func AcceptMessageLoss() Option { return func(o *options) { o.acceptLoss = true } }

// IfMissing declares an exchange or a queue only when it does not exist:
// one that exists is used as it is, whatever its properties and arguments,
// and one registered on this connection is used as registered. For callers
// that need an entity to exist but do not own it: a Publisher publishing
// to a queue whose consumer owns its arguments (a router's route declared
// with other arguments, on this connection or in another service), and
// still declaring it when the publisher comes first, so that nothing it
// publishes is lost. Such a declaration is recorded weakly: restored by a
// check, declared only when missing, and replaced by any later declaration
// of the name (the consumer's arrives, the broker judges it). Bindings are
// declared as usual.
func IfMissing() Option { return func(o *options) { o.ifMissing = true } }

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// bounded gives ctx the Ops timeout when it has no deadline.
func (o *Ops) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, o.cfg.Timeout)
}

// DeclareExchange declares s (validated first). Read-only exchanges are
// refused with an *OperationError (ErrReadOnly) without touching the broker.
// Declaring a registered exchange again costs no network call; one
// registered with other properties is refused before the network
// (*ConflictError, ErrConflict) unless IfMissing or WithForce. 406 with
// WithForce deletes and recreates it, re-applying its recorded bindings. A
// delayed exchange on a broker without the plugin returns ErrPluginMissing.
func (o *Ops) DeclareExchange(ctx context.Context, s topology.ExchangeSpec, opts ...Option) error {
	if s.IsReadOnly() {
		return readOnlyError("declare", s.String(), "use ExchangeExists")
	}
	if err := s.Validate(); err != nil {
		return err
	}
	op := collect(opts)
	if op.ifMissing {
		return o.ensureExchange(ctx, s, op)
	}
	s, skip, err := o.reg.decideExchange(s, op)
	if err != nil || skip {
		return err
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	gen := connx.GenerationFor(o.conn, ctx)
	err = o.reg.declareExchange(ctx, s)
	if errors.Is(err, conn.ErrPreconditionFailed) && op.force {
		err = o.recreateExchange(ctx, s, err)
	}
	if err != nil {
		return err
	}
	if !op.noRestore {
		o.reg.putExchange(s, gen)
	}
	return nil
}

func readOnlyError(op, entity, hint string) error {
	return &OperationError{Op: op, Entity: entity, Reason: "read-only; " + hint, Err: ErrReadOnly}
}

func (o *Ops) recreateExchange(ctx context.Context, s topology.ExchangeSpec, cause error) error {
	o.cfg.Logger.Warn("broker: recreating exchange with other properties", "exchange", s.Name, "cause", cause)
	if err := o.reg.deleteExchange(ctx, s.Name, false); err != nil {
		return err
	}
	if err := o.reg.declareExchange(ctx, s); err != nil {
		return err
	}
	// Deleting an exchange deletes its bindings both ways; put back the
	// ones we know of.
	for _, b := range o.reg.bindingsOf(s.Name, true) {
		if err := o.reg.bind(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// QueueInfo is what the broker says of a queue. Counts are zero when the
// declaration was answered from the registry without a network call; use
// Inspect for counts.
type QueueInfo struct {
	Name      string
	Messages  int
	Consumers int
}

// DeclareQueue declares s (validated first) and returns the declared name
// and counts. An empty name gets a client-generated one that the registry
// keeps across reconnects. Read-only queues and amq.* names are refused
// (ErrReadOnly). Declaring a registered queue again costs no network call;
// one registered with other properties is refused before the network
// (ErrConflict) unless IfMissing or WithForce. 406 with WithForce
// deletes and recreates the queue, unless it holds messages and
// AcceptMessageLoss is not given (*ForceRefusedError, with the count).
func (o *Ops) DeclareQueue(ctx context.Context, s topology.QueueSpec, opts ...Option) (QueueInfo, error) {
	if s.ReadOnly {
		return QueueInfo{}, readOnlyError("declare", s.String(), "use QueueExists")
	}
	if err := s.ValidateFor(o.target()); err != nil {
		return QueueInfo{}, err
	}
	o.warn(s)
	if s.Name == "" {
		s.Name = generatedQueueName()
	}
	op := collect(opts)
	if op.ifMissing {
		return o.ensureQueue(ctx, s, op)
	}
	s, skip, err := o.reg.decideQueue(s, op)
	if err != nil {
		return QueueInfo{}, err
	}
	if skip {
		return QueueInfo{Name: s.Name}, nil
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	gen := connx.GenerationFor(o.conn, ctx)
	info, err := o.reg.declareQueue(ctx, s)
	if errors.Is(err, conn.ErrPreconditionFailed) && op.force {
		info, err = o.recreateQueue(ctx, s, op.acceptLoss, err)
	}
	if err != nil {
		return QueueInfo{}, err
	}
	if !op.noRestore {
		o.reg.putQueue(s, gen)
	}
	return info, nil
}

func (o *Ops) recreateQueue(ctx context.Context, s topology.QueueSpec, acceptLoss bool, cause error) (QueueInfo, error) {
	info, err := o.reg.inspect(ctx, s.Name)
	if err != nil {
		return QueueInfo{}, err
	}
	if info.Messages > 0 && !acceptLoss {
		return QueueInfo{}, &ForceRefusedError{Queue: s.Name, Messages: info.Messages, Cause: cause}
	}
	o.cfg.Logger.Warn("broker: recreating queue with other properties", "queue", s.Name, "messages_lost", info.Messages, "cause", cause)
	if _, err := o.reg.deleteQueue(ctx, s.Name, DeleteOptions{}); err != nil {
		return QueueInfo{}, err
	}
	info, err = o.reg.declareQueue(ctx, s)
	if err != nil {
		return QueueInfo{}, err
	}
	for _, b := range o.reg.bindingsOf(s.Name, false) {
		if err := o.reg.bind(ctx, b); err != nil {
			return QueueInfo{}, err
		}
	}
	return info, nil
}

// ensureExchange is DeclareExchange with IfMissing: a registered exchange is
// declared as registered (a strong record, by its owner) or checked (a weak
// one); an unregistered one is checked, declared when missing, and recorded
// weakly.
func (o *Ops) ensureExchange(ctx context.Context, s topology.ExchangeSpec, op options) error {
	if reg, weak, current, ok := o.reg.exchangeRecord(s.Name); ok {
		if current {
			return nil
		}
		if !weak {
			op.ifMissing = false
			return o.DeclareExchange(ctx, reg, optionsOf(op)...)
		}
		s = reg
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	gen := connx.GenerationFor(o.conn, ctx)
	err := o.reg.checkExchange(ctx, s.Name)
	if errors.Is(err, conn.ErrNotFound) {
		err = o.reg.declareExchange(ctx, s)
	}
	if err != nil {
		return err
	}
	if !op.noRestore {
		o.reg.putWeakExchange(s, gen)
	}
	return nil
}

// ensureQueue is ensureExchange for a queue.
func (o *Ops) ensureQueue(ctx context.Context, s topology.QueueSpec, op options) (QueueInfo, error) {
	if reg, weak, current, ok := o.reg.queueRecord(s.Name); ok {
		if current {
			return QueueInfo{Name: s.Name}, nil
		}
		if !weak {
			op.ifMissing = false
			return o.DeclareQueue(ctx, reg, optionsOf(op)...)
		}
		s = reg
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	gen := connx.GenerationFor(o.conn, ctx)
	info, err := o.reg.inspect(ctx, s.Name)
	if errors.Is(err, conn.ErrNotFound) {
		info, err = o.reg.declareQueue(ctx, s)
	}
	if err != nil {
		return QueueInfo{}, err
	}
	if !op.noRestore {
		o.reg.putWeakQueue(s, gen)
	}
	return info, nil
}

// optionsOf turns collected options back into Options.
func optionsOf(op options) []Option {
	return []Option{func(o *options) { *o = op }}
}

// Bind binds a queue or an exchange (s.Kind) to an exchange and records the
// binding for restore. Binding what is registered and declared on the
// current connection costs no network call.
func (o *Ops) Bind(ctx context.Context, s topology.BindSpec, opts ...Option) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if o.reg.decideBinding(s) {
		return nil
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	gen := connx.GenerationFor(o.conn, ctx)
	if err := o.reg.bind(ctx, s); err != nil {
		return err
	}
	if !collect(opts).noRestore {
		o.reg.putBinding(s, gen)
	}
	return nil
}

// Unbind removes a binding and forgets it. When it was the last recorded
// binding of an auto-delete source exchange, the broker deletes that
// exchange, so the registry forgets it too.
func (o *Ops) Unbind(ctx context.Context, s topology.BindSpec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	if err := o.reg.unbind(ctx, s); err != nil {
		return err
	}
	o.reg.forgetBinding(s)
	return nil
}

// DeleteOptions are the conditions of a delete.
type DeleteOptions struct {
	// IfUnused refuses (406) to delete an exchange with bindings or a queue
	// with consumers.
	IfUnused bool
	// IfEmpty refuses (406) to delete a queue holding messages.
	IfEmpty bool
}

// DeleteExchange deletes an exchange and forgets it and its bindings. The
// default exchange, amq.* names and registered read-only exchanges are
// refused (ErrReadOnly) without touching the broker.
func (o *Ops) DeleteExchange(ctx context.Context, name string, d DeleteOptions) error {
	if err := o.checkDeletable(name, true); err != nil {
		return err
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	if err := o.reg.deleteExchange(ctx, name, d.IfUnused); err != nil {
		return err
	}
	o.reg.forgetExchange(name)
	return nil
}

// DeleteQueue deletes a queue, returns how many messages went with it, and
// forgets it, its bindings and its consumers (which are stopped: deleting
// through Ops is their owner ending them). amq.* names and registered
// read-only queues are refused (ErrReadOnly).
func (o *Ops) DeleteQueue(ctx context.Context, name string, d DeleteOptions) (int, error) {
	if err := o.checkDeletable(name, false); err != nil {
		return 0, err
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	consumers := o.reg.consumersOf(name)
	o.mu.Lock()
	for _, c := range o.consumers.all() {
		if c.spec.Queue == name && !c.restore {
			consumers = append(consumers, c) // NoRestore: not in the registry
		}
	}
	o.mu.Unlock()
	for _, c := range consumers {
		c.markDeleting()
	}
	n, err := o.reg.deleteQueue(ctx, name, d)
	if err != nil {
		for _, c := range consumers {
			c.unmarkDeleting()
		}
		return 0, err
	}
	o.reg.forgetQueue(name)
	for _, c := range consumers {
		_ = c.stop(ctx)
	}
	return n, nil
}

func (o *Ops) checkDeletable(name string, exchange bool) error {
	kind := "queue"
	if exchange {
		kind = "exchange"
	}
	entity := fmt.Sprintf("%s %q", kind, display(name))
	switch {
	case exchange && builtIn(name):
		return readOnlyError("delete", entity, "the broker owns it")
	case !exchange && name == "":
		return &OperationError{Op: "delete", Entity: entity, Reason: "empty name", Err: topology.ErrInvalidSpec}
	case !exchange && builtIn(name):
		return readOnlyError("delete", entity, "the broker owns amq.* names")
	case o.reg.readOnly(name, exchange):
		return readOnlyError("delete", entity, "registered as ReadOnly")
	}
	return nil
}

// ExchangeExists reports whether the exchange exists (a passive declare; a
// 404 is false, not an error, and costs nobody their channel).
func (o *Ops) ExchangeExists(ctx context.Context, name string) (bool, error) {
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	return existsResult(o.reg.checkExchange(ctx, name))
}

// QueueExists reports whether the queue exists (passive; 404 is false).
func (o *Ops) QueueExists(ctx context.Context, name string) (bool, error) {
	_, err := o.Inspect(ctx, name)
	return existsResult(err)
}

func existsResult(err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, conn.ErrNotFound):
		return false, nil
	}
	return false, err
}

// Inspect returns a queue's message and consumer counts (passive declare;
// conn.ErrNotFound when it does not exist).
func (o *Ops) Inspect(ctx context.Context, name string) (QueueInfo, error) {
	if name == "" {
		return QueueInfo{}, &OperationError{Op: "inspect", Entity: "queue", Reason: "empty name", Err: topology.ErrInvalidSpec}
	}
	ctx, cancel := o.bounded(ctx)
	defer cancel()
	return o.reg.inspect(ctx, name)
}

// Apply validates every spec first, then declares the topology in the order
// exchanges, queues, queue bindings, exchange bindings and, with
// WithConsume, consumers. Read-only entities are checked to exist instead of
// declared (a topology may name what it needs without owning it). What the
// registry already holds and declared costs no network call, and a
// conflict with it fails before any network call. Each kind goes out
// pipelined (without waiting for each reply, on a few channels, then one
// wait per channel); what a refusal left unconfirmed is declared one at a
// time, and Apply returns the first error in topology order (entities of
// that kind sent alongside it may have been declared, and are recorded;
// later kinds are not declared).
func (o *Ops) Apply(ctx context.Context, t topology.Topology, opts ...Option) error {
	if err := t.ValidateFor(o.target()); err != nil {
		return err
	}
	for _, q := range t.Queues {
		o.warn(q)
	}
	op := collect(opts)
	if op.force || op.ifMissing {
		// Each entity alone: a 406 leads to a recreate, a 404 to a
		// declaration.
		return o.applyOneByOne(ctx, t, opts)
	}
	// Decide everything first: a conflict fails before the network.
	var xs []topology.ExchangeSpec
	for _, s := range t.Exchanges {
		if s.IsReadOnly() {
			continue
		}
		s, skip, err := o.reg.decideExchange(s, op)
		if err != nil {
			return err
		}
		if !skip {
			xs = append(xs, s)
		}
	}
	var qs []topology.QueueSpec
	for _, s := range t.Queues {
		if s.ReadOnly {
			continue
		}
		if s.Name == "" {
			s.Name = generatedQueueName()
		}
		s, skip, err := o.reg.decideQueue(s, op)
		if err != nil {
			return err
		}
		if !skip {
			qs = append(qs, s)
		}
	}
	for _, s := range t.Exchanges {
		if s.IsReadOnly() {
			ok, err := o.ExchangeExists(ctx, s.Name)
			if err != nil {
				return err
			}
			if !ok {
				return &conn.RefusedError{Op: "check", Entity: s.String(), Code: 404, Text: "read-only exchange does not exist"}
			}
		}
	}
	if err := applyBatch(o, ctx, xs, exchangeStep, func(s topology.ExchangeSpec, gen uint64) {
		if !op.noRestore {
			o.reg.putExchange(s, gen)
		}
	}, func(s topology.ExchangeSpec) error { return o.DeclareExchange(ctx, s, opts...) }); err != nil {
		return err
	}
	for _, s := range t.Queues {
		if s.ReadOnly {
			if _, err := o.Inspect(ctx, s.Name); err != nil {
				return err
			}
		}
	}
	if err := applyBatch(o, ctx, qs, queueStep, func(s topology.QueueSpec, gen uint64) {
		if !op.noRestore {
			o.reg.putQueue(s, gen)
		}
	}, func(s topology.QueueSpec) error { _, err := o.DeclareQueue(ctx, s, opts...); return err }); err != nil {
		return err
	}
	for _, kind := range []topology.BindKind{topology.BindQueue, topology.BindExchange} {
		var bs []topology.BindSpec
		for _, s := range t.Bindings {
			if s.Kind == kind && !o.reg.decideBinding(s) {
				bs = append(bs, s)
			}
		}
		if err := applyBatch(o, ctx, bs, bindStep, func(s topology.BindSpec, gen uint64) {
			if !op.noRestore {
				o.reg.putBinding(s, gen)
			}
		}, func(s topology.BindSpec) error { return o.Bind(ctx, s, opts...) }); err != nil {
			return err
		}
	}
	return nil
}

// applyBatch declares specs pipelined, records what the pipeline vouched
// for, and declares the rest one at a time, returning the first error.
func applyBatch[T any](o *Ops, ctx context.Context, specs []T, toStep func(T) step, record func(T, uint64), one func(T) error) error {
	steps := make([]step, len(specs))
	for i, s := range specs {
		steps[i] = toStep(s)
	}
	errs, gen := o.reg.pipeline(ctx, steps)
	for i, s := range specs {
		if errs[i] == nil {
			record(s, gen)
		}
	}
	for i, s := range specs {
		if errs[i] != nil {
			if err := one(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyOneByOne is Apply with WithForce: each entity alone, since a 406
// leads to a recreate.
func (o *Ops) applyOneByOne(ctx context.Context, t topology.Topology, opts []Option) error {
	for _, s := range t.Exchanges {
		if s.IsReadOnly() {
			ok, err := o.ExchangeExists(ctx, s.Name)
			if err != nil {
				return err
			}
			if !ok {
				return &conn.RefusedError{Op: "check", Entity: s.String(), Code: 404, Text: "read-only exchange does not exist"}
			}
			continue
		}
		if err := o.DeclareExchange(ctx, s, opts...); err != nil {
			return err
		}
	}
	for _, s := range t.Queues {
		if s.ReadOnly {
			if _, err := o.Inspect(ctx, s.Name); err != nil {
				return err
			}
			continue
		}
		if _, err := o.DeclareQueue(ctx, s, opts...); err != nil {
			return err
		}
	}
	for _, kind := range []topology.BindKind{topology.BindQueue, topology.BindExchange} {
		for _, s := range t.Bindings {
			if s.Kind != kind {
				continue
			}
			if err := o.Bind(ctx, s, opts...); err != nil {
				return err
			}
		}
	}
	return nil
}

// warn logs what is valid about s but likely not meant (QueueSpec.Warnings),
// once per queue name and Ops: a restore does not repeat it.
func (o *Ops) warn(s topology.QueueSpec) {
	for _, w := range s.Warnings(o.target()) {
		if _, seen := o.warned.LoadOrStore(s.Name+"\x00"+w, true); !seen {
			o.cfg.Logger.Warn("broker: " + w)
		}
	}
}

// target is the version o checks specs against: OpsConfig.Target, else the
// connected broker's.
func (o *Ops) target() topology.Target {
	if o.cfg.Target.Major > 0 { // a target is set
		return o.cfg.Target
	}
	t, _ := topology.ParseTarget(o.conn.ServerVersion())
	return t
}
