package childproc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/childproc"
	"go.uber.org/goleak"
)

// roleEnv makes the re-run test binary act out a role instead of testing.
const roleEnv = "CHILDPROC_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	goleak.VerifyTestMain(m)
}

// runRole is the child's side of the tests.
func runRole(role string) int {
	switch role {
	case "serve": // a log line, ready, then serve until SIGTERM
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "serve: starting")
		fmt.Println("READY")
		<-term
		fmt.Println("bye")
		return 0
	case "fail": // exits before it is ready
		fmt.Fprintln(os.Stderr, "fail: boom")
		return 2
	case "stubborn": // ready, then deaf to SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("READY")
		select {}
	case "silent": // never ready
		select {}
	case "stdin": // exits when its stdin ends, deaf to SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("READY")
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Println("stdin closed")
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown role", role)
	return 1
}

// start runs the test binary in role; the test kills it at its end.
func start(t *testing.T, role string, cfg childproc.Config) *childproc.Process {
	t.Helper()
	cfg.Exe = childproc.Exe{Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: []string{roleEnv + "=" + role}}
	if cfg.Ready == nil {
		cfg.Ready = func(l string) bool { return l == "READY" }
	}
	p, err := childproc.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

// lines collects a stream's lines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (c *lines) add(l string) { c.mu.Lock(); c.l = append(c.l, l); c.mu.Unlock() }
func (c *lines) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.l)
}

func TestReadyOutputAndStop(t *testing.T) {
	var out lines
	var errOut strings.Builder
	afterExit := make(chan struct{})
	p := start(t, "serve", childproc.Config{Name: "server", OnStdout: out.add, StderrTo: &errOut, AfterExit: func() { close(afterExit) }})
	if err := p.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("exited after its ready line")
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Fatalf("stop: %v", err)
	}
	select {
	case <-afterExit:
	default:
		t.Fatal("AfterExit had not run when Stop returned")
	}
	if got := out.get(); !slices.Equal(got, []string{"READY", "bye"}) {
		t.Errorf("stdout lines %q, want READY, bye", got)
	}
	if errOut.String() != "serve: starting\n" || p.Tail() != "serve: starting" {
		t.Errorf("stderr %q, tail %q; want the one log line", errOut.String(), p.Tail())
	}
	if st := p.State(); st == nil || st.ExitCode() != 0 {
		t.Errorf("state %v, want exit 0", st)
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

func TestExitBeforeReady(t *testing.T) {
	p := start(t, "fail", childproc.Config{Name: "failer"})
	err := p.WaitReady(t.Context())
	if err == nil {
		t.Fatal("ready, though it exited without its ready line")
	}
	for _, want := range []string{"failer exited before it was ready", "exit status 2", "fail: boom"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("wait: %v, want exit status 2", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	p := start(t, "stubborn", childproc.Config{Name: "stubborn"})
	if err := p.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := p.Stop(100 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stubborn did not exit within 100ms of SIGTERM") {
		t.Fatalf("stop: %v, want that it had to be killed", err)
	}
	st := p.State()
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("state %v, want killed by SIGKILL", st)
	}
}

func TestWaitReadyEndsWithCtx(t *testing.T) {
	p := start(t, "silent", childproc.Config{Name: "silent"})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.WaitReady(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait ready: %v, want context.Canceled", err)
	}
	if p.Exited() {
		t.Fatal("the child exited when WaitReady gave up; its owner ends it")
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("not reaped after Kill")
	}
	if err := p.Signal(syscall.SIGCONT); err == nil {
		t.Fatal("signal to a reaped child succeeded")
	}
}

// Stop closes the child's stdin first: a child that waits for its end
// (as `baton bench-etcd` does) exits by itself.
func TestStopClosesStdin(t *testing.T) {
	var out lines
	p := start(t, "stdin", childproc.Config{Stdin: true, OnStdout: out.add})
	if err := p.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if got := out.get(); !slices.Contains(got, "stdin closed") {
		t.Fatalf("stdout %q: the child never saw its stdin end", got)
	}
}

func TestStartNeedsPath(t *testing.T) {
	if _, err := childproc.Start(childproc.Config{}); err == nil || !strings.Contains(err.Error(), "Exe.Path") {
		t.Fatalf("start without a path: %v", err)
	}
}
