package tests

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/conn"
	"github.com/warrenmq/warren/internal/rabbittest"
	"github.com/warrenmq/warren/internal/sweep"
	"github.com/warrenmq/warren/middleware"
	kit "github.com/warrenmq/warren/middleware/middlewaretest"
	"github.com/warrenmq/warren/payload"
	"github.com/warrenmq/warren/retry"
	"github.com/warrenmq/warren/router"
	"github.com/warrenmq/warren/router/routertest"
	"github.com/warrenmq/warren/telemetry"
	"github.com/warrenmq/warren/telemetry/telemetrytest"
	"github.com/warrenmq/warren/topology"
)

// TestEveryExportedCallTakesNilAndZeroArguments calls every exported
// function and method of the core module with nil and zero arguments (a ctx
// with a short deadline where one is taken): each returns an error or does
// what its doc says, and none panics or blocks. Methods are called on values
// made as a user makes them (constructors, literals); a function or method
// exported later and not swept here fails the test.
func TestEveryExportedCallTakesNilAndZeroArguments(t *testing.T) {
	b := rabbittest.Shared(t)
	url, remove, err := rabbittest.NewVhost("warren-sweep-" + b.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	s := sweep.New(t)
	open := func() *conn.Conn {
		c, err := conn.New(url, conn.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Open(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	closeConn := func(c *conn.Conn) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	}
	c := open()
	defer closeConn(c)
	ctx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	closer := func(v any) {
		switch x := v.(type) {
		case interface{ Close() error }:
			_ = x.Close()
		case interface{ Close(context.Context) error }:
			_ = x.Close(ctx())
		case interface{ Shutdown(context.Context) error }:
			_ = x.Shutdown(ctx())
		}
	}

	// warren
	s.Func("warren.NewPublisher", warren.NewPublisher)
	s.Func("warren.NewSubscriber", warren.NewSubscriber)
	s.Func("warren.NewRequester", warren.NewRequester)
	s.Func("warren.Partition", warren.Partition)
	s.Func("warren.StreamAt", warren.StreamAt)
	s.Func("warren.StreamFirst", warren.StreamFirst)
	s.Func("warren.StreamLast", warren.StreamLast)
	s.Func("warren.StreamNext", warren.StreamNext)
	s.Func("warren.StreamSince", warren.StreamSince)
	s.Func("warren.WatermillLogger", warren.WatermillLogger)
	for name, fn := range map[string]any{
		"WatermillAMQPDurablePubSub": warren.WatermillAMQPDurablePubSub, "WatermillAMQPNonDurablePubSub": warren.WatermillAMQPNonDurablePubSub,
		"WatermillAMQPDurableQueue": warren.WatermillAMQPDurableQueue, "WatermillAMQPNonDurableQueue": warren.WatermillAMQPNonDurableQueue,
		"WatermillAMQPDurableTopic": warren.WatermillAMQPDurableTopic, "WatermillAMQPNonDurableTopic": warren.WatermillAMQPNonDurableTopic,
		"WatermillAMQPQueueSuffix": warren.WatermillAMQPQueueSuffix,
	} {
		s.Func("warren."+name, fn)
	}
	pub := func(cfg warren.PublisherConfig) func() any {
		return func() any {
			p, err := warren.NewPublisher(c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	s.Methods("warren.Publisher", pub(warren.PublisherConfig{}), closer)
	s.Methods("warren.Subscriber", func() any {
		sub, err := warren.NewSubscriber(c, warren.SubscriberConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}, closer)
	s.Methods("warren.Requester", func() any {
		r, err := warren.NewRequester(c, warren.RequesterConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, closer)
	for name, v := range map[string]any{
		"PublisherConfig": &warren.PublisherConfig{}, "SubscriberConfig": &warren.SubscriberConfig{}, "RequesterConfig": &warren.RequesterConfig{},
		"QueuePerTopic": warren.QueuePerTopic{}, "FanoutPerTopic": warren.FanoutPerTopic{}, "TopicExchange": warren.TopicExchange{},
		"ExistingQueues": warren.ExistingQueues{}, "PartitionedTopic": warren.PartitionedTopic{}, "StreamPerTopic": warren.StreamPerTopic{},
		"WatermillAMQP":    warren.WatermillAMQP{},
		"DefaultMarshaler": warren.DefaultMarshaler{}, "PoisonError": &warren.PoisonError{}, "PublishError": &warren.PublishError{},
		"RemoteError": &warren.RemoteError{}, "TopicError": &warren.TopicError{}, "StreamOffset": warren.StreamOffset{},
	} {
		s.Methods("warren."+name, func() any { return v }, nil)
	}

	// conn
	for name, fn := range map[string]any{
		"New": conn.New, "Shared": conn.Shared, "ParseURL": conn.ParseURL,
		"IsAuthError": conn.IsAuthError,
	} {
		s.Func("conn."+name, fn)
	}
	s.Methods("conn.Conn", func() any { return open() }, func(v any) { closeConn(v.(*conn.Conn)) })
	s.Methods("conn.Channel", func() any {
		ch, err := c.NewChannel(ctx())
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}, closer)
	s.Methods("conn.SharedConn", func() any {
		sc, err := conn.Shared(url, conn.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}, closer)
	for name, v := range map[string]any{
		"Config": &conn.Config{}, "URL": &conn.URL{}, "URLError": &conn.URLError{}, "DialError": &conn.DialError{},
		"GiveUpError": &conn.GiveUpError{}, "AuthError": &conn.AuthError{}, "RefusedError": &conn.RefusedError{},
		"RetryPolicy": conn.RetryPolicy{}, "State": conn.State(0), "StateChange": conn.StateChange{},
	} {
		s.Methods("conn."+name, func() any { return v }, nil)
	}

	// topology (data) and broker (the engine)
	for name, fn := range map[string]any{
		"DefaultExchange": topology.DefaultExchange, "ParseTarget": topology.ParseTarget,
	} {
		s.Func("topology."+name, fn)
	}
	s.Func("topology.FirstDifference", topology.FirstDifference[topology.QueueSpec])
	for name, v := range map[string]any{
		"ExchangeSpec": topology.ExchangeSpec{}, "QueueSpec": topology.QueueSpec{}, "BindSpec": topology.BindSpec{},
		"DelayedExchangeSpec": topology.DelayedExchangeSpec{}, "Topology": topology.Topology{}, "QueueArgs": topology.QueueArgs{},
		"ExchangeArgs": topology.ExchangeArgs{}, "Target": topology.Target{}, "BindKind": topology.BindKind(0), "SpecError": &topology.SpecError{},
	} {
		s.Methods("topology."+name, func() any { return v }, nil)
	}
	for name, fn := range map[string]any{
		"NewOps": broker.NewOps, "RegistryOf": broker.RegistryOf, "NoRestore": broker.NoRestore, "WithForce": broker.WithForce,
		"AcceptMessageLoss": broker.AcceptMessageLoss, "IfMissing": broker.IfMissing,
	} {
		s.Func("broker."+name, fn)
	}
	newOps := func() *broker.Ops {
		ops, err := broker.NewOps(c, broker.OpsConfig{})
		if err != nil {
			t.Fatal(err)
		}
		return ops
	}
	s.Methods("broker.Ops", func() any { return newOps() }, closer)
	s.Methods("broker.Registry", func() any { return broker.RegistryOf(c) }, nil)
	consumerQueue := b.Name("sweep-consumer")
	if _, err := newOps().DeclareQueue(ctx(), topology.QueueSpec{Name: consumerQueue, Durable: true}); err != nil {
		t.Fatal(err)
	}
	s.Methods("broker.Consumer", func() any {
		cons, err := newOps().Consume(ctx(), broker.ConsumerSpec{Queue: consumerQueue, Handler: func(context.Context, *broker.Delivery) {}})
		if err != nil {
			t.Fatal(err)
		}
		return cons
	}, func(v any) { _ = v.(*broker.Consumer).Stop(ctx()) })
	s.Methods("broker.ReplyChannel", func() any {
		rc, err := newOps().OpenReplyChannel(ctx(), func(string, error) {})
		if err != nil {
			t.Fatal(err)
		}
		return rc
	}, closer)
	for name, v := range map[string]any{
		"Delivery": &broker.Delivery{}, "ConsumerSpec": broker.ConsumerSpec{}, "ConsumerEventKind": broker.ConsumerEventKind(0),
		"RestoreReport": broker.RestoreReport{}, "OpsConfig": &broker.OpsConfig{}, "ConflictError": &broker.ConflictError{},
		"OperationError": &broker.OperationError{}, "MessageTooLargeError": &broker.MessageTooLargeError{},
		"ForceRefusedError": &broker.ForceRefusedError{}, "RestoreError": &broker.RestoreError{},
	} {
		s.Methods("broker."+name, func() any { return v }, nil)
	}

	// ack
	for name, fn := range map[string]any{
		"Attempt": ack.Attempt, "NextAttempt": ack.NextAttempt,
		"Copy": ack.Copy, "Set": ack.Set, "Get": ack.Get,
		"Permanent": ack.Permanent, "AsRequeue": ack.AsRequeue, "KindOf": ack.KindOf,
		"ErrorType": ack.ErrorType, "NamedError": ack.NamedError, "NewContext": ack.NewContext, "InfoOf": ack.InfoOf, "Track": ack.Track,
	} {
		s.Func("ack."+name, fn)
	}
	s.Methods("ack.Disposition", func() any { return ack.Disposition(0) }, nil)

	// telemetry
	for name, fn := range map[string]any{"New": telemetry.New, "Default": telemetry.Default, "Disabled": telemetry.Disabled} {
		s.Func("telemetry."+name, fn)
	}
	s.Methods("telemetry.Telemetry", func() any { return telemetry.Default() }, nil)
	for name, v := range map[string]any{"Relation": telemetry.Relation(0), "Config": &telemetry.Config{}} {
		s.Methods("telemetry."+name, func() any { return v }, nil)
	}
	rec := telemetrytest.New(t, telemetry.Config{})
	s.Func("telemetrytest.New", telemetrytest.New)
	s.Methods("telemetrytest.Recorder", func() any { return rec }, nil)

	// middleware
	for name, fn := range map[string]any{
		"Ack": middleware.Ack, "DeadLetter": middleware.DeadLetter, "DeadLetterPoison": middleware.DeadLetterPoison,
		"DefaultDeadLetterTopic": middleware.DefaultDeadLetterTopic, "DelayedRetry": middleware.DelayedRetry,
		"Retry": middleware.Retry, "Tracing": middleware.Tracing,
		"DependencyDown": middleware.DependencyDown, "NewKillSwitch": middleware.NewKillSwitch, "RateLimit": middleware.RateLimit,
	} {
		s.Func("middleware."+name, fn)
	}
	for name, v := range map[string]any{
		"AckConfig": &middleware.AckConfig{}, "DeadLetterConfig": &middleware.DeadLetterConfig{}, "DelayedRetryConfig": &middleware.DelayedRetryConfig{},
		"RetryConfig": &middleware.RetryConfig{}, "TracingConfig": &middleware.TracingConfig{}, "DeadLetterMode": middleware.DeadLetterMode(0),
		"PanicError": &middleware.PanicError{}, "KillSwitchConfig": &middleware.KillSwitchConfig{},
		"KillSwitchState": middleware.KillSwitchState(0), "RateLimitConfig": &middleware.RateLimitConfig{},
	} {
		s.Methods("middleware."+name, func() any { return v }, nil)
	}
	s.Methods("middleware.KillSwitch", func() any {
		ks, err := middleware.NewKillSwitch(middleware.KillSwitchConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ks.Close)
		return ks
	}, nil)
	for name, fn := range map[string]any{
		"NewMessage": kit.NewMessage, "Must": kit.Must, "WithUUID": kit.WithUUID, "WithInfo": kit.WithInfo, "WithQueue": kit.WithQueue,
		"WithMetadata": kit.WithMetadata, "WithAttempt": kit.WithAttempt, "WithHeader": kit.WithHeader, "WithRetryRound": kit.WithRetryRound,
		"ConsumeOnly": kit.ConsumeOnly, "WithRedelivered": kit.WithRedelivered, "Run": kit.Run,
	} {
		s.Func("middlewaretest."+name, fn)
	}
	for name, v := range map[string]any{"Handler": &kit.Handler{}, "Publisher": &kit.Publisher{}, "Sleeper": &kit.Sleeper{}} {
		s.Methods("middlewaretest."+name, func() any { return v }, nil)
	}

	// router
	s.Func("router.New", router.New)
	s.Func("routertest.Run", routertest.Run)
	s.Func("routertest.WithTelemetry", routertest.WithTelemetry)
	s.Func("routertest.WithPublisher", routertest.WithPublisher)
	s.Methods("router.Router", func() any {
		r, err := router.New(c, router.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}, closer)
	for name, v := range map[string]any{
		"Config": &router.Config{}, "Route": &router.Route{}, "Health": router.Health{}, "QueueConflictError": &router.QueueConflictError{},
		"BatchError": &router.BatchError{},
	} {
		s.Methods("router."+name, func() any { return v }, nil)
	}

	s.Methods("retry.Backoff", func() any { return retry.Backoff{} }, nil)

	// payload
	s.Func("payload.NewMarshaler", payload.NewMarshaler)
	s.Func("payload.NewStaticKeys", payload.NewStaticKeys)
	s.Func("payload.RunCleanup", payload.RunCleanup)
	s.Methods("payload.Marshaler", func() any {
		m, err := payload.NewMarshaler(payload.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}, nil)
	s.Methods("payload.StaticKeys", func() any { return &payload.StaticKeys{} }, nil)
	s.Methods("payload.DirStore", func() any { return payload.DirStore{} }, nil)

	s.Complete(map[string]string{
		"retry": "../retry", "warren": "..", "conn": "../conn", "topology": "../topology", "broker": "../broker", "ack": "../ack", "telemetry": "../telemetry",
		"telemetrytest": "../telemetry/telemetrytest", "middleware": "../middleware", "middlewaretest": "../middleware/middlewaretest",
		"router": "../router", "routertest": "../router/routertest", "payload": "../payload",
	}, map[string]string{})
}
