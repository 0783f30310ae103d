package instrument

import (
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Peer is the broker end of a connection and the client's identity, as the
// connection knows them now (package conn's Conn.Peer).
type Peer struct {
	// Address and Port are server.address and server.port: the host as
	// the URL names it (no reverse lookup) and its port.
	Address string
	Port    int
	// ClientID is messaging.client.id: the connection's name, host, process
	// and sequence number, unique per connection.
	ClientID string
}

// Destination is where a message goes or came from, in RabbitMQ's terms.
type Destination struct {
	Exchange   string
	RoutingKey string
	// Queue is the queue a message was consumed from; "" for a send.
	Queue string
	// Temporary marks a destination that may be gone once its messages are
	// processed (an exclusive or auto-delete queue, a reply queue).
	Temporary bool
}

// Anonymous reports whether name is one the broker generated (amq.gen-*)
// or a direct reply-to pseudo-queue.
func Anonymous(name string) bool {
	return strings.HasPrefix(name, "amq.gen-") || strings.HasPrefix(name, "amq.rabbitmq.reply-to")
}

func (d Destination) anonymous() bool {
	return Anonymous(d.Queue) || (d.Exchange == "" && Anonymous(d.RoutingKey))
}

// Name is messaging.destination.name as the RabbitMQ conventions define it:
// "{exchange}:{routing key}" for a send, "{exchange}:{routing key}:{queue}"
// for a consume, empty parts omitted, a routing key equal to the queue
// given once, and "amq.default" for the default exchange without a key.
func (d Destination) Name() string {
	queue := d.Queue
	if queue == d.RoutingKey {
		queue = ""
	}
	if d.Exchange == "" && d.RoutingKey == "" && queue == "" {
		return "amq.default"
	}
	return join(d.Exchange, d.RoutingKey, queue)
}

// lowCardinality is the destination without its parts that can be many:
// a routing key on a named exchange (on a topic or headers exchange it can
// be per entity), and generated or temporary queue names. "" when nothing
// low in cardinality is left (a direct reply-to).
func (d Destination) lowCardinality() string {
	if d.Exchange == "" && d.RoutingKey == "" && d.Queue == "" {
		return "amq.default"
	}
	queue := d.Queue
	if Anonymous(queue) || d.Temporary {
		queue = ""
	}
	key := ""
	if d.Exchange == "" && !Anonymous(d.RoutingKey) && !(d.Temporary && d.RoutingKey == d.Queue) {
		key = d.RoutingKey // on the default exchange, a queue's name
	}
	if key == queue {
		queue = ""
	}
	return join(d.Exchange, key, queue)
}

// Template is messaging.destination.template: the low-cardinality form of
// the name when the name is not low in cardinality itself, else "".
func (d Destination) Template() string {
	if lc := d.lowCardinality(); lc != d.Name() {
		return lc
	}
	return ""
}

func join(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		b.WriteString(p)
	}
	return b.String()
}

// op is one operation as the conventions name it.
type op struct {
	name, typ string
}

var (
	opSend    = op{"send", "send"}
	opCreate  = op{"create", "create"}
	opProcess = op{"process", "process"}
	opAck     = op{"ack", "settle"}
	opNack    = op{"nack", "settle"}
	opReject  = op{"reject", "settle"}
)

// described is an operation on a destination through a peer: its span name,
// span attributes and metric attribute sets, built once and reused, so a
// message that succeeds allocates nothing for them.
type described struct {
	spanName  string
	spanAttrs []attribute.KeyValue
	// count is the attribute set of the message counters, duration that of
	// the duration histograms; withError adds error.type to either.
	count, duration attribute.Set
	countOpts       *measureOpts
	durationOpts    *measureOpts
	errMu           sync.Mutex
	errSets         map[errKey]*measureOpts
	// spanStart starts the operation's span: its kind and
	// trace.WithAttributes(spanAttrs...), made once. Options made per
	// message, or a variadic list built at the call (it escapes into the
	// tracer), are allocations per message.
	spanStart []trace.SpanStartOption
	// key is what it describes, for a Memo to compare.
	key destKey
	// settles are the settle operations (ack, nack, reject) on the same
	// destination through the same peer, found once: a process's
	// settlement looks nothing up.
	settles [3]atomic.Pointer[described]
}

// settle is the description of settle operation o (opAck, opNack or
// opReject) on d's destination through d's peer.
func (d *described) settle(c *destinations, o op) *described {
	i := 0
	switch o {
	case opNack:
		i = 1
	case opReject:
		i = 2
	}
	if x := d.settles[i].Load(); x != nil {
		return x
	}
	x := c.get(o, d.key.dest, d.key.peer)
	d.settles[i].Store(x)
	return x
}

// Memo is a one-entry cache of the shared cache, owned by a caller whose
// messages nearly all have one destination (a subscription: its queue,
// most often one exchange and routing key). Comparing its entry's key with
// a message's costs a fraction of hashing that key into the shared map
// (2 lookups a consumed message were a thousand instructions, about what
// warren's not-sampled telemetry cost over the SDK's own calls). A miss
// costs the compare and remembers the shared cache's entry: no allocation.
// The zero value is ready; safe for concurrent use.
type Memo struct {
	last atomic.Pointer[described]
}

// spanKind is the kind of the span of o when its options are fixed: a
// message's process span is CONSUMER, its send or create span PRODUCER.
func spanKind(o op) trace.SpanStartOption {
	switch o {
	case opProcess:
		return consumerKind
	case opSend, opCreate:
		return producerKind
	}
	return clientKind
}

