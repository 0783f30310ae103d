package delay

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A delay enters the levels at its highest binary digit of seconds, so a
// vhost needs only the levels below: LevelsFor of its longest delay.
func TestLevelsFor(t *testing.T) {
	for _, c := range []struct {
		d      time.Duration
		levels int
	}{
		{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {3 * time.Second, 2},
		{4 * time.Second, 3}, {10 * time.Minute, 10}, {time.Hour, 12}, {time.Duration(1<<ScheduleLevels-1) * time.Second, ScheduleLevels},
		{100 * 365 * 24 * time.Hour, ScheduleLevels},
	} {
		if got := LevelsFor(c.d); got != c.levels {
			t.Errorf("LevelsFor(%v) = %d, want %d", c.d, got, c.levels)
		}
		if c.levels < ScheduleLevels || c.d < time.Duration(1<<ScheduleLevels)*time.Second {
			x, key, err := Schedule(&amqp.Publishing{}, c.d, ScheduleDestination("", "q", false))
			if err != nil {
				t.Fatalf("Schedule(%v): %v", c.d, err)
			}
			if x != scheduleExchange(c.levels-1) {
				t.Errorf("Schedule(%v) enters at %s, want level %d", c.d, x, c.levels-1)
			}
			if _, q, ok := ScheduledFrom(x, key, nil); !ok || q != "q" {
				t.Errorf("ScheduledFrom(%s, %s) = %q, %v", x, key, q, ok)
			}
		}
	}
	if n := len(ScheduleTopology(2).Queues); n != 4 {
		t.Errorf("2 levels: %d queues, want 4 (2 levels, due, unroutable)", n)
	}
	if n := len(ScheduleTopology(99).Queues); n != ScheduleLevels+2 {
		t.Errorf("levels clamp: %d queues", n)
	}
}

func TestIsLevelExchange(t *testing.T) {
	for k := range ScheduleLevels {
		if !isLevelExchange(scheduleExchange(k)) {
			t.Errorf("level %d not recognised", k)
		}
	}
	for _, x := range []string{scheduleExchange(ScheduleLevels), "warren.delay.1", "warren.delay.001", "warren.delay.0a", "warren.delay.-1", "", "orders", ScheduleDeliverExchange} {
		if isLevelExchange(x) {
			t.Errorf("%q taken for a level", x)
		}
	}
}
