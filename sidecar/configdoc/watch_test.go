package configdoc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// pending reports whether at least n timers wait on the clock, without
// blocking.
func pending(c *clockwork.FakeClock, n int) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return c.BlockUntilContext(ctx, n) == nil
}

// TestWatchRereadBacksOff: when its etcd watch keeps ending (here: a
// closed watcher, whose every watch ends at once), Watch reads the
// document again 50ms later on the clock, twice as long after each
// further end, at most every 5s, and delivers what changed meanwhile;
// no read comes before its time.
func TestWatchRereadBacksOff(t *testing.T) {
	cli := sidecartest.Client(t, endpoint, sidecartest.Namespace(t))
	w := clientv3.NewWatcher(cli)
	w.Close()
	clock := clockwork.NewFakeClock()
	s := configdoc.NewStore(cli.KV, w, configdoc.Config{Clock: clock})
	set := func(seq int) {
		t.Helper()
		if _, err := s.Set(context.Background(), "tts", fmt.Appendf(nil, `{"seq": %d}`, seq)); err != nil {
			t.Fatal(err)
		}
	}
	set(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan configdoc.Document, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(ctx, "tts", 0, func(d configdoc.Document) error { got <- d; return nil })
	}()
	defer func() {
		cancel()
		<-done
	}()
	last := int64(0)
	receive := func(what string) {
		t.Helper()
		select {
		case d := <-got:
			if d.Revision <= last {
				t.Fatalf("%s: revision %d after %d", what, d.Revision, last)
			}
			last = d.Revision
		case <-ctx.Done():
			t.Fatalf("%s: nothing delivered", what)
		}
	}
	receive("the current version")
	backoff := 50 * time.Millisecond
	for seq := 1; seq <= 9; seq++ {
		set(seq)
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal("Watch does not wait on the clock after its watch ended")
		}
		clock.Advance(backoff - time.Millisecond)
		if !pending(clock, 1) {
			t.Fatalf("read %d came before its %v", seq, backoff)
		}
		select {
		case d := <-got:
			t.Fatalf("version %d delivered before the %v backoff passed", d.Revision, backoff)
		default:
		}
		clock.Advance(time.Millisecond)
		receive(fmt.Sprintf("version %d after %v", seq, backoff))
		backoff = min(2*backoff, 5*time.Second)
	}
}
