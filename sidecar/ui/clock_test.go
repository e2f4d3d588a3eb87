package ui_test

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar/ui"
	"github.com/jonboulle/clockwork"
)

// TestUpdatesFollowTheClock runs the page on a fake clock with an hour
// between flushes: a change reaches the stream only when the clock is
// advanced past a flush, and the keep-alive comment only when it is
// advanced past 15 seconds. On the wall clock neither would arrive within
// the test.
func TestUpdatesFollowTheClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	p := newPage(t, func(c *ui.Config) { c.Clock, c.FlushInterval = clock, time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, r := stream(t, ctx, p)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	lines := readLines(r)
	deadline := time.After(20 * time.Second)

	// The stream's handler starts its ping ticker after sending hello;
	// advance until a ping arrives.
	waitFor(t, lines, deadline, func() { clock.Advance(15 * time.Second) }, func(l string) bool { return l == ": ping" })

	// A config change is marked by the page's watch at a moment the test
	// does not see, so change and advance by a flush until it arrives.
	seed := 0
	waitFor(t, lines, deadline, func() {
		seed++
		if _, err := p.docs.Set(ctx, "global", []byte(fmt.Sprintf(`{"seed":%d}`, seed))); err != nil {
			t.Error(err)
		}
		clock.Advance(time.Hour)
	}, func(l string) bool { return strings.HasPrefix(l, "data: ") && strings.Contains(l, `"config:global"`) })
}

// readLines sends the stream's lines, without their newline, until it ends.
func readLines(r *bufio.Reader) <-chan string {
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return // the stream ended with the test
			}
			lines <- strings.TrimRight(l, "\n")
		}
	}()
	return lines
}

// waitFor calls step, then reads lines for up to a second until one
// matches, and repeats until deadline.
func waitFor(t *testing.T, lines <-chan string, deadline <-chan time.Time, step func(), match func(string) bool) {
	t.Helper()
	for {
		step()
		wait := time.After(time.Second)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("the stream ended")
				}
				if match(l) {
					return
				}
			case <-wait:
				break read
			case <-deadline:
				t.Fatal("the awaited line did not arrive within 20s")
			}
		}
	}
}
