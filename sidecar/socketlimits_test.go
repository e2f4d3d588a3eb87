package sidecar_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/server"
)

// closedWithin reports whether the server closes c within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// Regression (hardening issue, item 3): no body read deadline, no idle
// timeout and no connection cap let a local process make the sidecar hold
// hundreds of MB of half-sent bodies and thousands of idle connections.
func TestSocketLimits(t *testing.T) {
	// Not parallel: a 1 MiB write must finish within the 500ms read
	// timeout in real time, which a loaded machine may not allow beside
	// other tests.
	sc, _ := start(t, sidecar.Config{
		MaxConnections: 4,
		SocketTimeouts: server.Timeouts{Read: 500 * time.Millisecond, Idle: 500 * time.Millisecond},
	})
	dial := func() net.Conn {
		c, err := net.Dial("unix", sc.Socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// A body that stalls after 1 MiB of 4 is cut off by the read timeout.
	stalled := dial()
	fmt.Fprintf(stalled, "POST /baton.v1.TaskService/Submit HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", 4<<20)
	if _, err := stalled.Write([]byte(strings.Repeat(" ", 1<<20))); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(stalled, 10*time.Second) {
		t.Fatal("a stalled request body was held past the read timeout")
	}

	// A connection idle after its call is closed after the idle timeout.
	idle := dial()
	fmt.Fprint(idle, "POST /baton.v1.TaskService/Next HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	if _, err := bufio.NewReader(idle).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if !closedWithin(idle, 10*time.Second) {
		t.Fatal("an idle connection was held past the idle timeout")
	}

	// At most 4 connections: the fifth is closed at once.
	for range 4 {
		c := dial()
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == nil || !err.(net.Error).Timeout() {
			t.Fatalf("a connection within the limit was closed: %v", err)
		}
	}
	if !closedWithin(dial(), 5*time.Second) {
		t.Fatal("a fifth connection was accepted with 4 open and a limit of 4")
	}
}
