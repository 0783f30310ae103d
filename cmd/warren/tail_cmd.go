package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/warrenmq/warren"
)

func tailCommand(g *globals) *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:   "tail EXCHANGE [PATTERN]",
		Short: "Print the messages an exchange routes, as they arrive",
		Long: `tail binds a temporary exclusive queue to EXCHANGE with PATTERN (default "#",
every message of a topic exchange; fanout exchanges ignore it) and prints
each message as warren decodes it: its id, metadata and body (JSON
pretty-printed). The queue goes away with tail. It runs until interrupted, or
until --count messages were printed.`,
		Example: `  warren tail shop 'order.#'
  warren tail events --count 1 -o json`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			pattern := "#"
			if len(a) == 2 {
				pattern = a[1]
			}
			ctx := cmd.Context()
			c, _, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			ch, err := c.NewChannel(ctx)
			if err != nil {
				return err
			}
			defer ch.Close()
			q, err := ch.QueueDeclare(ctx, "", false, true, true, false, nil)
			if err != nil {
				return err
			}
			if err := ch.QueueBind(ctx, q.Name, pattern, a[0], false, nil); err != nil {
				return fmt.Errorf("bind to exchange %q: %w", a[0], err)
			}
			deliveries, err := ch.Consume(ctx, q.Name, "warren-tail", true, true, false, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "tailing exchange %q with %q on %s (Ctrl-C to stop)\n", a[0], pattern, g.broker)
			var m warren.DefaultMarshaler
			for n := 0; count == 0 || n < count; n++ {
				var d amqp.Delivery
				var ok bool
				select {
				case <-ctx.Done():
					return nil
				case d, ok = <-deliveries:
				}
				if !ok {
					return fmt.Errorf("the connection to the broker was lost")
				}
				msg, err := m.Unmarshal(&d)
				if err != nil {
					fmt.Fprintf(g.stdout, "undecodable message (%v): %q\n", err, d.Body)
					continue
				}
				if g.json() {
					var body any = string(msg.Payload)
					if json.Valid(msg.Payload) {
						body = json.RawMessage(msg.Payload)
					}
					if err := g.printJSON(map[string]any{"uuid": msg.UUID, "exchange": d.Exchange, "routing_key": d.RoutingKey,
						"metadata": msg.Metadata, "body": body}); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(g.stdout, "%s  %s  routing key %q\n", time.Now().Format("15:04:05.000"), msg.UUID, d.RoutingKey)
				keys := make([]string, 0, len(msg.Metadata))
				for k := range msg.Metadata {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(g.stdout, "    %s: %s\n", k, msg.Metadata[k])
				}
				fmt.Fprintln(g.stdout, indent(prettyBody(msg.Payload), "    "))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&count, "count", 0, "stop after this many messages (0: run until interrupted)")
	return cmd
}
