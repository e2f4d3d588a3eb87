package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/batoncli"
	"github.com/batonhq/baton/sidecar/client"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// roleEnv names the role a re-executed harness binary plays.
const roleEnv = "BATON_CHAOS_ROLE"

// RunRole runs this process as an etcd member, a sidecar or a worker when
// the harness started it as one, and then exits; otherwise it returns. Call
// it first in main (or TestMain) of any binary that runs a Scenario.
func RunRole() {
	var err error
	switch os.Getenv(roleEnv) {
	case "":
		return
	case "etcd":
		err = runMember()
	case "sidecar":
		err = runSidecar()
	case "worker":
		err = runWorker()
	default:
		err = fmt.Errorf("unknown role %q", os.Getenv(roleEnv))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos role:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runMember is one etcd cluster member built on the same embed package as
// `baton dev`. It prints READY once it serves and runs until killed.
func runMember() error {
	cfg := embed.NewConfig()
	cfg.Name = os.Getenv("CHAOS_ETCD_NAME")
	cfg.Dir = os.Getenv("CHAOS_ETCD_DIR")
	cu, err := url.Parse(os.Getenv("CHAOS_ETCD_CLIENT"))
	if err != nil {
		return err
	}
	pu, err := url.Parse(os.Getenv("CHAOS_ETCD_PEER"))
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = os.Getenv("CHAOS_ETCD_CLUSTER")
	cfg.InitialClusterToken = "baton-chaos"
	cfg.ClusterState = embed.ClusterStateFlagNew
	// A loaded two-core machine: keep elections for real failures.
	cfg.TickMs = 100
	cfg.ElectionMs = 1500
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("READY")
	case err := <-e.Err():
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-e.Err():
		return err
	case <-sig:
		return nil
	}
}

// runSidecar is `baton sidecar`, run through the same command-line app as
// the real binary.
func runSidecar() error {
	args := []string{"baton", "--endpoints", os.Getenv("CHAOS_ENDPOINTS"), "--namespace", os.Getenv("CHAOS_NAMESPACE"),
		"--log-level", "warn", "sidecar", "--socket", os.Getenv("CHAOS_SOCKET"), "--queue", Queue,
		"--ttl", os.Getenv("CHAOS_TTL"), "--grace", "1s", "--worker-id", os.Getenv("CHAOS_NAME"), "--admin-addr", ""}
	return batoncli.New(os.Stdout, os.Stderr).RunContext(context.Background(), args)
}

// Payload is what a chaos task asks its worker to do.
type Payload struct {
	ID string `json:"id"`
	// WorkMS is how long the fake work takes.
	WorkMS int `json:"work_ms"`
	// FailAttempts: the worker fails attempts up to this one on purpose.
	FailAttempts int `json:"fail_attempts,omitempty"`
}

// runWorker is a worker process: it attaches to its sidecar, then loops
// Next → fake work in chunks, each written to the fenced store and
// followed by a Heartbeat → Complete (or Fail on purpose). It prints every call as a JSON Op line on stdout: a line
// with Return 0 before a Complete or Fail (so a kill mid-call leaves a
// call of unknown outcome) and one with the answer after it. When the
// sidecar goes away it attaches again.
func runWorker() error {
	name := os.Getenv("CHAOS_NAME")
	c := client.New(os.Getenv("CHAOS_SOCKET"))
	store := os.Getenv("CHAOS_STORE")
	var outMu sync.Mutex
	emit := func(op Op) {
		op.Worker = name
		b, _ := json.Marshal(op)
		outMu.Lock()
		os.Stdout.Write(append(b, '\n'))
		outMu.Unlock()
	}
	for {
		workSession(c, store, emit)
		time.Sleep(100 * time.Millisecond) // reconnect backoff of a worker whose sidecar is away
	}
}

func workSession(c *client.Client, store string, emit func(Op)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Tasks.Attach(ctx, connect.NewRequest(&batonv1.AttachRequest{Process: os.Getenv("CHAOS_NAME")}))
	if err != nil || !stream.Receive() {
		return
	}
	session := stream.Msg().Session
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for stream.Receive() {
		}
	}()
	var side sync.WaitGroup
	defer func() { cancel(); <-closed; side.Wait() }()
	// Beside the task loop, under the same session: contend for the
	// chaos lock, and follow the config document.
	side.Add(2)
	go func() { defer side.Done(); lockLoop(ctx, c, session, store, emit) }()
	go func() { defer side.Done(); configLoop(ctx, c, emit) }()
	for {
		select {
		case <-closed:
			return
		default:
		}
		call := time.Now().UnixNano()
		resp, err := c.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{Session: session, Wait: durationpb.New(2 * time.Second)}))
		if err != nil {
			if connect.CodeOf(err) == connect.CodeFailedPrecondition {
				return // session gone: attach again
			}
			time.Sleep(100 * time.Millisecond) // etcd away: retry like a real worker
			continue
		}
		t := resp.Msg.Task
		if t == nil {
			continue
		}
		emit(Op{Kind: OpClaim, Task: t.Id, Token: t.FencingToken, Attempt: t.Attempt, Call: call, Return: time.Now().UnixNano()})
		var p Payload
		if b, err := t.Payload.MarshalJSON(); err == nil {
			_ = json.Unmarshal(b, &p)
		}
		storeCall(store, "begin", t.Id, t.FencingToken)
		// The fake work, in chunks of up to 300ms; each chunk's output goes
		// to the fenced store and is followed by a Heartbeat. A refused
		// heartbeat means the claim is lost: drop the task.
		lost := false
		for left := p.WorkMS; left > 0 && !lost; left -= 300 {
			time.Sleep(time.Duration(min(left, 300)) * time.Millisecond)
			storeCall(store, "output", t.Id, t.FencingToken)
			op := Op{Kind: OpHeartbeat, Task: t.Id, Token: t.FencingToken, Call: time.Now().UnixNano()}
			emit(op)
			hb, err := c.Tasks.Heartbeat(ctx, connect.NewRequest(&batonv1.HeartbeatRequest{Claim: t.Claim}))
			op.Return, op.Outcome = time.Now().UnixNano(), outcome(err)
			emit(op)
			lost = op.Outcome == Rejected
			if err == nil && hb.Msg.CancelRequested {
				// Cancelled: give the task up; it ends CANCELLED.
				answer(ctx, closed, emit, Op{Kind: OpRelease, Task: t.Id, Token: t.FencingToken}, func() error {
					_, err := c.Tasks.Release(ctx, connect.NewRequest(&batonv1.ReleaseRequest{Claim: t.Claim}))
					return err
				})
				lost = true
			}
		}
		if lost {
			continue
		}
		if int(t.Attempt) <= p.FailAttempts {
			answer(ctx, closed, emit, Op{Kind: OpFail, Task: t.Id, Token: t.FencingToken}, func() error {
				_, err := c.Tasks.Fail(ctx, connect.NewRequest(&batonv1.FailRequest{Claim: t.Claim, Error: "injected failure", RetryAfter: durationpb.New(100 * time.Millisecond)}))
				return err
			})
			continue
		}
		result, _ := structpb.NewStruct(map[string]any{"token": float64(t.FencingToken)})
		answer(ctx, closed, emit, Op{Kind: OpComplete, Task: t.Id, Token: t.FencingToken}, func() error {
			_, err := c.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: t.Claim, Result: result}))
			return err
		})
	}
}

