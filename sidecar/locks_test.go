package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/internal/childproc"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/sidecartest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fencedResource is a shared resource guarded by a lock: it counts holders
// inside their critical section at the same time and refuses writes whose
// fencing token is not above the last one it accepted.
type fencedResource struct {
	inside   atomic.Int32
	overlaps atomic.Int32

	mu       sync.Mutex
	last     int64
	accepted int
	refused  int
}

func (r *fencedResource) write(token int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token <= r.last {
		r.refused++
		return false
	}
	r.last = token
	r.accepted++
	return true
}

func (r *fencedResource) enter() {
	if r.inside.Add(1) > 1 {
		r.overlaps.Add(1)
	}
}

func (r *fencedResource) leave() { r.inside.Add(-1) }

// lockSession attaches a session for the process named process to the
// sidecar and returns its id; the session closes when the returned cancel
// is called or the test ends.
func lockSession(t *testing.T, sc *sidecartest.Sidecar, process string) (string, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := sc.Client.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: process}))
	if err != nil || !stream.Receive() {
		t.Fatalf("attach: %v %v", err, stream.Err())
	}
	return stream.Msg().Session, cancel
}

func lock(c *client.Client, name, session string, wait time.Duration) (int64, error) {
	resp, err := c.Locks.Lock(context.Background(), connect.NewRequest(&batonv1.LockRequest{Name: name, Session: session, Wait: durationpb.New(wait)}))
	if err != nil {
		return 0, err
	}
	return resp.Msg.FencingToken, nil
}

func unlock(c *client.Client, name, session string) error {
	_, err := c.Locks.Unlock(context.Background(), connect.NewRequest(&batonv1.UnlockRequest{Name: name, Session: session}))
	return err
}

func codeOf(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return 0
}

