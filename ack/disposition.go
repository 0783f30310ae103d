package ack

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Disposition is how a delivery is settled.
type Disposition int

const (
	// Unset: the Subscriber's default applies (ack on Ack; on Nack, its
	// NackDisposition, RejectRequeue by default).
	Unset Disposition = iota
	// Ack: done.
	Ack
	// Requeue: basic.nack with requeue, "not my fault, try later" (a
	// dependency is down): the Subscriber settles it after a backoff, never
	// at once, and never dead-letters it for it. Quorum queues (4.3+) do not
	// count it toward the delivery limit.
	Requeue
	// Reject: basic.reject without requeue: the broker dead-letters it to
	// the queue's dead-letter exchange (or drops it when there is none).
	Reject
	// RejectRequeue: the message failed; basic.reject with requeue after a
	// backoff, so it counts toward a quorum queue's x-delivery-limit. After
	// the Subscriber's Redelivery.MaxAttempts it is rejected to the queue's
	// dead-letter exchange when the queue has one; without one it keeps
	// coming back at the capped backoff, never dropped.
	RejectRequeue
)

var dispositionNames = [...]string{"unset", "ack", "requeue", "reject", "reject-requeue"}

func (d Disposition) String() string {
	if d >= 0 && int(d) < len(dispositionNames) {
		return dispositionNames[d]
	}
	return fmt.Sprintf("disposition(%d)", int(d))
}

// Set records how msg is to be settled and why. It returns false when msg
// has no disposition slot (see Track).
func Set(msg *message.Message, d Disposition, why error) bool {
	s := stateOf(msg)
	if s == nil {
		return false
	}
	s.mu.Lock()
	s.disp, s.why = d, why
	s.mu.Unlock()
	return true
}

// Get returns msg's disposition and its reason (Unset when none was set).
func Get(msg *message.Message) (Disposition, error) {
	s := stateOf(msg)
	if s == nil {
		return Unset, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.disp, s.why
}

// Kind classifies an error for the Ack middleware.
type Kind int

const (
	// Retryable errors go the retry way (the default for any error).
	Retryable Kind = iota
	// PermanentKind errors are never retried: they go the dead-letter way.
	PermanentKind
	// RequeueKind errors are requeued as they are ("not my fault").
	RequeueKind
)

type kindError struct {
	kind Kind
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

// Permanent marks err as never retryable: bad input, a message that will
// fail however often it is tried. Nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &kindError{PermanentKind, err}
}

// AsRequeue marks err as not the message's fault (a dependency is down):
// the delivery is requeued as it is, without counting as a failed attempt.
// Nil stays nil.
func AsRequeue(err error) error {
	if err == nil {
		return nil
	}
	return &kindError{RequeueKind, err}
}

// KindOf returns the kind err was marked with (Retryable when none).
func KindOf(err error) Kind {
	var ke *kindError
	if errors.As(err, &ke) {
		return ke.kind
	}
	return Retryable
}