// LockName is the lock every chaos worker contends for; ConfigName the
// document the harness keeps changing and every worker watches.
const (
	LockName   = "chaos"
	ConfigName = "global"
)

// lockLoop takes the chaos lock again and again until ctx ends. Each
// holding writes to the fenced store twice (on taking it and just before
// letting go) and is printed twice: when Lock returned and when the worker
// stopped acting as holder (then calls Unlock). An Unlock refused with
// FAILED_PRECONDITION means the lock was lost with its lease while held;
// then, or when no answer came before the session ended, the holding is
// marked Lost: its overlap with the next holder is allowed, and the fenced
// store must have refused its stale writes.
func lockLoop(ctx context.Context, c *client.Client, session, store string, emit func(Op)) {
	name := os.Getenv("CHAOS_NAME")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for ctx.Err() == nil {
		if !sleepCtx(ctx, time.Duration(100+rng.IntN(400))*time.Millisecond) {
			return
		}
		resp, err := c.Locks.Lock(ctx, connect.NewRequest(&batonv1.LockRequest{Name: LockName, Session: session, Wait: durationpb.New(3 * time.Second)}))
		if err != nil {
			continue // not obtained in time, etcd away, or the session is gone
		}
		hold := LockHold{Name: LockName, Holder: name, Token: resp.Msg.FencingToken, Acquired: time.Now()}
		emit(Op{Lock: &hold})
		storeCall(store, "lock", "lock:"+LockName, hold.Token)
		time.Sleep(time.Duration(20+rng.IntN(100)) * time.Millisecond) // the critical section's work
		storeCall(store, "lock", "lock:"+LockName, hold.Token)
		hold.Released = time.Now()
		// Unlock, retried while its outcome is unknown (etcd away): the
		// sidecar keeps the lock as held until an Unlock gets through.
		// Without a definite OK (refused: lost with its lease; or the
		// session ended first) the holding's end is unknown.
		o := Unknown
		for {
			_, err := c.Locks.Unlock(ctx, connect.NewRequest(&batonv1.UnlockRequest{Name: LockName, Session: session}))
			if o = outcome(err); o != Unknown || !sleepCtx(ctx, 200*time.Millisecond) {
				break
			}
		}
		hold.Lost = o != OK
		emit(Op{Lock: &hold})
	}
}