// lockWaiters returns how many keys (holder and waiters) lock name has.
func lockWaiters(t *testing.T, cli *clientv3.Client, name string) int {
	t.Helper()
	resp, err := cli.Get(context.Background(), namedlock.PrefixLocks+name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// Workers behind two sidecars, three on each, contend for one lock. No two
// are ever inside the critical section together, tokens rise with every
// holder so the fenced resource accepts every write, and every round gets
// the lock.
func TestLockMutualExclusionAcrossAndWithinSidecars(t *testing.T) {
	t.Parallel()
	a, ns := start(t, sidecar.Config{})
	b := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}})
	var res fencedResource
	const workers, rounds = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		sc := a
		if w%2 == 1 {
			sc = b
		}
		session, _ := lockSession(t, sc, fmt.Sprintf("w%d", w))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				tok, err := lock(sc.Client, "batch", session, 30*time.Second)
				if err != nil {
					errs <- fmt.Errorf("worker %d: lock: %w", w, err)
					return
				}
				res.enter()
				ok := res.write(tok)
				res.leave()
				if !ok {
					errs <- fmt.Errorf("worker %d: token %d refused by the fenced resource", w, tok)
				}
				if err := unlock(sc.Client, "batch", session); err != nil {
					errs <- fmt.Errorf("worker %d: unlock: %w", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := res.overlaps.Load(); n != 0 {
		t.Errorf("%d overlapping holders", n)
	}
	if res.accepted != workers*rounds || res.refused != 0 {
		t.Errorf("accepted %d, refused %d; want %d and 0", res.accepted, res.refused, workers*rounds)
	}
}

// Waiters get the lock in the order they asked for it, and each new holder
// has a higher token.
func TestLockWaitersServedInArrivalOrder(t *testing.T) {
	t.Parallel()
	a, ns := start(t, sidecar.Config{})
	b := sidecartest.StartSidecar(t, endpoint, ns, sidecar.Config{Queues: []string{"tts"}})
	cli := sidecartest.Client(t, endpoint, ns)
	holder, _ := lockSession(t, a, "holder")
	first, err := lock(a.Client, "gpu0", holder, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	type grant struct {
		who   int
		token int64
	}
	grants := make(chan grant, 4)
	sessions := make([]string, 4)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range sessions {
		sc := []*sidecartest.Sidecar{a, b}[i%2]
		sessions[i], _ = lockSession(t, sc, fmt.Sprintf("waiter%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := lock(sc.Client, "gpu0", sessions[i], 30*time.Second)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				grants <- grant{i, 0}
				return
			}
			grants <- grant{i, tok}
			if err := unlock(sc.Client, "gpu0", sessions[i]); err != nil {
				t.Errorf("waiter %d: unlock: %v", i, err)
			}
		}()
		// The next waiter asks only once this one is queued in etcd.
		waitFor(t, 10*time.Second, "waiter queued", func() bool { return lockWaiters(t, cli, "gpu0") == i+2 })
	}
	if err := unlock(a.Client, "gpu0", holder); err != nil {
		t.Fatal(err)
	}
	last := first
	for i := range sessions {
		g := <-grants
		if g.who != i {
			t.Fatalf("grant %d went to waiter %d; want arrival order", i, g.who)
		}
		if g.token <= last {
			t.Fatalf("waiter %d got token %d after %d; tokens must rise", g.who, g.token, last)
		}
		last = g.token
	}
}

// Two workers behind one sidecar exclude each other (etcd's Mutex alone
// would let two holders that share a lease both believe they hold it).
func TestLockTwoWorkersOneSidecar(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{AdminAddr: "127.0.0.1:0"})
	s1, _ := lockSession(t, sc, "one")
	s2, _ := lockSession(t, sc, "two")
	tok1, err := lock(sc.Client, "model-load", s1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sc.Client.Locks.TryLock(context.Background(), connect.NewRequest(&batonv1.TryLockRequest{Name: "model-load", Session: s2}))
	if codeOf(err) != connect.CodeAborted {
		t.Fatalf("TryLock by the second worker: %v; want ABORTED", err)
	}
	_, err = lock(sc.Client, "model-load", s2, 0)
	if codeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("Lock wait 0 by the second worker: %v; want DEADLINE_EXCEEDED", err)
	}
	_, err = lock(sc.Client, "model-load", s2, 300*time.Millisecond)
	if codeOf(err) != connect.CodeDeadlineExceeded || !strings.Contains(err.Error(), "not obtained within") {
		t.Fatalf("Lock wait 300ms by the second worker: %v; want DEADLINE_EXCEEDED", err)
	}
	// The same session asking again is refused: locks are not reentrant.
	if _, err = lock(sc.Client, "model-load", s1, time.Second); codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("second Lock by the holder: %v; want FAILED_PRECONDITION", err)
	}
	got := make(chan int64, 1)
	go func() {
		tok, err := lock(sc.Client, "model-load", s2, 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- tok
	}()
	if err := unlock(sc.Client, "model-load", s1); err != nil {
		t.Fatal(err)
	}
	if tok2 := <-got; tok2 <= tok1 {
		t.Fatalf("second worker's token %d is not above %d", tok2, tok1)
	}
	if err := unlock(sc.Client, "model-load", s1); codeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("unlock of a released lock: %v; want FAILED_PRECONDITION", err)
	}
	// Every wait above is counted by outcome: the first worker's Lock and
	// the second's last one acquired; TryLock and Lock wait 0 found it busy;
	// the 300ms wait timed out; the reentrant Lock was an error.
	fams := scrape(t, sc)
	for outcome, want := range map[string]float64{"acquired": 2, "busy": 2, "timeout": 1, "error": 1} {
		if got, _ := value(fams, "baton_lock_wait_seconds", "outcome", outcome); got != want {
			t.Errorf("baton_lock_wait_seconds{outcome=%q} count = %v, want %v", outcome, got, want)
		}
	}
}

