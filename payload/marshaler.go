package payload

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren"
	"github.com/warrenmq/warren/ack"
	"github.com/warrenmq/warren/internal/configerr"
)

// The headers the steps write.
const (
	HeaderEncryption = "warren-encryption"
	HeaderKeyID      = "warren-key-id"
	HeaderClaimCheck = "warren-claim-check"
	HeaderClaimSize  = "warren-claim-size"
)

// stepHeaders are the headers the steps write.
var stepHeaders = []string{HeaderEncryption, HeaderKeyID, HeaderClaimCheck, HeaderClaimSize}

// Errors of decoding. Each is permanent (ack.Permanent): retrying cannot
// help, so the delivery is dead-lettered once, as it is.
var (
	// ErrUnknownEncoding: a content-encoding or encryption this marshaler
	// does not know.
	ErrUnknownEncoding = ack.NamedError("payload: unknown encoding", "unknown_encoding")
	// ErrUnknownKey: the key a message was sealed with is not given (any
	// more).
	ErrUnknownKey = ack.NamedError("payload: unknown key", "unknown_key")
	// ErrTampered: a body that does not authenticate under its key.
	ErrTampered = ack.NamedError("payload: the body does not authenticate", "tampered")
	// ErrBlobNotFound: a claim check whose blob is gone from the store.
	ErrBlobNotFound = ack.NamedError("payload: the claim check's blob is gone", "blob_not_found")
)

// Config shapes a Marshaler. Each step is off while nil.
type Config struct {
	// Inner marshals the message itself (metadata, properties). Default:
	// warren.DefaultMarshaler{}.
	Inner warren.Marshaler
	// Compression compresses bodies above its threshold.
	Compression *Compression
	// Encryption seals bodies with the current key.
	Encryption *Encryption
	// ClaimCheck stores bodies above its threshold and sends a reference.
	ClaimCheck *ClaimCheck
	// Codecs decode content-encodings besides gzip (and Compression's
	// Codec, which decodes too).
	Codecs []Codec
}

// Marshaler is the payload steps around an inner warren.Marshaler.
type Marshaler struct {
	cfg Config
}

var (
	_ warren.Marshaler   = (*Marshaler)(nil)
	_ warren.AckObserver = (*Marshaler)(nil)
)