// configLoop watches the config document until ctx ends, printing every
// revision it receives. After a broken stream it watches again from the
// last revision it saw, as a real client does; it does not filter what the
// sidecar sends, so the checker sees any revision that goes backwards.
func configLoop(ctx context.Context, c *client.Client, emit func(Op)) {
	name := os.Getenv("CHAOS_NAME")
	var last int64
	for ctx.Err() == nil {
		stream, err := c.Config.Watch(ctx, connect.NewRequest(&batonv1.WatchRequest{Name: ConfigName, AfterRevision: last}))
		if err == nil {
			for stream.Receive() {
				rev := stream.Msg().Revision
				emit(Op{Config: &ConfigSeen{Watcher: name, Name: ConfigName, Revision: rev, At: time.Now()}})
				last = max(last, rev)
			}
			stream.Close()
		}
		sleepCtx(ctx, 200*time.Millisecond) // reconnect backoff
	}
}

// answer makes a Complete or Fail call the way a worker must: an answer of
// unknown outcome (UNAVAILABLE: etcd away) is retried while the session
// lasts, for up to a minute, because the claim may still be valid and
// otherwise waits for its timeout. Each try is recorded.
func answer(ctx context.Context, closed <-chan struct{}, emit func(Op), op Op, call func() error) {
	deadline := time.Now().Add(time.Minute)
	for {
		op.Call, op.Return, op.Outcome = time.Now().UnixNano(), 0, ""
		emit(op)
		err := call()
		op.Return, op.Outcome = time.Now().UnixNano(), outcome(err)
		emit(op)
		if op.Outcome != Unknown || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		select {
		case <-closed:
			return // session gone: the claim went with it
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func outcome(err error) Outcome {
	switch {
	case err == nil:
		return OK
	case connect.CodeOf(err) == connect.CodeFailedPrecondition:
		return Rejected
	default:
		return Unknown
	}
}

// storeCall writes to the fenced store; its answer does not change what
// the worker does next (a refused output is the store's business).
func storeCall(store, kind, task string, token int64) {
	body, _ := json.Marshal(map[string]any{"kind": kind, "task": task, "token": token, "worker": os.Getenv("CHAOS_NAME")})
	resp, err := http.Post("http://"+store+"/write", "application/json", bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fenced store:", err)
		return
	}
	resp.Body.Close()
}
