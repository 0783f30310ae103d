package payload

import (
	"context"
	"errors"
	"fmt"

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

var _ warren.Marshaler = (*Marshaler)(nil)

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
	ctx := msgContext(msg)
	if c := m.cfg.Compression; c != nil && len(pub.Body) > c.Threshold && pub.ContentEncoding == "" {
		codec := c.codec()
		if pub.Body, err = codec.Compress(pub.Body); err != nil {
			return pub, fmt.Errorf("payload: compress %s: %w", msg.UUID, err)
		}
		pub.ContentEncoding = codec.Encoding()
	}
	// A message that went through the steps already (a poison delivery's
	// dead letter, made from its raw body and headers) goes as it is:
	// sealing it again would lose its key id.
	if e := m.cfg.Encryption; e != nil && pub.Headers[HeaderEncryption] == nil && pub.Headers[HeaderClaimCheck] == nil {
		id, body, err := e.seal(ctx, pub.Body)
		if err != nil {
			return pub, fmt.Errorf("payload: encrypt %s: %w", msg.UUID, err)
		}
		pub.Body = body
		setHeader(&pub, HeaderEncryption, aesGCM)
		setHeader(&pub, HeaderKeyID, id)
	}
	if cc := m.cfg.ClaimCheck; cc != nil && len(pub.Body) > cc.Threshold && pub.Headers[HeaderClaimCheck] == nil {
		ref, err := cc.put(ctx, pub.Body)
		if err != nil {
			return pub, fmt.Errorf("payload: claim check %s: %w", msg.UUID, err)
		}
		setHeader(&pub, HeaderClaimCheck, ref)
		setHeader(&pub, HeaderClaimSize, int64(len(pub.Body)))
		pub.Body = nil
	}
	return pub, nil
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
		switch k {
		case HeaderEncryption, HeaderKeyID, HeaderClaimCheck, HeaderClaimSize:
		default:
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
