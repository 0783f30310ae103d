package warren

import (
	"context"
	"errors"
	"fmt"
)

// Pause stops taking messages of topic's subscriptions until Resume,
// without ending them: AMQP 0-9-1 cannot pause a consumer, so each
// consumer is cancelled, the messages its handlers hold finish and settle
// (until ctx ends), what the broker had sent and no handler got goes back to
// the queue in the order it came, and the broker holds the backlog. A
// single-active-consumer queue closes its channel instead, so that the
// broker takes back what it held, in order, before it hands the queue to
// another consumer. A paused subscription is not consumed again after a
// reconnect; Consuming is false. Nothing is lost and nothing is handled
// twice beyond the broker's redelivery of what was never acked.
//
// ErrNotSubscribed when the Subscriber has no subscription to topic,
// ErrPauseUnsupported for a partitioned topic's share. Idempotent.
func (s *Subscriber) Pause(ctx context.Context, topic string) error {
	subs, err := s.pausable(topic)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range subs {
		if err := st.consumer.Pause(ctx); err != nil {
			errs = append(errs, fmt.Errorf("warren: pause %q: %w", topic, err))
		}
	}
	return errors.Join(errs...)
}

// Resume consumes topic's paused subscriptions again, and returns once
// they do (or ctx ends: they go on trying, with the backoff of any
// recovery). Idempotent.
func (s *Subscriber) Resume(ctx context.Context, topic string) error {
	subs, err := s.pausable(topic)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range subs {
		if err := st.consumer.Resume(ctx); err != nil {
			errs = append(errs, fmt.Errorf("warren: resume %q: %w", topic, err))
		}
	}
	return errors.Join(errs...)
}

// Paused reports whether topic's subscriptions are paused (false for a
// topic without one).
func (s *Subscriber) Paused(topic string) bool {
	subs, err := s.pausable(topic)
	if err != nil || len(subs) == 0 {
		return false
	}
	for _, st := range subs {
		if !st.consumer.Paused() {
			return false
		}
	}
	return true
}

// pausable are topic's subscriptions, each with its consumer.
func (s *Subscriber) pausable(topic string) ([]*subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.groups {
		if g.Topic() == topic {
			return nil, fmt.Errorf("%w: %q is a partitioned topic", ErrPauseUnsupported, topic)
		}
	}
	var out []*subscription
	for _, st := range s.subs {
		if st.topic != topic {
			continue
		}
		select {
		case <-st.consumed:
		default:
			continue // still starting: nothing to pause yet
		}
		if st.consumer != nil {
			out = append(out, st)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotSubscribed, topic)
	}
	return out, nil
}
