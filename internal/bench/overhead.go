package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/types/known/durationpb"
)

// warmup is how many operations the overhead, depth and dispatch
// measurements do before they start timing (connections, first window
// loads, lazily built state).
const warmup = 10

// overhead measures what the hop through the sidecar's socket costs: the
// same operations, one at a time, through a sidecar process's socket and
// directly on an etcd client in this process. The claim goes through the
// same workqueue code either way (a Dispatcher in this process for the
// direct side), so the difference is the socket, the RPC and the second
// process. The lock compares the socket's LockService with
// concurrency.Mutex on a session of the bench's own. Socket and direct
// samples alternate, so that drift in the machine's load hits both alike.
func (r *runner) overhead(ctx context.Context) ([]Overhead, error) {
	const name = "overhead"
	defer r.cleanup(context.Background(), name)
	n := r.cfg.Samples

	ps, err := startSidecars(ctx, r.cfg.Sidecar, r.cfg.Etcd, r.ns(name+"/socket"), r.dir, 1)
	if err != nil {
		return nil, err
	}
	defer func() { _ = stopSidecars(ps) }()
	cs := clients(ps, 1)
	defer closeClients(cs)
	c := cs[0]
	if err := submit(ctx, cs, 0, warmup+n, taskID); err != nil {
		return nil, err
	}
	sess, err := attach(ctx, cs)
	if err != nil {
		return nil, err
	}
	defer sess.close()

	var failed atomic.Int64
	clis, err := r.clients(name+"/direct", 1, &failed)
	if err != nil {
		return nil, err
	}
	defer closeEtcd(clis)
	lib, err := startLibrary(ctx, clis[0])
	if err != nil {
		return nil, err
	}
	defer lib.stop()
	if _, err := lib.store.Submit(ctx, specs(warmup+n)); err != nil {
		return nil, err
	}

	var sClaim, sDone, dClaim, dDone latencies
	for i := range warmup + n {
		if i == warmup {
			sClaim, sDone, dClaim, dDone = nil, nil, nil, nil
		}
		t0 := time.Now()
		task, err := next(ctx, c, sess.ids[0], 5*time.Second)
		if err != nil {
			return nil, err
		}
		if task == nil {
			return nil, errors.New("socket: no task within 5s")
		}
		t1 := time.Now()
		if err := complete(ctx, c, task); err != nil {
			return nil, err
		}
		sClaim.add(t1.Sub(t0))
		sDone.add(time.Since(t1))

		t0 = time.Now()
		claimed, err := lib.d.Next(ctx, []string{queue}, 5*time.Second, lib.sess)
		if err != nil {
			return nil, fmt.Errorf("direct: next: %w", err)
		}
		if claimed == nil {
			return nil, errors.New("direct: no task within 5s")
		}
		t1 = time.Now()
		if err := lib.d.Complete(ctx, claimed.Claim(), nil); err != nil {
			return nil, fmt.Errorf("direct: complete: %w", err)
		}
		dClaim.add(t1.Sub(t0))
		dDone.add(time.Since(t1))
	}
	out := []Overhead{overheadOf("claim (Next)", sClaim, dClaim), overheadOf("complete", sDone, dDone)}

	lock, unlock, err := r.lockOverhead(ctx, c, sess.ids[0], clis[0], n)
	if err != nil {
		return nil, err
	}
	return append(out, lock, unlock), nil
}

