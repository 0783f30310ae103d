// Package configerr is the one meaning of "invalid configuration" across
// warren: every package re-exports ErrInvalidConfig and Error from here, so
// errors.Is(err, conn.ErrInvalidConfig) and errors.Is(err,
// conn.ErrInvalidConfig) are the same question, whichever constructor
// refused its Config.
package configerr

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidConfig matches every configuration error of the module.
var ErrInvalidConfig = errors.New("warren: invalid configuration")

// Error names the field at fault, qualified by its package and type
// ("router.Config.CloseTimeout"), and what is wrong with it.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid configuration: %s: %s", e.Field, e.Reason)
}

// Is makes every Error match ErrInvalidConfig.
func (e *Error) Is(target error) bool { return target == ErrInvalidConfig }

// Fields collects the problems of one Config, each naming its field under
// prefix; Err joins them (nil when there are none).
type Fields struct {
	prefix string
	errs   []error
}

// For starts a collection for the fields of prefix ("router.Config").
func For(prefix string) *Fields { return &Fields{prefix: prefix} }

// Add records that field is wrong for reason.
func (f *Fields) Add(field, reason string) {
	f.errs = append(f.errs, &Error{Field: f.prefix + "." + field, Reason: reason})
}

// Addf is Add with a formatted reason.
func (f *Fields) Addf(field, format string, args ...any) { f.Add(field, fmt.Sprintf(format, args...)) }

// Check adds reason for field when bad is true.
func (f *Fields) Check(bad bool, field, reason string) {
	if bad {
		f.Add(field, reason)
	}
}

// Join adds an error that is already a configuration error (a nested
// Config's Validate), leaving nil out.
func (f *Fields) Join(err error) {
	if err != nil {
		f.errs = append(f.errs, err)
	}
}

// Err is every problem joined, nil when there is none.
func (f *Fields) Err() error { return errors.Join(f.errs...) }

// ErrorType is "invalid_config" (ack.ErrorType).
func (e *Error) ErrorType() string { return "invalid_config" }

// Backoff records the problems of a backoff (retry.Backoff.Problems) under
// field.
func (f *Fields) Backoff(field string, problems []string) {
	for _, p := range problems {
		sub, reason, _ := strings.Cut(p, ": ")
		f.Add(field+"."+sub, reason)
	}
}
