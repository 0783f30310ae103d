package router

import (
	"github.com/ThreeDotsLabs/watermill"
)

// watermillLog is the Watermill router's logger: Watermill's own lines,
// except two that would mislead or say a thing twice.
//
//   - "Running router handlers count=0": routes run on their own
//     subscriptions, not as Watermill handlers, so Watermill counts none;
//     the router logs "router: running" with its routes instead.
//   - "Handler returned error" of a route: the route's retry, delayed-retry
//     and dead-letter steps logged what became of the message, once, at
//     the level the router's doc gives; Watermill would add an Error line
//     per failed delivery. A handler added to Watermill() directly keeps
//     Watermill's line.
type watermillLog struct {
	watermill.LoggerAdapter
	routes map[string]bool
}

func (l watermillLog) Error(msg string, err error, fields watermill.LogFields) {
	if msg == "Handler returned error" {
		if name, _ := fields["handler_name"].(string); l.routes[name] {
			return
		}
	}
	l.LoggerAdapter.Error(msg, err, fields)
}

func (l watermillLog) Info(msg string, fields watermill.LogFields) {
	if msg == "Running router handlers" {
		if n, ok := fields["count"].(int); ok && n == 0 {
			return
		}
	}
	l.LoggerAdapter.Info(msg, fields)
}

func (l watermillLog) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return watermillLog{LoggerAdapter: l.LoggerAdapter.With(fields), routes: l.routes}
}
