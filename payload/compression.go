package payload

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sync"
)

const gzipEncoding = "gzip"

// maxDecompressed bounds what a compressed body may expand to (a
// decompression bomb is an error, not an out-of-memory).
const maxDecompressed = 1 << 30

// Compression compresses bodies above a threshold: with gzip (the
// standard library's, the content-encoding every AMQP client and tool
// knows) unless Codec names another.
type Compression struct {
	// Threshold: bodies of more bytes are compressed (and sent so when
	// that makes them smaller). Default: 1024.
	Threshold int
	// Level is gzip's (-2 to 9; 0: gzip.DefaultCompression).
	Level int
	// Codec compresses instead of gzip (zstd, say); its own options set
	// its level.
	Codec Codec

	pool sync.Pool
}

// codec is what compresses.
func (c *Compression) codec() Codec {
	if c.Codec != nil {
		return c.Codec
	}
	return gzipCodec{c}
}

func (c *Compression) setDefaults() {
	if c.Threshold == 0 {
		c.Threshold = 1024
	}
}

func (c *Compression) level() int {
	if c.Level == 0 {
		return gzip.DefaultCompression
	}
	return c.Level
}

func (c *Compression) compress(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(body) / 2)
	w, _ := c.pool.Get().(*gzip.Writer)
	if w == nil {
		var err error
		if w, err = gzip.NewWriterLevel(&buf, c.level()); err != nil {
			return nil, err
		}
	} else {
		w.Reset(&buf)
	}
	if _, err := w.Write(body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	c.pool.Put(w)
	return buf.Bytes(), nil
}

// readers are gzip readers to Reset: a new one allocates its inflater's
// tables, which costs more than a small body's decompression.
var readers sync.Pool

func decompress(body []byte, limit int) ([]byte, error) {
	r, _ := readers.Get().(*gzip.Reader)
	var err error
	if r == nil {
		r, err = gzip.NewReader(bytes.NewReader(body))
	} else {
		err = r.Reset(bytes.NewReader(body))
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = r.Close()
		readers.Put(r)
	}()
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, fmt.Errorf("payload: decompresses to more than %d bytes", limit)
	}
	return out, nil
}
