package payload

import (
	"bytes"
	"testing"
)

// go test -bench . ./payload: the steps' CPU alone, without the broker.
func BenchmarkGzip1KiB(b *testing.B) {
	c := &Compression{}
	c.setDefaults()
	body := bytes.Repeat([]byte(`{"sku":"A-1","qty":3},`), 47)[:1024]
	b.ReportAllocs()
	for b.Loop() {
		z, err := c.compress(body)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := decompress(z, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
