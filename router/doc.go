// Package router declares a whole service in one place on a Watermill
// message.Router.
//
// A [Route] names its queue, bindings and the exchanges they need, its
// prefetch and MaxInFlight, its retry, delayed retry, dead-letter and tracing
// settings, and its handler. [Router.Run] declares every route's topology in
// the registry (so it is restored after every reconnect, dead-letter and
// delay queues included), checks that every dead-letter target exists,
// creates a warren Subscriber per route and wraps each handler in the
// standard stack, outermost first:
//
//	recover -> tracing -> ack -> dead-letter -> delayed retry -> retry -> timeout -> handler
//
// Defaults are safe: at-least-once, bounded retry, a dead-letter queue per
// route. [Router.Close] drains before it closes (subscribers first, then
// the Watermill router, the publishers and the connection), so handlers
// finish their work and settle it. [Router.Health] and
// [Router.ReadinessHandler] serve readiness probes. [Router.Watermill] is the
// underlying Watermill router: any Watermill middleware or plugin still plugs
// in, and warren's Publisher, Subscriber and middleware keep working without
// this package.
package router
