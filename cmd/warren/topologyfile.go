package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.yaml.in/yaml/v3"

	"github.com/warrenmq/warren/topology"
)

// topologyFile is the YAML form of a topology.Topology: the same specs, in
// the words of the broker's own definitions (snake_case), typed arguments
// by name and anything else under arguments.
type topologyFile struct {
	Exchanges []exchangeEntry `yaml:"exchanges,omitempty"`
	Queues    []queueEntry    `yaml:"queues,omitempty"`
	Bindings  []bindingEntry  `yaml:"bindings,omitempty"`
}

// The entries' tags are the file format's reference: yaml is the key; doc
// says what it is; arg is the RabbitMQ argument or property it sets; enum
// lists the values; format says how a string is read; def is the default.
// `warren topology schema` and docs/TOPOLOGY.md are made from them (a test
// fails when the document drifts).
type exchangeEntry struct {
	Name              string         `yaml:"name" doc:"The exchange's name. Required; amq.* names are the broker's." arg:"exchange"`
	Type              string         `yaml:"type" doc:"How it routes." arg:"type" enum:"direct,fanout,topic,headers,x-delayed-message"`
	Durable           bool           `yaml:"durable,omitempty" doc:"Survives a broker restart." arg:"durable" def:"false"`
	AutoDelete        bool           `yaml:"auto_delete,omitempty" doc:"Deleted by the broker when its last binding goes." arg:"auto-delete" def:"false"`
	Internal          bool           `yaml:"internal,omitempty" doc:"Takes messages only from other exchanges, never from a publisher." arg:"internal" def:"false"`
	AlternateExchange string         `yaml:"alternate_exchange,omitempty" doc:"Receives what this exchange cannot route." arg:"alternate-exchange"`
	Arguments         map[string]any `yaml:"arguments,omitempty" doc:"Any other argument, sent as it is (an argument with a key above is refused: set the key)." arg:"arguments"`
}

type queueEntry struct {
	Name                 string         `yaml:"name" doc:"The queue's name. Required; amq.* names are the broker's." arg:"queue"`
	Durable              bool           `yaml:"durable,omitempty" doc:"Survives a broker restart (quorum queues and streams must be; RabbitMQ 4.3 refuses non-durable non-exclusive queues)." arg:"durable" def:"false"`
	Exclusive            bool           `yaml:"exclusive,omitempty" doc:"Belongs to the declaring connection, deleted with it." arg:"exclusive" def:"false"`
	AutoDelete           bool           `yaml:"auto_delete,omitempty" doc:"Deleted by the broker when its last consumer goes." arg:"auto-delete" def:"false"`
	Type                 string         `yaml:"type,omitempty" doc:"The queue type; empty is the vhost's default type." arg:"x-queue-type" enum:"classic,quorum,stream"`
	MessageTTL           string         `yaml:"message_ttl,omitempty" doc:"How long a message may wait in the queue." arg:"x-message-ttl" format:"duration"`
	Expires              string         `yaml:"expires,omitempty" doc:"How long the queue may stay unused before the broker deletes it." arg:"x-expires" format:"duration"`
	MaxLength            int64          `yaml:"max_length,omitempty" doc:"The most messages it holds (see overflow)." arg:"x-max-length"`
	MaxLengthBytes       int64          `yaml:"max_length_bytes,omitempty" doc:"The most body bytes it holds (see overflow)." arg:"x-max-length-bytes"`
	Overflow             string         `yaml:"overflow,omitempty" doc:"What a full queue does." arg:"x-overflow" enum:"drop-head,reject-publish,reject-publish-dlx" def:"drop-head"`
	DeadLetterExchange   string         `yaml:"dead_letter_exchange,omitempty" doc:"Where rejected, expired and dropped messages go (\"\" is the default exchange, with dead_letter_routing_key)." arg:"x-dead-letter-exchange"`
	DeadLetterRoutingKey string         `yaml:"dead_letter_routing_key,omitempty" doc:"The routing key of dead letters (default: their own)." arg:"x-dead-letter-routing-key"`
	DeadLetterStrategy   string         `yaml:"dead_letter_strategy,omitempty" doc:"Quorum queues: at-least-once dead-lettering needs overflow reject-publish." arg:"x-dead-letter-strategy" enum:"at-most-once,at-least-once" def:"at-most-once"`
	MaxPriority          int            `yaml:"max_priority,omitempty" doc:"Classic queues: the highest message priority honoured (1-255)." arg:"x-max-priority"`
	SingleActiveConsumer bool           `yaml:"single_active_consumer,omitempty" doc:"One consumer at a time gets messages; the others wait." arg:"x-single-active-consumer" def:"false"`
	DeliveryLimit        int            `yaml:"delivery_limit,omitempty" doc:"Quorum queues: deliveries before a message is dead-lettered or dropped; -1 is none (RabbitMQ 4.0+, whose default is 20)." arg:"x-delivery-limit"`
	QueueMode            string         `yaml:"queue_mode,omitempty" doc:"Classic queues v1: lazy. Ignored by 3.12+, refused by 4.3." arg:"x-queue-mode" enum:"default,lazy"`
	LeaderLocator        string         `yaml:"leader_locator,omitempty" doc:"Quorum queues and streams: where the leader is placed." arg:"x-queue-leader-locator" enum:"client-local,balanced"`
	ConsumerTimeout      string         `yaml:"consumer_timeout,omitempty" doc:"How long a delivery may stay unacknowledged before the broker closes its channel (RabbitMQ 3.12+)." arg:"x-consumer-timeout" format:"duration"`
	InitialGroupSize     int            `yaml:"quorum_initial_group_size,omitempty" doc:"Quorum queues: the number of replicas at declaration." arg:"x-quorum-initial-group-size"`
	MaxAge               string         `yaml:"max_age,omitempty" doc:"Streams: how long segments are kept." arg:"x-max-age" format:"duration"`
	MaxSegmentSizeBytes  int64          `yaml:"stream_max_segment_size_bytes,omitempty" doc:"Streams: the size of a segment file." arg:"x-stream-max-segment-size-bytes"`
	FilterSizeBytes      int            `yaml:"stream_filter_size_bytes,omitempty" doc:"Streams: the size of a chunk's filter (RabbitMQ 3.13+, 16-255)." arg:"x-stream-filter-size-bytes"`
	Arguments            map[string]any `yaml:"arguments,omitempty" doc:"Any other argument, sent as it is (an argument with a key above is refused: set the key)." arg:"arguments"`
}