// measureOpts is one attribute set as the options Add and Record take,
// as slices made once: a variadic option built at the call escapes, an
// allocation per measurement.
type measureOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newMeasureOpts(set attribute.Set) *measureOpts {
	o := metric.WithAttributeSet(set)
	return &measureOpts{add: []metric.AddOption{o}, record: []metric.RecordOption{o}}
}

type errKey struct {
	duration bool
	errType  string
}

// withError is the measurement option of set plus error.type, cached: the
// error types are few (see ErrorType).
func (d *described) withError(duration bool, errType string) *measureOpts {
	if errType == "" {
		if duration {
			return d.durationOpts
		}
		return d.countOpts
	}
	d.errMu.Lock()
	defer d.errMu.Unlock()
	k := errKey{duration, errType}
	if o, ok := d.errSets[k]; ok {
		return o
	}
	base := d.count
	if duration {
		base = d.duration
	}
	attrs := append(base.ToSlice(), attribute.String("error.type", errType))
	o := newMeasureOpts(attribute.NewSet(attrs...))
	if d.errSets == nil {
		d.errSets = map[errKey]*measureOpts{}
	}
	if len(d.errSets) < maxErrorTypes {
		d.errSets[k] = o
	}
	return o
}

const maxErrorTypes = 64

type destKey struct {
	op   op
	dest Destination
	peer Peer
}

// destinations caches described operations, bounded: routing keys can be
// many.
type destinations struct {
	mu sync.RWMutex
	m  map[destKey]*described
}

const maxDestinations = 4096

// remembered is get through m (nil: get itself).
func (c *destinations) remembered(m *Memo, o op, d Destination, p Peer) *described {
	if m == nil {
		return c.get(o, d, p)
	}
	if x := m.last.Load(); x != nil && x.key == (destKey{o, d, p}) {
		return x
	}
	x := c.get(o, d, p)
	m.last.Store(x)
	return x
}

func (c *destinations) get(o op, d Destination, p Peer) *described {
	k := destKey{o, d, p}
	c.mu.RLock()
	x, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return x
	}
	x = describe(o, d, p)
	x.key = k
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[destKey]*described{}
	}
	if len(c.m) >= maxDestinations {
		clear(c.m)
	}
	if cur, ok := c.m[k]; ok {
		return cur
	}
	c.m[k] = x
	return x
}

// describe builds the attributes of o on d, per the RabbitMQ messaging
// conventions (see the package documentation's table).
func describe(o op, d Destination, p Peer) *described {
	name, template := d.Name(), d.Template()
	lowCard := d.lowCardinality()
	spanName := o.name
	if lowCard != "" {
		spanName += " " + lowCard
	}
	common := []attribute.KeyValue{
		attribute.String("messaging.system", "rabbitmq"),
		attribute.String("messaging.operation.name", o.name),
	}
	spanAttrs := append(common[:len(common):len(common)],
		attribute.String("messaging.operation.type", o.typ),
		attribute.String("messaging.destination.name", name))
	if template != "" {
		spanAttrs = append(spanAttrs, attribute.String("messaging.destination.template", template))
	}
	if d.RoutingKey != "" && o != opAck && o != opNack && o != opReject {
		spanAttrs = append(spanAttrs, attribute.String("messaging.rabbitmq.destination.routing_key", d.RoutingKey))
	}
	if o == opSend || o == opCreate || o == opProcess {
		if d.anonymous() {
			spanAttrs = append(spanAttrs, attribute.Bool("messaging.destination.anonymous", true))
		}
		if d.Temporary || d.anonymous() {
			spanAttrs = append(spanAttrs, attribute.Bool("messaging.destination.temporary", true))
		}
	}
	consuming := d.Queue != ""
	if consuming && !Anonymous(d.Queue) {
		spanAttrs = append(spanAttrs, attribute.String("messaging.consumer.group.name", d.Queue))
	}
	peerAttrs := peerAttributes(p)
	spanAttrs = append(spanAttrs, peerAttrs...)
	if p.ClientID != "" {
		spanAttrs = append(spanAttrs, attribute.String("messaging.client.id", p.ClientID))
	}

	// Metrics carry the destination name only when it is low in
	// cardinality, otherwise its template; a destination with nothing low
	// in cardinality (a direct reply-to) carries neither.
	count := append([]attribute.KeyValue(nil), common...)
	switch {
	case lowCard == "":
	case template != "":
		count = append(count, attribute.String("messaging.destination.template", template))
	default:
		count = append(count, attribute.String("messaging.destination.name", name))
	}
	if consuming && !Anonymous(d.Queue) && !d.Temporary {
		count = append(count, attribute.String("messaging.consumer.group.name", d.Queue))
	}
	count = append(count, peerAttrs...)
	duration := append(count[:len(count):len(count)], attribute.String("messaging.operation.type", o.typ))
	x := &described{
		spanName:  spanName,
		spanAttrs: spanAttrs,
		count:     attribute.NewSet(count...),
		duration:  attribute.NewSet(duration...),
	}
	x.countOpts = newMeasureOpts(x.count)
	x.durationOpts = newMeasureOpts(x.duration)
	x.spanStart = []trace.SpanStartOption{spanKind(o), trace.WithAttributes(spanAttrs...)}
	return x
}

func peerAttributes(p Peer) []attribute.KeyValue {
	if p.Address == "" {
		return nil
	}
	attrs := []attribute.KeyValue{attribute.String("server.address", p.Address)}
	if p.Port != 0 {
		attrs = append(attrs, attribute.Int("server.port", p.Port))
	}
	return attrs
}
