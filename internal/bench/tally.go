package bench

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// tally counts deliveries across the consumers of one measurement: every
// id once, duplicates apart. The delivery that completes the count stops
// the clock and calls stop (which ends the consumers).
type tally struct {
	want int
	stop func()

	mu         sync.Mutex
	seen       map[string]struct{}
	delivered  int
	duplicates int
	end        time.Time
}

func newTally(want int, stop func()) *tally {
	return &tally{want: want, stop: stop, seen: make(map[string]struct{}, want)}
}

func (t *tally) deliver(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.seen[id]; dup {
		t.duplicates++
		return
	}
	t.seen[id] = struct{}{}
	if t.delivered++; t.delivered == t.want {
		t.end = time.Now()
		t.stop()
	}
}

// result returns the counts and when the last task was delivered (zero
// if not all were).
func (t *tally) result() (delivered, duplicates int, end time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.delivered, t.duplicates, t.end
}

// race runs n consumers that start together and returns the start time
// when all have returned. A consumer returns nil when ctx ends (the tally
// stops them that way); its first error cancels the others.
func race(ctx context.Context, n int, consumer func(ctx context.Context, i int) error) (time.Time, error) {
	g, gctx := errgroup.WithContext(ctx)
	start := make(chan struct{})
	var up sync.WaitGroup
	up.Add(n)
	for i := range n {
		g.Go(func() error {
			up.Done()
			select {
			case <-start:
			case <-gctx.Done():
				return nil
			}
			return consumer(gctx, i)
		})
	}
	up.Wait()
	began := time.Now()
	close(start)
	return began, g.Wait()
}

// ignoreDone turns an error caused by ctx ending (a consumer being
// stopped) into nil.
func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
