package payload

// Codec is a content-encoding: Compression sends with one, and a
// Marshaler decodes a delivery with the codec its content-encoding names
// (gzip always, and Config.Codecs). Package
// github.com/warrenmq/warren/payload/zstd (a module of its own, for
// klauspost/compress) is zstd.
type Codec interface {
	// Encoding is the content-encoding property's value ("zstd").
	Encoding() string
	Compress(body []byte) ([]byte, error)
	// Decompress returns at most limit bytes; more is an error (a
	// decompression bomb).
	Decompress(body []byte, limit int) ([]byte, error)
}

// gzipCodec is the standard library's gzip at a level.
type gzipCodec struct{ c *Compression }

func (g gzipCodec) Encoding() string                     { return gzipEncoding }
func (g gzipCodec) Compress(body []byte) ([]byte, error) { return g.c.compress(body) }
func (g gzipCodec) Decompress(body []byte, limit int) ([]byte, error) {
	return decompress(body, limit)
}
