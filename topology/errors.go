package topology

import (
	"fmt"

	"github.com/warrenmq/warren/internal/errkind"
)

// ErrInvalidSpec: a spec failed Validate; no network call was made.
// *SpecError names the field.
var ErrInvalidSpec = errkind.Named("topology: invalid spec", "invalid_spec")

// SpecError names the field of a spec that is wrong.
type SpecError struct {
	// Spec is the kind of spec and its name, e.g. `queue "orders"`.
	Spec   string
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	return fmt.Sprintf("topology: %s: %s: %s", e.Spec, e.Field, e.Reason)
}

// Is makes SpecError match ErrInvalidSpec.
func (e *SpecError) Is(target error) bool { return target == ErrInvalidSpec }