type bindingEntry struct {
	Source          string         `yaml:"source" doc:"The exchange messages come from. Required." arg:"source"`
	Destination     string         `yaml:"destination" doc:"The queue (or exchange) they go to. Required." arg:"destination"`
	DestinationType string         `yaml:"destination_type,omitempty" doc:"What destination names." arg:"destination type" enum:"queue,exchange" def:"queue"`
	RoutingKey      string         `yaml:"routing_key,omitempty" doc:"The binding key (a pattern for a topic exchange)." arg:"routing key"`
	Arguments       map[string]any `yaml:"arguments,omitempty" doc:"Binding arguments (x-match and the headers of a headers exchange)." arg:"arguments"`
}

// fieldKeys maps a spec field, as topology's errors name it, to its key in
// the file.
var fieldKeys = map[string]string{
	"Name": "name", "Type": "type", "Durable": "durable", "AutoDelete": "auto_delete", "Exclusive": "exclusive",
	"Internal": "internal", "Source": "source", "Destination": "destination", "RoutingKey": "routing_key",
	"Args.AlternateExchange": "alternate_exchange", "Args.Type": "type", "Args.MessageTTL": "message_ttl",
	"Args.Expires": "expires", "Args.MaxLength": "max_length", "Args.MaxLengthBytes": "max_length_bytes",
	"Args.Overflow": "overflow", "Args.DeadLetterExchange": "dead_letter_exchange",
	"Args.DeadLetterRoutingKey": "dead_letter_routing_key", "Args.DeadLetterStrategy": "dead_letter_strategy",
	"Args.MaxPriority": "max_priority", "Args.SingleActiveConsumer": "single_active_consumer",
	"Args.DeliveryLimit": "delivery_limit", "Args.Extra": "arguments", "Args": "arguments", "Kind": "destination_type",
	"Args.LeaderLocator": "leader_locator", "Args.QueueMode": "queue_mode", "Args.ConsumerTimeout": "consumer_timeout",
	"Args.QuorumInitialGroupSize": "quorum_initial_group_size", "Args.MaxAge": "max_age",
	"Args.StreamMaxSegmentSizeBytes": "stream_max_segment_size_bytes", "Args.StreamFilterSizeBytes": "stream_filter_size_bytes",
}

