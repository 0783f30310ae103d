package bench

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
)

func BenchmarkScratchRestore(b *testing.B) {
	const n = 10000
	url, remove := vhost(b)
	defer remove()
	c := openWarrenAt(b, url)
	ctx := context.Background()
	defer c.Close(ctx)
	ops, err := broker.NewOps(c, broker.OpsConfig{Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer ops.Close(ctx)
	t, consumers := scaleTopology(n, ignore)
	if err := ops.Apply(ctx, t); err != nil {
		b.Fatal(err)
	}
	if _, err := ops.ConsumeAll(ctx, consumers); err != nil {
		b.Fatal(err)
	}
	reports := make(chan broker.RestoreReport, 1)
	ops.Registry().OnRestored(func(r broker.RestoreReport) { reports <- r })
	f, _ := os.Create("/tmp/ig/restore3.cpu")
	defer f.Close()
	_ = pprof.StartCPUProfile(f)
	for i := range 9 {
		var rep broker.RestoreReport
		wall, cpu := measure(func() {
			if err := c.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
			rep = <-reports
		})
		fmt.Printf("restore %d: %v wall, %v cpu, report %v\n", i, wall, cpu, rep.Duration)
	}
	pprof.StopCPUProfile()
}
