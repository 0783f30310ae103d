package telemetry

import (
	"errors"
	"testing"

	"github.com/warrenmq/warren/internal/configerr"
)

// TestNewRefusesAnUnknownRelation: a bad Config is a typed error.
func TestNewRefusesAnUnknownRelation(t *testing.T) {
	if _, err := New(Config{Process: Relation(9)}); !errors.Is(err, configerr.ErrInvalidConfig) {
		t.Fatalf("New with Relation(9): %v", err)
	}
}
