package faultproxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/faultproxy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// roundTrip writes line and reads one line back within d.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string, d time.Duration) (string, error) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	return readLine(c, r, d)
}

func readLine(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	if err := c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return string(bytes.TrimSuffix([]byte(s), []byte("\n"))), err
}

func TestLinkFaults(t *testing.T) {
	a, b := echoServer(t), echoServer(t)
	link, err := faultproxy.NewLink([]string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	eps := link.Endpoints()
	if len(eps) != 2 || eps[0] == eps[1] || eps[0] == a || eps[1] == b {
		t.Fatalf("endpoints %v for members %s, %s: want one proxy address per member", eps, a, b)
	}
	c, err := net.Dial("tcp", eps[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(t, c, r, "first", 30*time.Second); err != nil || got != "first" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	// A partition holds what was sent, and the connection stays open...
	link.Partition()
	if got, err := roundTrip(t, c, r, "held", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("during the partition the echo came back: %q, %v", got, err)
	}
	// ...until the heal delivers it.
	link.Heal()
	if got, err := readLine(c, r, 30*time.Second); err != nil || got != "held" {
		t.Fatalf("after the heal: %q, %v; want the held line", got, err)
	}

	// Answers held back by PauseRx arrive after UnpauseRx.
	link.PauseRx()
	if got, err := roundTrip(t, c, r, "answer", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("with answers paused the echo came back: %q, %v", got, err)
	}
	link.UnpauseRx()
	if got, err := readLine(c, r, 30*time.Second); err != nil || got != "answer" {
		t.Fatalf("after UnpauseRx: %q, %v", got, err)
	}

	// ModifyTx rewrites what goes towards the member.
	link.ModifyTx(bytes.ToUpper)
	if got, err := roundTrip(t, c, r, "shout", 30*time.Second); err != nil || got != "SHOUT" {
		t.Fatalf("with ModifyTx: %q, %v; want SHOUT", got, err)
	}
	link.UnmodifyTx()
	if got, err := roundTrip(t, c, r, "quiet", 30*time.Second); err != nil || got != "quiet" {
		t.Fatalf("after UnmodifyTx: %q, %v", got, err)
	}

	// Delay slows traffic but loses nothing.
	link.Delay(10*time.Millisecond, 5*time.Millisecond)
	if got, err := roundTrip(t, c, r, "slow", 30*time.Second); err != nil || got != "slow" {
		t.Fatalf("with Delay: %q, %v", got, err)
	}
	link.Undelay()
}
