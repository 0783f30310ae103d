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
package router
