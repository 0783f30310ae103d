package payload

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Store keeps the bodies of claim checks. Put streams a body in; Get
// streams it out (an error wrapping ErrBlobNotFound when it is gone);
// Cleanup deletes what is older than a time. An object store plugs in by
// implementing it (Put as an upload, Get as a download, Cleanup as a
// lifecycle rule or a listing).
type Store interface {
	Put(ctx context.Context, id string, body io.Reader) error
	Get(ctx context.Context, id string) (io.ReadCloser, error)
	Cleanup(ctx context.Context, olderThan time.Time) (int, error)
}

// Deleter is a Store that deletes one blob (DirStore and pg/blobstore
// are): ClaimCheck.DeleteOnAck needs it.
type Deleter interface {
	Delete(ctx context.Context, id string) error
}

// ClaimCheck stores bodies above Threshold in Store and sends their
// reference instead (RabbitMQ 4.0 refuses messages above 16 MiB by
// default). Blobs are deleted by the store's Cleanup after a retention the
// user runs (RunCleanup), and, with DeleteOnAck, as soon as a Subscriber
// acks the message. Either way a blob outlives what still needs it: a
// delayed retry or a dead letter is a copy claim-checked anew (a blob of
// its own), and a message rejected to a dead-letter exchange is not acked.
// Pick a retention longer than a message can wait: the longest delay
// level, the time a dead letter may wait for a replay.
type ClaimCheck struct {
	Store Store
	// Threshold: bodies of more bytes go to the store. Default: 256 KiB.
	Threshold int
	// DeleteOnAck deletes a message's blob once a Subscriber has acked it
	// (its Store must be a Deleter); retention still removes what was
	// never acked. Off by default, because it is safe only where each
	// message is consumed from one queue (a topic fanned out to several
	// queues shares one blob: the first ack would take it from the
	// others), and because an ack is not confirmed by the broker: a
	// delivery whose ack was lost with its channel comes again, finds its
	// blob gone, and is dead-lettered as ErrBlobNotFound; that message
	// was handled already, so nothing is lost, but the dead letter is
	// noise.
	DeleteOnAck bool
}

func (cc *ClaimCheck) setDefaults() {
	if cc.Threshold == 0 {
		cc.Threshold = 256 << 10
	}
}

// put stores body in store under a new random id and returns it.
func put(ctx context.Context, store Store, body []byte) (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := store.Put(ctx, id, bytes.NewReader(body)); err != nil {
		return "", err
	}
	return id, nil
}

// get fetches a blob.
func (cc *ClaimCheck) get(ctx context.Context, id string) ([]byte, error) {
	r, err := cc.Store.Get(ctx, id)
	if err != nil {
		if errors.Is(err, ErrBlobNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("payload: fetch claim check %s: %w", id, err)
	}
	defer r.Close()
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("payload: fetch claim check %s: %w", id, err)
	}
	return body, nil
}

// RunCleanup deletes the store's blobs older than retention every every,
// until ctx ends.
func RunCleanup(ctx context.Context, s Store, retention, every time.Duration) error {
	if s == nil || retention <= 0 || every <= 0 {
		return errors.New("payload: RunCleanup needs a store, a positive retention and a positive interval")
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.Cleanup(ctx, time.Now().Add(-retention)); err != nil && ctx.Err() == nil {
			// The next round tries again.
			_ = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Acked implements warren.AckObserver: with DeleteOnAck, the blob of a
// delivery a Subscriber acked is deleted.
func (m *Marshaler) Acked(d *amqp.Delivery) error {
	if m == nil || d == nil || m.cfg.ClaimCheck == nil || !m.cfg.ClaimCheck.DeleteOnAck {
		return nil
	}
	ref, ok := d.Headers[HeaderClaimCheck].(string)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := m.cfg.ClaimCheck.Store.(Deleter).Delete(ctx, ref); err != nil {
		return fmt.Errorf("payload: delete the claim check %s of an acked message (retention removes it): %w", ref, err)
	}
	return nil
}
