// Package connx is what package conn lends to warren's own packages and to
// no user: the hooks by which the layers above keep one object per
// connection, tell which connection a call ran on, and report telemetry in
// the connection's name. Package conn sets every function here in its init
// (it imports connx; connx cannot import it, hence the any-typed
// receivers, each a *conn.Conn or a *conn.Channel as named). Import conn
// before calling them; every package that holds a *conn.Conn has.
package connx

import (
	"context"
	"log/slog"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/telemetry"
)

var (
	// Attachment returns the value attached to the *conn.Conn under key,
	// making it with make on first use (at most once per key, under a
	// lock: make must not call Attachment). It keeps exactly one object per
	// connection: the registry, the channel pool, the scheduled messages'
	// hand-over. Use an unexported key type, as with context values.
	Attachment func(c any, key any, make func() any) any
	// Go runs fn on a goroutine that the *conn.Conn's Close waits for; after
	// Close it refuses (false) and fn does not run.
	Go func(c any, fn func()) bool
	// GenerationFor is the generation a call with ctx would use on the
	// *conn.Conn: inside a restore hook (ctx bound to the new connection)
	// the connection being restored, else its Generation.
	GenerationFor func(c any, ctx context.Context) uint64
	// Restoring reports whether ctx is a restore hook's: inside a hook, a
	// call that fails because the connection dropped must not wait for the
	// next connection and retry (the hook runs again on it; waiting would
	// deadlock the connection loop that runs the hook).
	Restoring func(ctx context.Context) bool
	// Peer is the broker the *conn.Conn is on and the client's id, for
	// telemetry; the last broker it was on while it reconnects.
	Peer func(c any) instrument.Peer
	// Logger is the *conn.Conn's Config.Logger, the default of every
	// component on it.
	Logger func(c any) *slog.Logger
	// Telemetry is the *conn.Conn's Config.Telemetry, the default of every
	// component on it.
	Telemetry func(c any) *telemetry.Telemetry
	// Connected is closed once the *conn.Conn is Connected (its restore
	// hooks done), at once if it is now; after each loss a new one. Who
	// waits for a connection and its restore run waits on it instead of
	// polling: a restore of many consumers outlasts their grace, and each
	// one polling meanwhile costs the broker's cores the client's CPU.
	Connected func(c any) <-chan struct{}
	// BeforeClose registers fn to run, bounded by CloseTimeout, just
	// before the *conn.Conn closes its connection on purpose (Close, and
	// Refresh before the old one closes): what a layer holds back for the
	// broker leaves first (the acks of package broker's consumer channels).
	BeforeClose func(c any, fn func())

	// ChannelGeneration is the generation of the connection under the
	// *conn.Channel.
	ChannelGeneration func(ch any) uint64
	// ConnectionLost reports whether the connection under the *conn.Channel
	// is gone (as opposed to the channel alone being closed).
	ConnectionLost func(ch any) bool
	// LostWith reports whether err, returned by a call on the *conn.Channel,
	// means its connection is gone; a socket's error marks it lost at once
	// (amqp091 shuts the connection down on a goroutine of its own, so for a
	// moment ConnectionLost would still say it is alive).
	LostWith func(ch any, err error) bool
	// Raw is the amqp091 channel under the *conn.Channel, for what conn
	// does not wrap (confirm mode's publishing and returns, in package
	// broker).
	Raw func(ch any) *amqp.Channel
	// Call runs rpc on the *conn.Channel's amqp091 channel bounded like
	// every call of conn (ctx and the operation timeout), with conn's
	// error mapping (refusals, a lost connection).
	Call func(ch any, ctx context.Context, rpc func(*amqp.Channel) error) error
)