// A lock held under a session is released when the session's Attach stream
// closes; a waiter whose own session closes stops waiting with an error and
// leaves no key behind to block the waiters after it.
func TestLockSessionCloseReleasesAndEndsWaits(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	holder, closeHolder := lockSession(t, sc, "holder")
	waiter, closeWaiter := lockSession(t, sc, "waiter")
	third, _ := lockSession(t, sc, "third")
	tok1, err := lock(sc.Client, "L", holder, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { _, err := lock(sc.Client, "L", waiter, time.Minute); waitErr <- err }()
	waitFor(t, 10*time.Second, "waiter queued", func() bool { return lockWaiters(t, cli, "L") == 2 })
	thirdTok := make(chan int64, 1)
	go func() {
		tok, err := lock(sc.Client, "L", third, time.Minute)
		if err != nil {
			t.Error(err)
		}
		thirdTok <- tok
	}()
	waitFor(t, 10*time.Second, "third queued", func() bool { return lockWaiters(t, cli, "L") == 3 })

	closeWaiter()
	select {
	case err := <-waitErr:
		if codeOf(err) != connect.CodeFailedPrecondition && codeOf(err) != connect.CodeCanceled {
			t.Fatalf("waiter whose session closed: %v; want FAILED_PRECONDITION", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("waiter whose session closed still waits")
	}
	waitFor(t, 10*time.Second, "the closed waiter's key is gone", func() bool { return lockWaiters(t, cli, "L") == 2 })

	closeHolder()
	select {
	case tok := <-thirdTok:
		if tok <= tok1 {
			t.Fatalf("token %d not above %d", tok, tok1)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the lock was not handed on when its holder's session closed")
	}
}

func TestLockBadRequests(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	s, _ := lockSession(t, sc, "w")
	for _, tc := range []struct {
		req   *batonv1.LockRequest
		code  connect.Code
		field string
	}{
		{&batonv1.LockRequest{Name: "ok"}, connect.CodeInvalidArgument, "session:"},
		{&batonv1.LockRequest{Name: "", Session: s}, connect.CodeInvalidArgument, "name:"},
		{&batonv1.LockRequest{Name: "a/b", Session: s}, connect.CodeInvalidArgument, "name:"},
		{&batonv1.LockRequest{Name: strings.Repeat("x", 129), Session: s}, connect.CodeInvalidArgument, "name:"},
		{&batonv1.LockRequest{Name: "ok", Session: s, Wait: durationpb.New(-time.Second)}, connect.CodeInvalidArgument, "wait:"},
		{&batonv1.LockRequest{Name: "ok", Session: "s-nope"}, connect.CodeFailedPrecondition, "session"},
	} {
		_, err := sc.Client.Locks.Lock(context.Background(), connect.NewRequest(tc.req))
		if codeOf(err) != tc.code || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Lock(%v) = %v; want %v naming %q", tc.req, err, tc.code, tc.field)
		}
	}
}

// runLockerRole is a worker process that attaches to the sidecar at
// BATON_TEST_SOCKET, takes lock BATON_TEST_LOCK, prints "LOCKED <token>"
// and waits to be killed.
func runLockerRole() {
	c := client.New(os.Getenv("BATON_TEST_SOCKET"))
	stream, err := c.Tasks.Attach(context.Background(), connect.NewRequest(&batonv1.AttachRequest{Process: "locker"}))
	if err != nil || !stream.Receive() {
		fmt.Println("ERROR attach", err, stream.Err())
		os.Exit(1)
	}
	tok, err := lock(c, os.Getenv("BATON_TEST_LOCK"), stream.Msg().Session, 30*time.Second)
	if err != nil {
		fmt.Println("ERROR lock", err)
		os.Exit(1)
	}
	fmt.Printf("LOCKED %d\n", tok)
	for stream.Receive() {
	}
	select {}
}

// runLockSidecarRole is a sidecar process whose own worker session takes
// lock BATON_TEST_LOCK; it prints "LOCKED <token>" and waits to be killed,
// so that only the lock lease expiring releases the lock.
func runLockSidecarRole() {
	startRoleSidecar()
	runLockerRole()
}

// startLocker runs a role process and waits for its LOCKED line.
func startLocker(t *testing.T, env ...string) (*childproc.Process, int64) {
	t.Helper()
	p, line := startProc(t, env...)
	var tok int64
	if _, err := fmt.Sscanf(line, "LOCKED %d", &tok); err != nil {
		t.Fatalf("locker process said %q", line)
	}
	return p, tok
}

// A worker process killed with SIGKILL while holding a lock releases it at
// once: the kernel closes its Attach stream and the sidecar revokes the
// session's lock lease.
func TestLockReleasedWhenHolderIsKilled(t *testing.T) {
	t.Parallel()
	sc, _ := start(t, sidecar.Config{})
	proc, tok := startLocker(t, "BATON_TEST_ROLE=locker", "BATON_TEST_SOCKET="+sc.Socket, "BATON_TEST_LOCK=batch")
	s, _ := lockSession(t, sc, "next")
	if _, err := lock(sc.Client, "batch", s, 0); codeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("lock held by the locker process: %v; want DEADLINE_EXCEEDED", err)
	}
	proc.Kill()
	killed := time.Now()
	tok2, err := lock(sc.Client, "batch", s, 5*time.Second)
	if err != nil {
		t.Fatalf("lock after the holder's SIGKILL: %v", err)
	}
	t.Logf("lock taken over %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	if tok2 <= tok {
		t.Fatalf("token %d not above the killed holder's %d", tok2, tok)
	}
}

// A sidecar killed with SIGKILL while its worker holds a lock: nothing
// revokes the lock lease, so etcd expires it after the TTL and the waiter
// behind another sidecar gets the lock.
func TestLockReleasedWhenSidecarLeaseExpires(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	const ttl = 2 * time.Second
	proc, tok := startLocker(t, "BATON_TEST_ROLE=lock-sidecar", "BATON_TEST_ENDPOINT="+endpoint, "BATON_TEST_NS="+ns,
		"BATON_TEST_SOCKET="+sidecartest.SocketPath(t), "BATON_TEST_TTL="+ttl.String(), "BATON_TEST_LOCK=batch")
	s, _ := lockSession(t, sc, "survivor")
	got := make(chan error, 1)
	var tok2 int64
	go func() {
		var err error
		tok2, err = lock(sc.Client, "batch", s, time.Minute)
		got <- err
	}()
	proc.Kill()
	killed := time.Now()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("lock of a killed sidecar not released after its TTL")
	}
	t.Logf("lock taken over %v after the sidecar's SIGKILL (ttl %v)", time.Since(killed).Round(time.Millisecond), ttl)
	if tok2 <= tok {
		t.Fatalf("token %d not above the dead holder's %d", tok2, tok)
	}
}

// `baton locks list` shows the holder with its token and the waiters.
func TestLocksListCLI(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{WorkerID: "gpu-3"})
	cli := sidecartest.Client(t, endpoint, ns)
	holder, _ := lockSession(t, sc, "synth-a")
	waiter, _ := lockSession(t, sc, "synth-b")
	tok, err := lock(sc.Client, "batch", holder, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	waitDone := make(chan error, 1)
	go func() { _, err := lock(sc.Client, "batch", waiter, time.Minute); waitDone <- err }()
	waitFor(t, 10*time.Second, "waiter queued", func() bool { return lockWaiters(t, cli, "batch") == 2 })

	var locks []namedlock.LockInfo
	opsCLIJSON(t, ns, &locks, "locks", "list")
	if len(locks) != 1 || locks[0].Name != "batch" || locks[0].Holder.Token != tok || len(locks[0].Waiters) != 1 {
		t.Fatalf("locks list = %+v", locks)
	}
	if o := locks[0].Holder.Owner; o.WorkerID != "gpu-3" || o.Process != "synth-a" || o.Session != holder {
		t.Fatalf("holder = %+v", o)
	}
	if w := locks[0].Waiters[0]; w.Owner.Process != "synth-b" || w.Token <= tok {
		t.Fatalf("waiter = %+v", w)
	}
	out, _, code := opsCLI(t, ns, "locks", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "LOCK TOKEN WORKER PROCESS SESSION WAITERS" ||
		strings.Join(strings.Fields(lines[1]), " ") != fmt.Sprintf("batch %d gpu-3 synth-a %s 1", tok, holder) {
		t.Fatalf("locks list table:\n%s", out)
	}
	if err := unlock(sc.Client, "batch", holder); err != nil {
		t.Fatal(err)
	}
	if err := <-waitDone; err != nil {
		t.Fatal(err)
	}
}

// Baton's locks use etcd's concurrency.Mutex keys: a Go program holding a
// concurrency.Mutex on <namespace>/locks/<name> excludes Baton's workers,
// and the worker gets the lock once the program lets go.
func TestLockInteropWithEtcdMutex(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	es, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	m := concurrency.NewMutex(es, namedlock.PrefixLocks+"batch")
	if err := m.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, _ := lockSession(t, sc, "w")
	if _, err := lock(sc.Client, "batch", s, 0); codeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("lock held by a concurrency.Mutex: %v; want DEADLINE_EXCEEDED", err)
	}
	got := make(chan error, 1)
	go func() { _, err := lock(sc.Client, "batch", s, 30*time.Second); got <- err }()
	waitFor(t, 10*time.Second, "worker queued", func() bool { return lockWaiters(t, cli, "batch") == 2 })
	if err := m.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// Concurrent first Locks of one session share one lock lease (a second
// lease would replace the first and let its locks expire).
func TestLockConcurrentFirstLocksShareALease(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	s, _ := lockSession(t, sc, "w")
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := lock(sc.Client, fmt.Sprintf("gpu%d", i), s, 5*time.Second); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	locks, err := namedlock.ListLocks(context.Background(), cli.KV)
	if err != nil {
		t.Fatal(err)
	}
	owners, err := cli.Get(context.Background(), namedlock.PrefixLockOwners, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 5 || owners.Count != 1 {
		t.Fatalf("%d locks under %d leases; want 5 under 1", len(locks), owners.Count)
	}
}