// lockOverhead times Lock and Unlock through the socket against
// concurrency.Mutex directly. When the sidecar does not implement
// LockService the socket side is reported as not available.
func (r *runner) lockOverhead(ctx context.Context, c *client.Client, session string, cli *clientv3.Client, n int) (lock, unlock Overhead, err error) {
	es, err := concurrency.NewSession(cli, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return lock, unlock, fmt.Errorf("direct: lock session: %w", err)
	}
	defer es.Close()
	mu := concurrency.NewMutex(es, "locks/bench")
	var sLock, sUnlock, dLock, dUnlock latencies
	socketErr := error(nil)
	for i := range warmup + n {
		if i == warmup {
			sLock, sUnlock, dLock, dUnlock = nil, nil, nil, nil
		}
		if socketErr == nil {
			t0 := time.Now()
			_, err := c.Locks.Lock(ctx, connect.NewRequest(&batonv1.LockRequest{Name: "bench", Wait: durationpb.New(5 * time.Second), Session: session}))
			if err != nil {
				socketErr = err
			} else {
				t1 := time.Now()
				_, err = c.Locks.Unlock(ctx, connect.NewRequest(&batonv1.UnlockRequest{Name: "bench", Session: session}))
				if err != nil {
					return lock, unlock, fmt.Errorf("socket: unlock: %w", err)
				}
				sLock.add(t1.Sub(t0))
				sUnlock.add(time.Since(t1))
			}
		}
		t0 := time.Now()
		if err := mu.Lock(ctx); err != nil {
			return lock, unlock, fmt.Errorf("direct: lock: %w", err)
		}
		t1 := time.Now()
		if err := mu.Unlock(ctx); err != nil {
			return lock, unlock, fmt.Errorf("direct: unlock: %w", err)
		}
		dLock.add(t1.Sub(t0))
		dUnlock.add(time.Since(t1))
	}
	lock, unlock = overheadOf("lock", sLock, dLock), overheadOf("unlock", sUnlock, dUnlock)
	switch {
	case socketErr == nil:
	case connect.CodeOf(socketErr) == connect.CodeUnimplemented:
		lock.Note = "not available (Unimplemented): this sidecar has no LockService"
		unlock.Note = lock.Note
	default:
		return lock, unlock, fmt.Errorf("socket: lock: %w", socketErr)
	}
	return lock, unlock, nil
}

func overheadOf(op string, socket, direct latencies) Overhead {
	o := Overhead{Op: op, Samples: len(direct), DirectP50MS: round(direct.quantile(0.5), 3), DirectP99MS: round(direct.quantile(0.99), 3)}
	if len(socket) > 0 {
		o.SocketP50MS = ptr(round(socket.quantile(0.5), 3))
		o.SocketP99MS = ptr(round(socket.quantile(0.99), 3))
		o.HopP50MS = ptr(round(*o.SocketP50MS-o.DirectP50MS, 3))
	}
	return o
}

func specs(n int) []workqueue.Spec {
	out := make([]workqueue.Spec, n)
	for i := range out {
		out[i] = workqueue.Spec{ID: taskID(i), Queue: queue, Payload: fmt.Appendf(nil, `{"n":%d,"syn_text":"bench"}`, i)}
	}
	return out
}

// library is the work queue used directly, in this process: what a
// sidecar runs, without its socket.
type library struct {
	store *workqueue.Store
	d     *workqueue.Dispatcher
	sess  *coord.Session
	stop  func()
}

func startLibrary(ctx context.Context, cli *clientv3.Client) (*library, error) {
	store, err := workqueue.NewStore(cli.KV, workqueue.Config{})
	if err != nil {
		return nil, err
	}
	lease := coord.NewLeaseKeeper(cli, 10*time.Second, nil)
	lctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = lease.Run(lctx) })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = lease.WaitSession(wctx)
	wcancel()
	if err != nil {
		cancel()
		wg.Wait()
		return nil, fmt.Errorf("direct: lease: %w", err)
	}
	sessions := coord.NewSessions()
	d := workqueue.NewDispatcher(store, cli.KV, cli.Watcher, lease, sessions, "bench-direct", nil)
	d.Start()
	s := sessions.Open("bench-direct")
	return &library{store: store, d: d, sess: s, stop: func() {
		sessions.Close(s)
		d.Stop()
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = lease.Revoke(rctx)
		rcancel()
		cancel()
		wg.Wait()
	}}, nil
}
