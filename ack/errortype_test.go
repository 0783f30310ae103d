package ack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/warrenmq/warren/ack"
)

type refusal struct{ name string }

func (r refusal) Error() string     { return "refused" }
func (r refusal) ErrorType() string { return r.name }

// TestErrorType: a name an error gives itself wins; then the context's
// errors; then the innermost error with a type of its own; plain texts are
// _OTHER, never *errors.errorString.
func TestErrorType(t *testing.T) {
	var syntax *json.SyntaxError
	jsonErr := json.Unmarshal([]byte("{"), &struct{}{})
	if !errors.As(jsonErr, &syntax) {
		t.Fatalf("want a *json.SyntaxError, got %T", jsonErr)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("db down"), "_OTHER"},
		{fmt.Errorf("charge: %w", errors.New("declined")), "_OTHER"},
		{ack.Permanent(errors.New("bad order")), "_OTHER"},
		{fmt.Errorf("publish: %w", refusal{"NOT_FOUND"}), "NOT_FOUND"},
		{ack.Permanent(fmt.Errorf("x: %w", refusal{"ACCESS_REFUSED"})), "ACCESS_REFUSED"},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{fmt.Errorf("decode: %w", jsonErr), "*json.SyntaxError"},
		{errors.Join(errors.New("a"), fmt.Errorf("b: %w", jsonErr)), "*json.SyntaxError"},
	} {
		if got := ack.ErrorType(tc.err); got != tc.want {
			t.Errorf("ErrorType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