// typedFieldName finds the spec field a reason names ("Args.MessageTTL").
var typedFieldName = regexp.MustCompile(`\bArgs\.[A-Za-z]+\b`)

// inFileWords says a library reason in the file's words: a spec field it
// names is the file's key (message_ttl, not Args.MessageTTL).
func inFileWords(reason string) string {
	return typedFieldName.ReplaceAllStringFunc(reason, func(field string) string {
		if key, ok := fieldKeys[field]; ok {
			return key
		}
		return field
	})
}

// Problem is one thing wrong with a topology file, where it is.
type Problem struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Field  string `json:"field,omitempty"`
	Entity string `json:"entity,omitempty"`
	Reason string `json:"reason"`
}

func (p Problem) String() string {
	where := fmt.Sprintf("%s:%d", p.File, p.Line)
	if p.Field != "" {
		where += ": " + p.Field
	}
	if p.Entity != "" {
		return fmt.Sprintf("%s: %s: %s", where, p.Entity, p.Reason)
	}
	return where + ": " + p.Reason
}

// ErrInvalidFile is a topology file with problems (exit code 3).
var ErrInvalidFile = errors.New("invalid topology file")

// loadTopology reads and validates path: the topology, or every problem
// found (ErrInvalidFile).
func loadTopology(path string) (topology.Topology, []Problem, error) {
	return loadTopologyFor(path, topology.Target{})
}

// loadTopologyFor is loadTopology with the rules of a RabbitMQ version.
func loadTopologyFor(path string, target topology.Target) (topology.Topology, []Problem, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return topology.Topology{}, nil, err
	}
	return parseTopology(path, raw, target)
}

