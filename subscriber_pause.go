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
// another consumer. A partitioned topic's share keeps its partitions (and
// their locks: no other member takes them, so each key's order holds) and
// claims no more. A paused subscription is not consumed again after a
// reconnect; Consuming is false. Nothing is lost and nothing is handled
// twice beyond the broker's redelivery of what was never acked.
//
// ErrNotSubscribed when the Subscriber has no subscription to topic.
// Idempotent.
func (s *Subscriber) Pause(ctx context.Context, topic string) error {
	return s.eachPausable(topic, "pause", func(p pausable) error { return p.Pause(ctx) })
}

// Resume consumes topic's paused subscriptions again, and returns once
// they do (or ctx ends: they go on trying, with the backoff of any
// recovery). Idempotent.
func (s *Subscriber) Resume(ctx context.Context, topic string) error {
	return s.eachPausable(topic, "resume", func(p pausable) error { return p.Resume(ctx) })
}

// eachPausable applies f to topic's subscriptions and shares, joining
// their errors.
func (s *Subscriber) eachPausable(topic, verb string, f func(pausable) error) error {
	ps, err := s.pausable(topic)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range ps {
		if err := f(p); err != nil {
			errs = append(errs, fmt.Errorf("warren: %s %q: %w", verb, topic, err))
		}
	}
	return errors.Join(errs...)
}

// Paused reports whether topic's subscriptions are paused (false for a
// topic without one).
func (s *Subscriber) Paused(topic string) bool {
	ps, err := s.pausable(topic)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if !p.Paused() {
			return false
		}
	}
	return true
}

// TopicPauser is Pause and Resume of one topic, as a kill switch on a
// plain Watermill router wants them (middleware.KillSwitchConfig.Pauser).
func (s *Subscriber) TopicPauser(topic string) interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
} {
	return topicPauser{s: s, topic: topic}
}

type topicPauser struct {
	s     *Subscriber
	topic string
}

func (p topicPauser) Pause(ctx context.Context) error  { return p.s.Pause(ctx, p.topic) }
func (p topicPauser) Resume(ctx context.Context) error { return p.s.Resume(ctx, p.topic) }

// pausable is what Pause and Resume act on for a topic: a consumer, or a
// partitioned topic's share.
type pausable interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Paused() bool
}

// pausable are topic's subscriptions and partition shares.
func (s *Subscriber) pausable(topic string) ([]pausable, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []pausable
	for _, g := range s.groups {
		if g.Topic() == topic {
			out = append(out, g)
		}
	}
	if len(out) > 0 {
		return out, nil // its partitions' subscriptions are the group's
	}
	for _, st := range s.subs {
		if st.topic != topic {
			continue
		}
		if !st.consumed.IsSet() {
			continue // still starting: nothing to pause yet
		}
		if st.consumer != nil {
			out = append(out, st.consumer)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotSubscribed, topic)
	}
	return out, nil
}
