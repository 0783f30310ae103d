package headers_test

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/internal/headers"
)

func TestPreviousAttempts(t *testing.T) {
	death := []any{
		amqp.Table{"queue": "delay.1s", "reason": "expired", "count": int64(7)},
		amqp.Table{"queue": "work", "reason": "rejected", "count": int64(2)},
		amqp.Table{"queue": "other", "reason": "rejected", "count": int64(9)},
	}
	tests := []struct {
		name        string
		headers     map[string]any
		redelivered bool
		want        int
	}{
		{"first delivery", nil, false, 0},
		{"redelivered only", nil, true, 1},
		{"x-death of this queue, not element 0 nor a sum", map[string]any{"x-death": death}, false, 2},
		{"x-delivery-count beats x-death", map[string]any{"x-death": death, "x-delivery-count": int64(4)}, true, 4},
		{"x-acquired-count beats x-delivery-count", map[string]any{"x-acquired-count": int32(6), "x-delivery-count": int64(4)}, false, 6},
		{"warren header plus this copy's redeliveries", map[string]any{headers.Attempt: "3", "x-delivery-count": int64(2)}, true, 5},
		{"warren header, first delivery of the copy", map[string]any{headers.Attempt: "3"}, false, 3},
		{"garbage header ignored", map[string]any{headers.Attempt: "many"}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := headers.PreviousAttempts(tt.headers, "work", tt.redelivered); got != tt.want {
				t.Fatalf("PreviousAttempts = %d, want %d", got, tt.want)
			}
		})
	}
}