func parseTopology(path string, raw []byte, target topology.Target) (topology.Topology, []Problem, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return topology.Topology{}, []Problem{yamlProblem(path, err)}, ErrInvalidFile
	}
	var f topologyFile
	if err := yaml.NewDecoder(bytes.NewReader(raw)).Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return topology.Topology{}, yamlProblems(path, err), ErrInvalidFile
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	problems := unknownKeys(path, doc)
	var t topology.Topology
	entries := func(section string) []*yaml.Node {
		if n := mapValue(doc, section); n != nil && n.Kind == yaml.SequenceNode {
			return n.Content
		}
		return nil
	}
	report := func(node *yaml.Node, entity string, err error) {
		if err == nil {
			return
		}
		for _, e := range flatten(err) {
			p := Problem{File: path, Line: node.Line, Entity: entity, Reason: e.Error()}
			var se *topology.SpecError
			if errors.As(e, &se) {
				p.Reason = inFileWords(se.Reason)
				if key, ok := fieldKeys[se.Field]; ok {
					p.Field = key
					if k := mapKey(node, key); k != nil {
						p.Line = k.Line
					}
				} else {
					p.Field = se.Field
				}
			}
			problems = append(problems, p)
		}
	}
	xNodes := entries("exchanges")
	for i, e := range f.Exchanges {
		spec := topology.ExchangeSpec{Name: e.Name, Type: topology.ExchangeType(e.Type), Durable: e.Durable, AutoDelete: e.AutoDelete,
			Internal: e.Internal, Args: topology.ExchangeArgs{AlternateExchange: e.AlternateExchange, Extra: argTable(e.Arguments)}}
		report(xNodes[i], fmt.Sprintf("exchange %q", e.Name), spec.Validate())
		t.Exchanges = append(t.Exchanges, spec)
	}
	qNodes := entries("queues")
	for i, q := range f.Queues {
		spec := topology.QueueSpec{Name: q.Name, Durable: q.Durable, Exclusive: q.Exclusive, AutoDelete: q.AutoDelete,
			Args: topology.QueueArgs{Type: topology.QueueType(q.Type), MaxLength: q.MaxLength, MaxLengthBytes: q.MaxLengthBytes,
				Overflow: topology.Overflow(q.Overflow), DeadLetterExchange: q.DeadLetterExchange, DeadLetterRoutingKey: q.DeadLetterRoutingKey,
				DeadLetterStrategy: topology.DeadLetterStrategy(q.DeadLetterStrategy), MaxPriority: q.MaxPriority,
				SingleActiveConsumer: q.SingleActiveConsumer, DeliveryLimit: q.DeliveryLimit, LeaderLocator: topology.LeaderLocator(q.LeaderLocator), QueueMode: q.QueueMode,
				QuorumInitialGroupSize: q.InitialGroupSize, StreamMaxSegmentSizeBytes: q.MaxSegmentSizeBytes, StreamFilterSizeBytes: q.FilterSizeBytes,
				Extra: argTable(q.Arguments)}}
		entity := fmt.Sprintf("queue %q", q.Name)
		for key, dst := range map[string]*time.Duration{"message_ttl": &spec.Args.MessageTTL, "expires": &spec.Args.Expires,
			"consumer_timeout": &spec.Args.ConsumerTimeout, "max_age": &spec.Args.MaxAge} {
			v := map[string]string{"message_ttl": q.MessageTTL, "expires": q.Expires, "consumer_timeout": q.ConsumerTimeout, "max_age": q.MaxAge}[key]
			if v == "" {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				line := qNodes[i].Line
				if k := mapKey(qNodes[i], key); k != nil {
					line = k.Line
				}
				problems = append(problems, Problem{File: path, Line: line, Field: key, Entity: entity, Reason: fmt.Sprintf("%q is not a duration (want 30s, 5m, 24h)", v)})
				continue
			}
			*dst = d
		}
		report(qNodes[i], entity, spec.ValidateFor(target))
		t.Queues = append(t.Queues, spec)
	}
	bNodes := entries("bindings")
	for i, b := range f.Bindings {
		spec := topology.BindSpec{Source: b.Source, Destination: b.Destination, RoutingKey: b.RoutingKey, Args: argTable(b.Arguments)}
		entity := fmt.Sprintf("binding %s -> %s", b.Source, b.Destination)
		switch b.DestinationType {
		case "", "queue":
		case "exchange":
			spec.Kind = topology.BindExchange
		default:
			line := bNodes[i].Line
			if k := mapKey(bNodes[i], "destination_type"); k != nil {
				line = k.Line
			}
			problems = append(problems, Problem{File: path, Line: line, Field: "destination_type", Entity: entity, Reason: fmt.Sprintf("%q: want queue or exchange", b.DestinationType)})
		}
		report(bNodes[i], entity, spec.Validate())
		t.Bindings = append(t.Bindings, spec)
	}
	problems = append(problems, crossCheck(path, t, qNodes, bNodes)...)
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
	if len(problems) > 0 {
		return t, problems, ErrInvalidFile
	}
	return t, nil, nil
}

// crossCheck finds what no single spec shows: a binding to a queue or from
// an exchange the file does not declare is fine (it may exist already),
// but two declarations of one name are not.
func crossCheck(path string, t topology.Topology, qNodes, bNodes []*yaml.Node) []Problem {
	var problems []Problem
	seen := map[string]int{}
	for i, q := range t.Queues {
		if prev, dup := seen[q.Name]; dup {
			problems = append(problems, Problem{File: path, Line: qNodes[i].Line, Field: "name", Entity: fmt.Sprintf("queue %q", q.Name),
				Reason: fmt.Sprintf("declared twice (first at line %d)", qNodes[prev].Line)})
			continue
		}
		seen[q.Name] = i
	}
	return problems
}

// yamlProblem turns a YAML syntax error into a Problem ("yaml: line 3: ...").
func yamlProblem(path string, err error) Problem {
	msg := err.Error()
	line := 0
	if _, scanErr := fmt.Sscanf(msg, "yaml: line %d:", &line); scanErr == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg[len("yaml: line "):], ":")+len("yaml: line ")+1:])
	}
	return Problem{File: path, Line: line, Reason: msg}
}

