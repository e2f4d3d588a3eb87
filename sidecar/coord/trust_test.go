package coord

import (
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTrustWindow: a lease is trusted for two thirds of its TTL after its
// last confirmation on the clock, and not a nanosecond longer; a keepalive
// answer read by Follow confirms it at the clock's time, an answer saying
// the lease is gone does not, and an earlier confirmation changes nothing.
func TestTrustWindow(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{
		time.Second: time.Second, 2 * time.Second: 2*time.Second/3 + time.Second, 3 * time.Second: 2 * time.Second,
		10 * time.Second: 20 * time.Second / 3, time.Minute: 40 * time.Second,
	} {
		if got := TrustWindow(ttl); got != want {
			t.Errorf("TrustWindow(%v) = %v, want %v", ttl, got, want)
		}
	}
	clock := clockwork.NewFakeClock()
	granted := clock.Now()
	tr := NewTrust(9*time.Second, granted, WithClock(clock))
	if tr.Window() != 6*time.Second {
		t.Fatalf("window %v, want 6s", tr.Window())
	}
	clock.Advance(6 * time.Second)
	if !tr.Trusted() {
		t.Fatal("not trusted at the end of the window")
	}
	clock.Advance(time.Nanosecond)
	if tr.Trusted() || tr.Age() != 6*time.Second+time.Nanosecond {
		t.Fatalf("trusted %v at age %v, past the window", tr.Trusted(), tr.Age())
	}

	ch := make(chan *clientv3.LeaseKeepAliveResponse, 2)
	ch <- &clientv3.LeaseKeepAliveResponse{TTL: 9}
	ch <- &clientv3.LeaseKeepAliveResponse{TTL: 0}
	close(ch)
	tr.Follow(ch)
	if !tr.Trusted() || !tr.LastConfirmed().Equal(clock.Now()) || tr.KeepaliveAnswers() != 1 {
		t.Fatalf("after a keepalive answer: trusted %v, confirmed %v (now %v), %d answers", tr.Trusted(), tr.LastConfirmed(), clock.Now(), tr.KeepaliveAnswers())
	}
	tr.Confirm(granted)
	if !tr.LastConfirmed().Equal(clock.Now()) {
		t.Fatalf("an earlier confirmation moved the last one back to %v", tr.LastConfirmed())
	}
	clock.Advance(6*time.Second + time.Nanosecond)
	if tr.Trusted() {
		t.Fatal("trusted past the window after the keepalive answer")
	}
}