// NewMarshaler validates cfg and returns its Marshaler.
func NewMarshaler(cfg Config) (*Marshaler, error) {
	if cfg.Inner == nil {
		cfg.Inner = warren.DefaultMarshaler{}
	}
	f := configerr.For("payload.Config")
	if c := cfg.Compression; c != nil {
		c.setDefaults()
		f.Check(c.Threshold < 0, "Compression.Threshold", "must not be negative")
		f.Check(c.Level < -2 || c.Level > 9, "Compression.Level", "gzip levels are -2 to 9 (0: the default)")
	}
	if e := cfg.Encryption; e != nil {
		f.Check(e.Keys == nil, "Encryption.Keys", "required")
	}
	if cc := cfg.ClaimCheck; cc != nil {
		cc.setDefaults()
		f.Check(cc.Store == nil, "ClaimCheck.Store", "required")
		f.Check(cc.Threshold < 0, "ClaimCheck.Threshold", "must not be negative")
		_, deletes := cc.Store.(Deleter)
		f.Check(cc.DeleteOnAck && cc.Store != nil && !deletes, "ClaimCheck.DeleteOnAck", "needs a Store that is a payload.Deleter")
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	return &Marshaler{cfg: cfg}, nil
}

// Marshal marshals msg with the inner marshaler, then compresses, encrypts
// and claim-checks its body as configured.
func (m *Marshaler) Marshal(topic string, msg *message.Message) (amqp.Publishing, error) {
	if m == nil {
		return amqp.Publishing{}, errors.New("payload: nil Marshaler")
	}
	pub, err := m.cfg.Inner.Marshal(topic, msg)
	if err != nil {
		return pub, err
	}
	if err := m.encode(msgContext(msg), msg.UUID, &pub, nil); err != nil {
		return pub, err
	}
	return pub, nil
}

// Encode applies the steps to msg ahead of its publish, in place: its
// Payload becomes the wire body and its Metadata records what was done
// (content-encoding and the steps' headers), so that a later Marshal, by
// this marshaler or any other warren.Marshaler, sends it as it is. An
// outbox encodes what it writes, so that its row holds the wire body (a
// claim check's reference, never the large body) and the blob is written
// in the outbox's transaction. A claim check's blob goes to store, or to
// ClaimCheck.Store when store is nil. On an error msg is unchanged.
func (m *Marshaler) Encode(ctx context.Context, msg *message.Message, store Store) error {
	if m == nil || msg == nil {
		return errors.New("payload: nil Marshaler or message")
	}
	pub := amqp.Publishing{Body: msg.Payload, ContentEncoding: msg.Metadata.Get(warren.MetaContentEncoding)}
	for _, k := range stepHeaders {
		if v := msg.Metadata.Get(k); v != "" {
			setHeader(&pub, k, v)
		}
	}
	if err := m.encode(ctx, msg.UUID, &pub, store); err != nil {
		return err
	}
	msg.Payload = pub.Body
	if pub.ContentEncoding != "" {
		msg.Metadata.Set(warren.MetaContentEncoding, pub.ContentEncoding)
	}
	for _, k := range stepHeaders {
		if v, ok := pub.Headers[k]; ok {
			msg.Metadata.Set(k, fmt.Sprint(v))
		}
	}
	return nil
}

// ClaimCheckStore is the claim check's store, nil without a claim check.
func (m *Marshaler) ClaimCheckStore() Store {
	if m == nil || m.cfg.ClaimCheck == nil {
		return nil
	}
	return m.cfg.ClaimCheck.Store
}

// encode runs the steps on pub's body. A step whose mark pub carries
// already is passed over: a message encoded ahead (Encode), or one that
// went through the steps before (a poison delivery's dead letter, made
// from its raw body and headers), goes as it is; sealing it again would
// lose its key id.
func (m *Marshaler) encode(ctx context.Context, uuid string, pub *amqp.Publishing, store Store) error {
	if c := m.cfg.Compression; c != nil && len(pub.Body) > c.Threshold && pub.ContentEncoding == "" && pub.Headers[HeaderEncryption] == nil && pub.Headers[HeaderClaimCheck] == nil {
		codec := c.codec()
		packed, err := codec.Compress(pub.Body)
		if err != nil {
			return fmt.Errorf("payload: compress %s: %w", uuid, err)
		}
		// A body compression does not shrink (already compressed,
		// encrypted, random) goes as it is: smaller on the wire, and
		// nothing to undo for the consumer.
		if len(packed) < len(pub.Body) {
			pub.Body, pub.ContentEncoding = packed, codec.Encoding()
		}
	}
	if e := m.cfg.Encryption; e != nil && pub.Headers[HeaderEncryption] == nil && pub.Headers[HeaderClaimCheck] == nil {
		id, body, err := e.seal(ctx, pub.Body)
		if err != nil {
			return fmt.Errorf("payload: encrypt %s: %w", uuid, err)
		}
		pub.Body = body
		setHeader(pub, HeaderEncryption, aesGCM)
		setHeader(pub, HeaderKeyID, id)
	}
	if cc := m.cfg.ClaimCheck; cc != nil && len(pub.Body) > cc.Threshold && pub.Headers[HeaderClaimCheck] == nil {
		if store == nil {
			store = cc.Store
		}
		ref, err := put(ctx, store, pub.Body)
		if err != nil {
			return fmt.Errorf("payload: claim check %s: %w", uuid, err)
		}
		setHeader(pub, HeaderClaimCheck, ref)
		setHeader(pub, HeaderClaimSize, int64(len(pub.Body)))
		pub.Body = nil
	}
	return nil
}

// Unmarshal undoes the steps a delivery says it went through (whatever
// this marshaler would do itself: a consumer reads what any producer sent),
// then unmarshals it with the inner marshaler. A step it cannot undo is a
// permanent error (poison).
func (m *Marshaler) Unmarshal(d *amqp.Delivery) (*message.Message, error) {
	if m == nil || d == nil {
		return nil, errors.New("payload: nil Marshaler or delivery")
	}
	body, err := m.decode(d)
	if err != nil {
		return nil, ack.Permanent(err)
	}
	plain := *d
	plain.Body = body
	plain.ContentEncoding = ""
	plain.Headers = withoutSteps(d.Headers)
	return m.cfg.Inner.Unmarshal(&plain)
}

// decode is the delivery's original body.
func (m *Marshaler) decode(d *amqp.Delivery) ([]byte, error) {
	// Unmarshal gets no context: the store and key calls get storeTimeout.
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	body := d.Body
	if ref, ok := d.Headers[HeaderClaimCheck].(string); ok {
		if m.cfg.ClaimCheck == nil {
			return nil, fmt.Errorf("%w: a claim check (%s), and no ClaimCheck store is configured", ErrUnknownEncoding, ref)
		}
		var err error
		if body, err = m.cfg.ClaimCheck.get(ctx, ref); err != nil {
			return nil, err
		}
	}
	if alg, ok := d.Headers[HeaderEncryption].(string); ok {
		if alg != aesGCM {
			return nil, fmt.Errorf("%w: encryption %q", ErrUnknownEncoding, alg)
		}
		if m.cfg.Encryption == nil {
			return nil, fmt.Errorf("%w: encrypted, and no Encryption is configured", ErrUnknownKey)
		}
		id, _ := d.Headers[HeaderKeyID].(string)
		var err error
		if body, err = m.cfg.Encryption.open(ctx, id, body); err != nil {
			return nil, err
		}
	}
	if d.ContentEncoding == "" || d.ContentEncoding == "identity" {
		return body, nil
	}
	codec := m.codecFor(d.ContentEncoding)
	if codec == nil {
		return nil, fmt.Errorf("%w: content-encoding %q", ErrUnknownEncoding, d.ContentEncoding)
	}
	plain, err := codec.Decompress(body, maxDecompressed)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnknownEncoding, d.ContentEncoding, err)
	}
	return plain, nil
}

// codecFor is the codec of a content-encoding, nil when none is given.
func (m *Marshaler) codecFor(encoding string) Codec {
	if c := m.cfg.Compression; c != nil && c.codec().Encoding() == encoding {
		return c.codec()
	}
	for _, c := range m.cfg.Codecs {
		if c != nil && c.Encoding() == encoding {
			return c
		}
	}
	if encoding == gzipEncoding {
		return gzipCodec{&Compression{}}
	}
	return nil
}

// withoutSteps is h without the steps' headers (nil when nothing is left):
// the handler sees the message as it was published.
func withoutSteps(h amqp.Table) amqp.Table {
	if h == nil {
		return nil
	}
	out := make(amqp.Table, len(h))
	for k, v := range h {
		if !slices.Contains(stepHeaders, k) {
			out[k] = v
		}
	}
	return out
}

func setHeader(p *amqp.Publishing, k string, v any) {
	if p.Headers == nil {
		p.Headers = amqp.Table{}
	}
	p.Headers[k] = v
}