// yamlProblems splits a decoding error (unknown fields, wrong types) into
// one Problem per line it names.
func yamlProblems(path string, err error) []Problem {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []Problem{yamlProblem(path, err)}
	}
	var out []Problem
	for _, e := range te.Errors {
		line := 0
		rest := e
		if _, scanErr := fmt.Sscanf(e, "line %d:", &line); scanErr == nil {
			rest = strings.TrimSpace(e[strings.Index(e, ":")+1:])
		}
		out = append(out, Problem{File: path, Line: line, Reason: rest})
	}
	return out
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func mapKey(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

// argTable converts YAML arguments to an AMQP table: YAML integers are int,
// which AMQP encodes as a signed 64-bit value, as the broker expects of
// x-arguments.
func argTable(m map[string]any) amqp.Table {
	if len(m) == 0 {
		return nil
	}
	t := amqp.Table{}
	for k, v := range m {
		switch x := v.(type) {
		case int:
			t[k] = int64(x)
		default:
			t[k] = x
		}
	}
	return t
}

// fileOf is the YAML form of t.
func fileOf(t topology.Topology) topologyFile {
	var f topologyFile
	for _, x := range t.Exchanges {
		f.Exchanges = append(f.Exchanges, exchangeEntry{Name: x.Name, Type: string(x.Type), Durable: x.Durable, AutoDelete: x.AutoDelete,
			Internal: x.Internal, AlternateExchange: x.Args.AlternateExchange, Arguments: plain(x.Args.Extra)})
	}
	for _, q := range t.Queues {
		e := queueEntry{Name: q.Name, Durable: q.Durable, Exclusive: q.Exclusive, AutoDelete: q.AutoDelete, Type: string(q.Args.Type),
			MaxLength: q.Args.MaxLength, MaxLengthBytes: q.Args.MaxLengthBytes, Overflow: string(q.Args.Overflow),
			DeadLetterExchange: q.Args.DeadLetterExchange, DeadLetterRoutingKey: q.Args.DeadLetterRoutingKey,
			DeadLetterStrategy: string(q.Args.DeadLetterStrategy), MaxPriority: q.Args.MaxPriority,
			SingleActiveConsumer: q.Args.SingleActiveConsumer, DeliveryLimit: q.Args.DeliveryLimit, LeaderLocator: string(q.Args.LeaderLocator), QueueMode: q.Args.QueueMode,
			InitialGroupSize: q.Args.QuorumInitialGroupSize, MaxSegmentSizeBytes: q.Args.StreamMaxSegmentSizeBytes,
			FilterSizeBytes: q.Args.StreamFilterSizeBytes, Arguments: plain(q.Args.Extra)}
		if q.Args.ConsumerTimeout > 0 {
			e.ConsumerTimeout = q.Args.ConsumerTimeout.String()
		}
		if q.Args.MaxAge > 0 {
			e.MaxAge = q.Args.MaxAge.String()
		}
		if q.Args.MessageTTL > 0 {
			e.MessageTTL = q.Args.MessageTTL.String()
		}
		if q.Args.Expires > 0 {
			e.Expires = q.Args.Expires.String()
		}
		f.Queues = append(f.Queues, e)
	}
	for _, b := range t.Bindings {
		e := bindingEntry{Source: b.Source, Destination: b.Destination, RoutingKey: b.RoutingKey, Arguments: plain(b.Args)}
		if b.Kind == topology.BindExchange {
			e.DestinationType = "exchange"
		}
		f.Bindings = append(f.Bindings, e)
	}
	return f
}

func plain(t amqp.Table) map[string]any {
	if len(t) == 0 {
		return nil
	}
	return map[string]any(t)
}

// unknownKeys reports every key the file format does not have, with its
// line: a misspelt field would otherwise be dropped without a word.
func unknownKeys(path string, doc *yaml.Node) []Problem {
	var out []Problem
	check := func(n *yaml.Node, allowed map[string]bool, where string) {
		if n == nil || n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !allowed[k.Value] {
				out = append(out, Problem{File: path, Line: k.Line, Field: k.Value, Reason: "unknown field in " + where})
			}
		}
	}
	check(doc, keysOf(topologyFile{}), "the file (want exchanges, queues, bindings)")
	for section, entry := range map[string]any{"exchanges": exchangeEntry{}, "queues": queueEntry{}, "bindings": bindingEntry{}} {
		if seq := mapValue(doc, section); seq != nil && seq.Kind == yaml.SequenceNode {
			for _, n := range seq.Content {
				check(n, keysOf(entry), "an entry of "+section)
			}
		}
	}
	return out
}

// keysOf is the YAML keys of a struct's fields.
func keysOf(v any) map[string]bool {
	t := reflect.TypeOf(v)
	keys := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		keys[name] = true
	}
	return keys
}
