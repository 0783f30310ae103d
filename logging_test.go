package warren_test

import (
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/warrenmq/warren"
)

func TestWatermillLoggerAdapter(t *testing.T) {
	wl := watermill.NewCaptureLogger()
	l := warren.WatermillLogger(wl).With("conn", "svc")
	l.Info("connected", "generation", 3)
	l.Warn("attempt failed", "error", errors.New("refused"))
	l.Error("gave up", "error", errors.New("boom"))
	l.Debug("detail")
	logs := wl.Captured()
	if len(logs[watermill.InfoLogLevel]) != 2 || len(logs[watermill.ErrorLogLevel]) != 1 || len(logs[watermill.DebugLogLevel]) != 1 {
		t.Fatalf("captured %v", logs)
	}
	info := logs[watermill.InfoLogLevel][0]
	if info.Msg != "connected" || info.Fields["conn"] != "svc" || info.Fields["generation"] != int64(3) {
		t.Fatalf("info entry %+v", info)
	}
	warn := logs[watermill.InfoLogLevel][1]
	if warn.Fields["level"] != "WARN" || warn.Fields["error"] != "refused" {
		t.Fatalf("warn entry %+v", warn)
	}
	if e := logs[watermill.ErrorLogLevel][0]; e.Err == nil || e.Err.Error() != "boom" {
		t.Fatalf("error entry %+v", e)
	}
}
