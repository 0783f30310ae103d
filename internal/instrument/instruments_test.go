package instrument

import (
	"context"
	"errors"
	"testing"
)

// TestDisabledRecordsNothing: Off (telemetry.Disabled) writes no trace context into
// messages, starts no process, and its nil Process and empty Send take
// every call.
func TestDisabledRecordsNothing(t *testing.T) {
	off := Off()
	var headers map[string]any
	send := off.StartSend(context.Background(), Peer{}, Destination{RoutingKey: "q"}, []Outgoing{{Ctx: context.Background(), Headers: &headers}})
	send.Fail(0, errors.New("x"))
	send.End(nil)
	if headers != nil {
		t.Fatalf("Disabled wrote headers %v", headers)
	}
	ctx := context.Background()
	got, p := off.StartProcess(ctx, Peer{}, Incoming{Destination: Destination{Queue: "q"}, Headers: map[string]any{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}})
	if p != nil || got != ctx || FromContext(got) != nil {
		t.Fatal("Disabled started a process")
	}
	p.Fail(errors.New("x"), 1)
	p.End(errors.New("x"))
	p.Settle(Ack, nil, send.start)
	RecordFailure(got, errors.New("x"), 1)
}
