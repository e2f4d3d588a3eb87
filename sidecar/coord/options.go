package coord

import "github.com/jonboulle/clockwork"

// Option sets a rarely changed setting of NewLeaseKeeper or NewSessions.
type Option func(*settings)

type settings struct{ clock clockwork.Clock }

// WithClock sets the clock that times retries, stamps start times and
// measures trust windows (Trust).
// Default: the wall clock. Tests pass a clockwork.FakeClock.
func WithClock(c clockwork.Clock) Option { return func(s *settings) { s.clock = c } }

func options(opts []Option) settings {
	s := settings{clock: clockwork.NewRealClock()}
	for _, o := range opts {
		o(&s)
	}
	return s
}
