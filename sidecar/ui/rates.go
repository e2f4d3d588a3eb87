package ui

import (
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
)

// rateWindow is how far back a batch's throughput looks.
const rateWindow = time.Minute

// rates keeps, for each batch, its finished count sampled about once a
// second over the last rateWindow, for throughput and ETA. No I/O; time is
// passed in. Safe for concurrent use.
type rates struct {
	mu      sync.Mutex
	samples map[string][]rateSample // written by sample
}

type rateSample struct {
	at       time.Time
	finished int64
}

func newRates() *rates { return &rates{samples: map[string][]rateSample{}} }

// sample records the batches' finished counts at now and forgets batches
// that are gone.
func (r *rates) sample(now time.Time, batches map[string]workqueue.Counts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.samples {
		if _, ok := batches[name]; !ok {
			delete(r.samples, name)
		}
	}
	for name, c := range batches {
		s := r.samples[name]
		i := 0
		for i < len(s) && now.Sub(s[i].at) > rateWindow {
			i++
		}
		s = append(s[i:], rateSample{at: now, finished: c.Finished()})
		r.samples[name] = s
	}
}

// rate returns the batch's tasks finished per second over the window and
// the seconds left at that rate for remaining tasks (0 when unknown: too
// few samples, or nothing finished lately).
func (r *rates) rate(name string, remaining int64) (perSecond float64, etaSeconds float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.samples[name]
	if len(s) < 2 {
		return 0, 0
	}
	first, last := s[0], s[len(s)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 || last.finished <= first.finished {
		return 0, 0
	}
	perSecond = float64(last.finished-first.finished) / dt
	if remaining > 0 {
		etaSeconds = float64(remaining) / perSecond
	}
	return perSecond, etaSeconds
}
