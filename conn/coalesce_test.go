package conn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// gatedConn is a socket whose writes wait for a token on gate (or its write
// deadline), recording what each write carried.
type gatedConn struct {
	net.Conn // nil: only the methods below are used

	gate chan struct{}
	fail error // returned by every write once set

	mu       sync.Mutex
	writes   [][]byte
	deadline chan struct{}
	closed   bool
}

func newGatedConn() *gatedConn {
	return &gatedConn{gate: make(chan struct{}), deadline: make(chan struct{})}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	deadline := g.deadline
	g.mu.Unlock()
	select {
	case <-g.gate:
	case <-deadline:
		return 0, os.ErrDeadlineExceeded
	}
	if g.fail != nil {
		return 0, g.fail
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes = append(g.writes, bytes.Clone(p))
	return len(p), nil
}

func (g *gatedConn) SetWriteDeadline(t time.Time) error {
	g.mu.Lock()
	ch := g.deadline
	g.mu.Unlock()
	time.AfterFunc(time.Until(t), func() { close(ch) })
	return nil
}

func (g *gatedConn) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	return nil
}

func (g *gatedConn) written() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

// writeAsync runs Write on its own goroutine and reports its result.
func writeAsync(c *coalescingConn, p []byte) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := c.Write(p)
		res <- err
	}()
	return res
}

func TestCoalescingConnJoinsWritesMadeWhileOneIsInTheKernel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedConn()
		c := newCoalescingConn(g)
		mustWrite(t, c, "a")
		synctest.Wait() // the flusher is inside the socket write of "a"
		mustWrite(t, c, "b")
		mustWrite(t, c, "c")
		mustWrite(t, c, "d")
		g.gate <- struct{}{}
		g.gate <- struct{}{}
		synctest.Wait()
		got := g.written()
		if len(got) != 2 || string(got[0]) != "a" || string(got[1]) != "bcd" {
			t.Fatalf("socket writes = %q, want [a bcd]", got)
		}
		closeGated(t, c, g)
	})
}

func TestCoalescingConnWritesAtOnceWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedConn()
		c := newCoalescingConn(g)
		for _, s := range []string{"one", "two", "three"} {
			mustWrite(t, c, s)
			g.gate <- struct{}{} // each is written on its own: nothing waits for company
			synctest.Wait()
		}
		if got := g.written(); len(got) != 3 {
			t.Fatalf("socket writes = %q, want three", got)
		}
		closeGated(t, c, g)
	})
}

func TestCoalescingConnBlocksWritersWhileMaxPendingWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedConn()
		c := newCoalescingConn(g)
		mustWrite(t, c, "first")
		synctest.Wait() // flusher holds "first" in the socket
		mustWrite(t, c, string(make([]byte, maxPending)))
		blocked := writeAsync(c, []byte("over"))
		synctest.Wait()
		select {
		case err := <-blocked:
			t.Fatalf("Write returned (%v) with %d bytes waiting; want it to wait for room", err, maxPending)
		default:
		}
		g.gate <- struct{}{} // "first" leaves; the flusher takes the pending bytes
		synctest.Wait()
		if err := <-blocked; err != nil {
			t.Fatal(err)
		}
		g.gate <- struct{}{}
		g.gate <- struct{}{}
		synctest.Wait()
		got := g.written()
		if len(got) != 3 || string(got[2]) != "over" || len(got[1]) != maxPending {
			t.Fatalf("socket writes have sizes %v, want [5 %d 4]", sizes(got), maxPending)
		}
		closeGated(t, c, g)
	})
}

func TestCoalescingConnErrorIsSticky(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedConn()
		g.fail = io.ErrClosedPipe
		c := newCoalescingConn(g)
		mustWrite(t, c, "lost")
		g.gate <- struct{}{}
		synctest.Wait()
		for i := 0; i < 2; i++ {
			if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("Write after a failed socket write = %v, want %v", err, io.ErrClosedPipe)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCoalescingConnCloseSendsWhatWasAccepted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedConn()
		c := newCoalescingConn(g)
		mustWrite(t, c, "close-ok")
		go func() { g.gate <- struct{}{} }()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if got := g.written(); len(got) != 1 || string(got[0]) != "close-ok" {
			t.Fatalf("socket writes = %q, want the accepted frame before close", got)
		}
		if !g.closed {
			t.Fatal("socket not closed")
		}
		if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close = %v, want net.ErrClosed", err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
	})
}

func TestCoalescingConnCloseIsBoundedByAStalledPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGatedConn() // the gate never opens: the peer reads nothing
		c := newCoalescingConn(g)
		mustWrite(t, c, "stuck")
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took != closeFlushTimeout {
			t.Fatalf("Close took %s of fake time, want the flush bound %s", took, closeFlushTimeout)
		}
		if !g.closed {
			t.Fatal("socket not closed")
		}
	})
}

// TestCoalescingConnKeepsEveryWritersOrder: many writers at once over a real
// socket pair; every writer's records arrive whole and in its order.
func TestCoalescingConnKeepsEveryWritersOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		s, _ := ln.Accept()
		accepted <- s
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	defer server.Close()
	c := newCoalescingConn(raw)

	const writers, records = 8, 2000
	// A record is writer id, sequence number and a body whose length varies,
	// so records straddle socket writes.
	var mu sync.Mutex // one record per Write, as amqp091-go's send lock does
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < records; i++ {
				body := bytes.Repeat([]byte{byte(w)}, (i*7)%300)
				rec := binary.BigEndian.AppendUint32(nil, uint32(w))
				rec = binary.BigEndian.AppendUint32(rec, uint32(i))
				rec = binary.BigEndian.AppendUint32(rec, uint32(len(body)))
				mu.Lock()
				_, err := c.Write(append(rec, body...))
				mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		next := make([]uint32, writers)
		hdr := make([]byte, 12)
		for n := 0; n < writers*records; n++ {
			if _, err := io.ReadFull(server, hdr); err != nil {
				readErr <- err
				return
			}
			w, seq, size := binary.BigEndian.Uint32(hdr), binary.BigEndian.Uint32(hdr[4:]), binary.BigEndian.Uint32(hdr[8:])
			if w >= writers || seq != next[w] {
				readErr <- errors.New("record out of order")
				return
			}
			next[w]++
			body := make([]byte, size)
			if _, err := io.ReadFull(server, body); err != nil {
				readErr <- err
				return
			}
			if !bytes.Equal(body, bytes.Repeat([]byte{byte(w)}, int(size))) {
				readErr <- errors.New("record body mixed with another")
				return
			}
		}
		readErr <- nil
	}()
	wg.Wait()
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, c *coalescingConn, s string) {
	t.Helper()
	if n, err := c.Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

// closeGated closes c, opening the gate for whatever is still pending.
func closeGated(t *testing.T, c *coalescingConn, g *gatedConn) {
	t.Helper()
	go func() {
		for {
			select {
			case g.gate <- struct{}{}:
			case <-c.done:
				return
			}
		}
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func sizes(ws [][]byte) []int {
	var out []int
	for _, w := range ws {
		out = append(out, len(w))
	}
	return out
}
