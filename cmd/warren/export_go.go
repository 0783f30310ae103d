package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/topology"
)

// queueArgs parses a queue's x-arguments into the typed fields; what has
// no field stays in Extra.
func queueArgs(raw map[string]any) topology.QueueArgs {
	var a topology.QueueArgs
	extra := amqp.Table{}
	num := func(v any) (int64, bool) {
		switch x := v.(type) {
		case float64:
			return int64(x), true
		case int64:
			return x, true
		case int:
			return int64(x), true
		}
		return 0, false
	}
	for k, v := range raw {
		s, isString := v.(string)
		n, isNum := num(v)
		switch {
		case k == "x-queue-type" && isString:
			a.Type = topology.QueueType(s)
		case k == "x-message-ttl" && isNum:
			a.MessageTTL = time.Duration(n) * time.Millisecond
		case k == "x-expires" && isNum:
			a.Expires = time.Duration(n) * time.Millisecond
		case k == "x-max-length" && isNum:
			a.MaxLength = n
		case k == "x-max-length-bytes" && isNum:
			a.MaxLengthBytes = n
		case k == "x-overflow" && isString:
			a.Overflow = topology.Overflow(s)
		case k == "x-dead-letter-exchange" && isString:
			a.DeadLetterExchange = s
		case k == "x-dead-letter-routing-key" && isString:
			a.DeadLetterRoutingKey = s
		case k == "x-dead-letter-strategy" && isString:
			a.DeadLetterStrategy = topology.DeadLetterStrategy(s)
		case k == "x-max-priority" && isNum:
			a.MaxPriority = int(n)
		case k == "x-single-active-consumer":
			a.SingleActiveConsumer, _ = v.(bool)
		case k == "x-delivery-limit" && isNum:
			a.DeliveryLimit = int(n)
		case k == "x-queue-mode" && isString:
			a.QueueMode = s
		case k == "x-queue-leader-locator" && isString:
			a.LeaderLocator = topology.LeaderLocator(s)
		case k == "x-consumer-timeout" && isNum:
			a.ConsumerTimeout = time.Duration(n) * time.Millisecond
		case k == "x-quorum-initial-group-size" && isNum:
			a.QuorumInitialGroupSize = int(n)
		case k == "x-stream-max-segment-size-bytes" && isNum:
			a.StreamMaxSegmentSizeBytes = n
		case k == "x-stream-filter-size-bytes" && isNum:
			a.StreamFilterSizeBytes = int(n)
		default:
			if isNum {
				v = n
			}
			extra[k] = v
		}
	}
	if a.Type == topology.Classic {
		a.Type = "" // the default
	}
	a.Extra = nonEmpty(extra)
	return a
}

