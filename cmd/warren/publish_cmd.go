package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"
	"github.com/warrenmq/warren/broker"
)

func publishCommand(g *globals) *cobra.Command {
	var exchange, file, contentType, messageID, correlationID, replyTo, typ, appID string
	var headers []string
	var expiration time.Duration
	var priority uint8
	var transient bool
	cmd := &cobra.Command{
		Use:   "publish ROUTING_KEY [BODY]",
		Short: "Publish one message, confirmed; the body from an argument, a file or stdin",
		Long: `publish sends one message to --exchange (default: the default exchange, where
the routing key is a queue's name) and waits for the broker's confirm. The
message is mandatory: when no queue gets it, publish fails. The body is the
second argument, or --file (- for stdin), or stdin when neither is given.
It needs --url or WARREN_URL.`,
		Example: `  warren publish orders '{"id":1}'
  warren publish order.paid --exchange shop --file order.json -H tenant=acme --content-type application/json
  echo hello | warren publish orders`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			var body []byte
			var err error
			switch {
			case len(a) == 2:
				body = []byte(a[1])
			case file == "-" || (file == "" && !isTerminalReader(g.stdin)):
				body, err = io.ReadAll(g.stdin)
			case file != "":
				body, err = os.ReadFile(file)
			default:
				return &usageError{fmt.Errorf("no body: give it as an argument, --file, or on stdin")}
			}
			if err != nil {
				return err
			}
			msg := amqp.Publishing{Body: body, ContentType: contentType, MessageId: messageID, CorrelationId: correlationID,
				ReplyTo: replyTo, Type: typ, AppId: appID, Priority: priority, Timestamp: time.Now(), DeliveryMode: amqp.Persistent}
			if transient {
				msg.DeliveryMode = amqp.Transient
			}
			if expiration > 0 {
				msg.Expiration = fmt.Sprint(expiration.Milliseconds())
			}
			if len(headers) > 0 {
				msg.Headers = amqp.Table{}
				for _, h := range headers {
					k, v, ok := strings.Cut(h, "=")
					if !ok {
						return &usageError{fmt.Errorf("-H %q: want key=value", h)}
					}
					msg.Headers[k] = v
				}
			}
			c, ops, err := g.connectToChange(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			if err := first(ops.PublishAll(cmd.Context(), []broker.Outgoing{{Exchange: exchange, RoutingKey: a[0], Mandatory: true, Msg: msg}})); err != nil {
				return err
			}
			if g.json() {
				return g.printJSON(map[string]any{"exchange": exchange, "routing_key": a[0], "bytes": len(body), "confirmed": true})
			}
			fmt.Fprintf(g.stdout, "published %d bytes to exchange %q with routing key %q on %s (confirmed)\n", len(body), exchange, a[0], g.broker)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&exchange, "exchange", "e", "", "exchange (default: the default exchange)")
	f.StringVarP(&file, "file", "f", "", "read the body from this file (- for stdin)")
	f.StringArrayVarP(&headers, "header", "H", nil, "header key=value (repeatable)")
	f.StringVar(&contentType, "content-type", "", "content-type property")
	f.StringVar(&messageID, "message-id", "", "message-id property")
	f.StringVar(&correlationID, "correlation-id", "", "correlation-id property")
	f.StringVar(&replyTo, "reply-to", "", "reply-to property")
	f.StringVar(&typ, "type", "", "type property")
	f.StringVar(&appID, "app-id", "warren-cli", "app-id property")
	f.DurationVar(&expiration, "expiration", 0, "per-message TTL")
	f.Uint8Var(&priority, "priority", 0, "priority property")
	f.BoolVar(&transient, "transient", false, "delivery mode 1 (default: persistent)")
	return cmd
}

// isTerminalReader reports whether r is a terminal (no body piped in).
func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && isTerminal(f)
}
