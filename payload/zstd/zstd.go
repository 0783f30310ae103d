// Package zstd is the zstd content-encoding for package payload, with
// klauspost/compress (the Go ecosystem's zstd): a module of its own, so
// that the core builds no compression library but the standard library's.
//
//	m, err := payload.NewMarshaler(payload.Config{
//		Compression: &payload.Compression{Codec: zstd.New(zstd.SpeedDefault)},
//	})
package zstd

import (
	"fmt"

	"github.com/klauspost/compress/zstd"

	"github.com/warrenmq/warren/payload"
)

// The encoder levels.
const (
	SpeedFastest = zstd.SpeedFastest
	SpeedDefault = zstd.SpeedDefault
	SpeedBetter  = zstd.SpeedBetterCompression
	SpeedBest    = zstd.SpeedBestCompression
)

// Codec is zstd at one level; safe for concurrent use (the encoder and
// decoder are, for EncodeAll and DecodeAll).
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

var _ payload.Codec = (*Codec)(nil)

// New returns zstd at level.
func New(level zstd.EncoderLevel) (*Codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, err
	}
	return &Codec{enc: enc, dec: dec}, nil
}

// Encoding implements payload.Codec.
func (c *Codec) Encoding() string { return "zstd" }

// Compress implements payload.Codec.
func (c *Codec) Compress(body []byte) ([]byte, error) {
	return c.enc.EncodeAll(body, make([]byte, 0, len(body)/2)), nil
}

// Decompress implements payload.Codec: at most limit bytes.
func (c *Codec) Decompress(body []byte, limit int) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("zstd: nil Codec")
	}
	out, err := c.dec.DecodeAll(body, nil)
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, fmt.Errorf("zstd: decompresses to more than %d bytes", limit)
	}
	return out, nil
}
