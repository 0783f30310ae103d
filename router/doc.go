// Package router declares a whole service in one place on a Watermill
// message.Router.
//
// A [Route] names its queue, bindings and the exchanges they need, its
// prefetch and MaxInFlight, its retry, delayed retry, dead-letter and tracing
// settings, and its handler. [Router.Run] declares every route's topology in
// the registry (so it is restored after every reconnect, dead-letter and
// delay levels included), checks that every dead-letter target exists,
// creates a warren Subscriber per route and wraps each handler in the
// standard stack, outermost first:
//
//	recover -> tracing -> ack -> dead-letter -> delayed retry -> retry (timeout per attempt) -> handler
//
// Defaults are safe: at-least-once, bounded retry, a dead-letter queue per
// route. [Router.WaitRunning] tells a waiter that Run started, or why it did
// not. [Router.Close] (and the end of Run's ctx) shuts down like
// http.Server.Shutdown: deliveries stop at once, handlers in flight finish and
// settle with live contexts until the deadline, then the Watermill router and
// the publishers close; the connection stays the caller's unless
// Config.CloseConnection. A route's consumer comes back by itself from
// anything the broker does to it; [Router.Health] and
// [Router.ReadinessHandler] report the gap, and Config.OnConsumerEvent hears
// of it. A service in production:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	if err := r.Run(ctx); err != nil { // returns after draining on SIGTERM
//		log.Fatal(err)
//	}
//
// Each route's subscription runs the route's stack itself
// (warren.Subscriber.SubscribeFunc): no channel hop and no goroutine per
// message. [Router.Watermill] is the underlying Watermill router, which runs
// any Watermill handler and plugin added to it; with Config.WatermillHandlers
// the routes run as its handlers too, so that Watermill router middleware and
// decorators apply to them. warren's Publisher, Subscriber and middleware
// keep working without this package.
//
// # Logs
//
// The router logs to Config.Logger (default: the connection's), with
// log/slog. Every line about a message carries route, message_uuid,
// attempt, error and error.type (the value spans and metrics carry), never
// the payload or header values. Each event is logged once, by the step that
// decides it: a message that fails and is redelivered many times is one
// line at Info and one at Warn, never a line per redelivery (the
// redeliveries in between are at Debug).
//
//	level  message                                                    when
//	Info   router: running                                            Run started every route (routes, route_names)
//	Info   warren: handler failed; retrying in process                an attempt failed and Retry tries again (retry_in)
//	Info   warren: handler failed; retrying after a delay             DelayedRetry sent a copy to a delay level (delay, round)
//	Info   warren: handler failed; the message is redelivered ...     a failure handed back to the broker (no dead-letter step), first time only (retry_in)
//	Warn   warren: message dead-lettered                              the dead-letter step took it (mode, dead_letter_queue)
//	Warn   warren: message failed too often; rejected to ...          a Subscriber's Redelivery.MaxAttempts, to the queue's dead-letter exchange
//	Warn   warren: message keeps failing and its queue has no ...     the same without a dead-letter exchange: kept, redelivered at the capped backoff
//	Error  warren: handler panicked; message dead-lettered            a panic (panic value in error, stack)
//	Error  warren: poison message: it cannot be decoded ...           a delivery the marshaler refused (message_id, queue)
//	Error  warren: ... could not be scheduled / published; requeued   a delayed retry or dead letter the broker did not confirm (publish_error)
//	Warn   warren: settling a delivery failed                         an ack or nack the broker refused (queue, disposition)
//	Warn   warren: subscription ends with its consumer                a consumer that ends for good (the connection gave up)
//	Info   router: draining: routes stop taking messages; ...         Close or Run's ctx ended (in_flight, timeout)
//	Info   router: draining                                           while handlers still run, every 5s (every quarter of a shorter CloseTimeout) (in_flight, in_flight_by_route)
//	Info   router: drained                                            every handler settled (took)
//	Warn   router: drained, but messages were unfinished ...          some were given back to the broker at the deadline (given_back)
//
// The connection logs its own life (connected, blocked, reconnecting, gave
// up) on conn.Config.Logger. Watermill's own router lines pass through,
// except its "Running router handlers count=0" (the routes are not
// Watermill handlers) and its per-message "Handler returned error" for a
// route, which the lines above already tell.
package router
