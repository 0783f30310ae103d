package outbox

// SetBeforeListen runs f between a relay's look that found nothing and
// its LISTEN; set it before the relay starts and restore it after it
// stopped.
func SetBeforeListen(f func()) (restore func()) {
	testHookBeforeListen = f
	return func() { testHookBeforeListen = nil }
}
