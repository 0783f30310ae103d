package conn

import (
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestDispatcherOrderPanicAndSlowCallbacks(t *testing.T) {
	d := newDispatcher(slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	var got []string
	release := make(chan struct{})
	d.add("a", func(c StateChange) {
		mu.Lock()
		got = append(got, "a:"+c.To.String())
		mu.Unlock()
	})
	d.add("panics", func(StateChange) { panic("boom") })
	d.add("slow", func(c StateChange) {
		if c.To == StateConnecting {
			<-release
		}
	})
	d.add("b", func(c StateChange) {
		mu.Lock()
		got = append(got, "b:"+c.To.String())
		mu.Unlock()
	})
	// emit never blocks, even while a callback does.
	start := time.Now()
	for _, s := range []State{StateConnecting, StateConnected, StateReconnecting} {
		d.emit(StateChange{To: s})
	}
	if time.Since(start) > time.Second {
		t.Fatal("emit blocked behind a slow callback")
	}
	close(release)
	d.close(5 * time.Second)
	want := []string{"a:connecting", "b:connecting", "a:connected", "b:connected", "a:reconnecting", "b:reconnecting"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if d.remove("a") != true || d.remove("a") != false {
		t.Fatal("remove")
	}
}