// goTopology is t as a Go literal, for a service that declares its
// topology in code.
func goTopology(t topology.Topology) string {
	var b strings.Builder
	b.WriteString("topology.Topology{\n")
	if len(t.Exchanges) > 0 {
		b.WriteString("\tExchanges: []topology.ExchangeSpec{\n")
		for _, x := range t.Exchanges {
			fmt.Fprintf(&b, "\t\t{Name: %q, Type: %q", x.Name, x.Type)
			flags(&b, map[string]bool{"Durable": x.Durable, "AutoDelete": x.AutoDelete, "Internal": x.Internal})
			if x.Args.AlternateExchange != "" || len(x.Args.Extra) > 0 {
				fmt.Fprintf(&b, ", Args: topology.ExchangeArgs{")
				var parts []string
				if x.Args.AlternateExchange != "" {
					parts = append(parts, fmt.Sprintf("AlternateExchange: %q", x.Args.AlternateExchange))
				}
				if len(x.Args.Extra) > 0 {
					parts = append(parts, "Extra: "+goTable(x.Args.Extra))
				}
				b.WriteString(strings.Join(parts, ", ") + "}")
			}
			b.WriteString("},\n")
		}
		b.WriteString("\t},\n")
	}
	if len(t.Queues) > 0 {
		b.WriteString("\tQueues: []topology.QueueSpec{\n")
		for _, q := range t.Queues {
			fmt.Fprintf(&b, "\t\t{Name: %q", q.Name)
			flags(&b, map[string]bool{"Durable": q.Durable, "AutoDelete": q.AutoDelete, "Exclusive": q.Exclusive})
			if args := goQueueArgs(q.Args); args != "" {
				b.WriteString(", Args: topology.QueueArgs{" + args + "}")
			}
			b.WriteString("},\n")
		}
		b.WriteString("\t},\n")
	}
	if len(t.Bindings) > 0 {
		b.WriteString("\tBindings: []topology.BindSpec{\n")
		for _, s := range t.Bindings {
			fmt.Fprintf(&b, "\t\t{Source: %q, Destination: %q, RoutingKey: %q", s.Source, s.Destination, s.RoutingKey)
			if s.Kind == topology.BindExchange {
				b.WriteString(", Kind: topology.BindExchange")
			}
			if len(s.Args) > 0 {
				b.WriteString(", Args: " + goTable(s.Args))
			}
			b.WriteString("},\n")
		}
		b.WriteString("\t},\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func flags(b *strings.Builder, fs map[string]bool) {
	for _, name := range []string{"Durable", "Exclusive", "AutoDelete", "Internal"} {
		if fs[name] {
			fmt.Fprintf(b, ", %s: true", name)
		}
	}
}

func goQueueArgs(a topology.QueueArgs) string {
	var parts []string
	add := func(format string, v any) { parts = append(parts, fmt.Sprintf(format, v)) }
	if a.Type != "" {
		add("Type: %q", a.Type)
	}
	if a.MessageTTL > 0 {
		add("MessageTTL: %d * time.Millisecond", a.MessageTTL.Milliseconds())
	}
	if a.Expires > 0 {
		add("Expires: %d * time.Millisecond", a.Expires.Milliseconds())
	}
	if a.MaxLength > 0 {
		add("MaxLength: %d", a.MaxLength)
	}
	if a.MaxLengthBytes > 0 {
		add("MaxLengthBytes: %d", a.MaxLengthBytes)
	}
	if a.Overflow != "" {
		add("Overflow: %q", a.Overflow)
	}
	if a.DeadLetterExchange != "" {
		add("DeadLetterExchange: %q", a.DeadLetterExchange)
	}
	if a.DeadLetterRoutingKey != "" {
		add("DeadLetterRoutingKey: %q", a.DeadLetterRoutingKey)
	}
	if a.DeadLetterStrategy != "" {
		add("DeadLetterStrategy: %q", a.DeadLetterStrategy)
	}
	if a.MaxPriority > 0 {
		add("MaxPriority: %d", a.MaxPriority)
	}
	if a.SingleActiveConsumer {
		parts = append(parts, "SingleActiveConsumer: true")
	}
	if a.DeliveryLimit != 0 {
		add("DeliveryLimit: %d", a.DeliveryLimit)
	}
	if a.LeaderLocator != "" {
		add("LeaderLocator: %q", a.LeaderLocator)
	}
	if a.ConsumerTimeout > 0 {
		add("ConsumerTimeout: %d * time.Millisecond", a.ConsumerTimeout.Milliseconds())
	}
	if a.QuorumInitialGroupSize > 0 {
		add("QuorumInitialGroupSize: %d", a.QuorumInitialGroupSize)
	}
	if a.StreamMaxSegmentSizeBytes > 0 {
		add("StreamMaxSegmentSizeBytes: %d", a.StreamMaxSegmentSizeBytes)
	}
	if a.StreamFilterSizeBytes > 0 {
		add("StreamFilterSizeBytes: %d", a.StreamFilterSizeBytes)
	}
	if len(a.Extra) > 0 {
		parts = append(parts, "Extra: "+goTable(a.Extra))
	}
	return strings.Join(parts, ", ")
}

func goTable(t amqp.Table) string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%q: %#v", k, t[k]))
	}
	return "amqp.Table{" + strings.Join(parts, ", ") + "}"
}
