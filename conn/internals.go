package conn

import (
	"context"
	"log/slog"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/warrenmq/warren/internal/connx"
	"github.com/warrenmq/warren/internal/instrument"
	"github.com/warrenmq/warren/telemetry"
)

// The plumbing the layers above conn need and no user does (internal/connx
// says what each is for).
func init() {
	connx.Attachment = func(c any, key any, make func() any) any { return c.(*Conn).attachment(key, make) }
	connx.Go = func(c any, fn func()) bool { return c.(*Conn).goFor(fn) }
	connx.GenerationFor = func(c any, ctx context.Context) uint64 { return c.(*Conn).generationFor(ctx) }
	connx.Restoring = restoring
	connx.Peer = func(c any) instrument.Peer { return c.(*Conn).peerNow() }
	connx.Logger = func(c any) *slog.Logger { return c.(*Conn).logger() }
	connx.Telemetry = func(c any) *telemetry.Telemetry { return c.(*Conn).telemetry() }
	connx.Connected = func(c any) <-chan struct{} { return c.(*Conn).connected() }
	connx.BeforeClose = func(c any, fn func()) { c.(*Conn).beforeClose(fn) }
	connx.ChannelGeneration = func(ch any) uint64 { return ch.(*Channel).generation() }
	connx.ConnectionLost = func(ch any) bool { return ch.(*Channel).connectionLost() }
	connx.LostWith = func(ch any, err error) bool { return ch.(*Channel).lostWith(err) }
	connx.Raw = func(ch any) *amqp.Channel { return ch.(*Channel).ch }
	connx.Call = func(ch any, ctx context.Context, rpc func(*amqp.Channel) error) error {
		return ch.(*Channel).call(ctx, rpc)
	}
}
