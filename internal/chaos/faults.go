package chaos

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/childproc"
)

// Fault kinds.
const (
	WorkerKill       = "worker-kill"
	SidecarKill      = "sidecar-kill"
	SidecarPause     = "sidecar-pause" // SIGSTOP past the TTL, then SIGCONT
	SidecarPartition = "sidecar-partition"
	LinkDelay        = "link-delay"
	LeaderKill       = "etcd-leader-kill"
	FollowerKill     = "etcd-follower-kill"
	LeaderPause      = "etcd-leader-pause"
	// WorkerKillElection kills a worker while the etcd leader is paused,
	// so its sidecar cannot return the claim at once.
	WorkerKillElection = "worker-kill-in-election"
	// The scheduler faults find the sidecar elected as the fleet's
	// scheduler and kill it (restarted 0.5s later), pause it past the TTL
	// or cut it off past the TTL (scheduler.go).
	SchedulerKill      = "scheduler-kill"
	SchedulerPause     = "scheduler-pause"
	SchedulerPartition = "scheduler-partition"
)

// AllFaults is every fault kind, in the order the summary lists them.
var AllFaults = []string{WorkerKill, SidecarKill, SidecarPause, SidecarPartition, LinkDelay, LeaderKill, FollowerKill, LeaderPause, WorkerKillElection, SchedulerKill, SchedulerPause, SchedulerPartition}

// Fault is one injected fault. Recovery is how long after it the system
// was whole again: for faults that strand claimed tasks, until the last
// stranded task was back in the queue (PENDING, or DEAD on its last
// attempt); for etcd faults, until a write through the cluster succeeded
// again. Zero when there was nothing to recover.
type Fault struct {
	Kind   string
	Target string
	At     time.Time
	// Stranded counts the claims in hand that the fault cut off and that
	// came back to the queue (Tasks); Survived the claims in hand that
	// their workers still finished (a sidecar restarted before its old
	// lease expired); Unrecovered the tasks that had not come back within
	// TTL+30s.
	Stranded    int
	Tasks       []string
	Survived    int
	Unrecovered []string
	// Recoveries holds each stranded claim's time back to the queue;
	// Recovery is the largest (for etcd faults, the time to the first
	// write).
	Recoveries []time.Duration
	Recovery   time.Duration
	// Scheduler faults: Elected is the time from the fault until another
	// sidecar's election key led (NewScheduler, its worker id); Dispatch
	// the time until Probe, a task submitted right after the fault, was
	// claimed. Zero when not seen within TTL+30s. NoScheduler: no live
	// sidecar was the scheduler for TTL+30s, so nothing was injected.
	Elected      time.Duration
	NewScheduler string
	Probe        string
	Dispatch     time.Duration
	NoScheduler  bool
}

// stranded lists the claims in hand of the given workers that are still
// the task's current claim: a worker stuck in a call through a cut-off
// sidecar may hold a claim that an earlier fault already returned and
// another worker took or finished.
func (r *run) stranded(workers []*childproc.Process) []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Op
	for _, w := range workers {
		op, ok := r.holding[w.Name()]
		if !ok {
			continue
		}
		current := true
		for _, o := range r.ops {
			if o.Task == op.Task && o.Kind == OpClaim && o.Token > op.Token {
				current = false
			}
		}
		for i := len(r.states) - 1; i >= 0; i-- {
			if e := r.states[i]; e.task == op.Task {
				current = current && e.state == "CLAIMED"
				break
			}
		}
		if current {
			out = append(out, op)
		}
	}
	return out
}

// settled returns the first state task took after t other than CLAIMED,
// and when. A claim in hand when a fault struck ends either by recovery
// (PENDING, or DEAD on its last attempt) or, when the claim outlived the
// fault (a sidecar restarted before its old lease expired), by its worker
// finishing it (DONE, FAILED).
func (r *run) settled(task string, t time.Time) (string, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.states {
		if e.task == task && e.at.After(t) && e.state != "CLAIMED" {
			return e.state, e.at, true
		}
	}
	return "", time.Time{}, false
}

// waitLeader polls until a member says it leads.
func (r *run) waitLeader(ctx context.Context, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		i, err := r.cluster.Leader(ctx)
		if err == nil {
			return i, nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return -1, err
		}
	}
}

// probe writes through the cluster until a write succeeds; it returns
// how long after since that was.
func (r *run) probe(ctx context.Context, since time.Time, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := r.cluster.Client.Put(pctx, "chaos-probe", since.String())
		cancel()
		if err == nil {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
			return 0, fmt.Errorf("cluster took no write for %v: %w", limit, err)
		}
	}
}

func (r *run) inject(ctx context.Context, kind string) (Fault, error) {
	f := Fault{Kind: kind, At: time.Now()}
	ttlPlus := r.cfg.TTL + 2*time.Second
	s := r.sidecars[r.rng.IntN(len(r.sidecars))]
	var stranded []Op
	switch kind {
	case WorkerKill:
		i := r.rng.IntN(len(s.workers))
		r.mu.Lock()
		w := s.workers[i]
		r.mu.Unlock()
		f.Target = w.Name()
		stranded = r.stranded([]*childproc.Process{w})
		f.At = time.Now()
		w.Kill()
		if err := r.startWorker(s, i); err != nil {
			return f, err
		}
	case SidecarKill:
		f.Target = s.name
		stranded = r.stranded(s.workers)
		f.At = time.Now()
		s.proc.Kill()
		sleepCtx(ctx, 500*time.Millisecond)
		if err := r.startSidecar(s); err != nil {
			return f, err
		}
	case SidecarPause:
		f.Target = s.name
		stranded = r.stranded(s.workers)
		f.At = time.Now()
		if err := s.proc.Signal(syscall.SIGSTOP); err != nil {
			return f, err
		}
		sleepCtx(ctx, ttlPlus)
		if err := s.proc.Signal(syscall.SIGCONT); err != nil {
			return f, err
		}
	case SidecarPartition:
		f.Target = s.name
		stranded = r.stranded(s.workers)
		f.At = time.Now()
		s.link.Partition()
		sleepCtx(ctx, ttlPlus)
		s.link.Heal()
	case SchedulerKill, SchedulerPause, SchedulerPartition:
		var err error
		if stranded, err = r.injectScheduler(ctx, &f, r.qs); err != nil {
			return f, err
		}
	case LinkDelay:
		f.Target = s.name
		s.link.Delay(150*time.Millisecond, 100*time.Millisecond)
		sleepCtx(ctx, 3*time.Second)
		s.link.Undelay()
	case WorkerKillElection:
		leader, err := r.waitLeader(ctx, 30*time.Second)
		if err != nil {
			return f, err
		}
		i := r.rng.IntN(len(s.workers))
		r.mu.Lock()
		w := s.workers[i]
		r.mu.Unlock()
		f.Target = fmt.Sprintf("%s+m%d", w.Name(), leader)
		stranded = r.stranded([]*childproc.Process{w})
		f.At = time.Now()
		if err := r.cluster.Pause(leader); err != nil {
			return f, err
		}
		w.Kill()
		if err := r.startWorker(s, i); err != nil {
			return f, err
		}
		if _, err := r.probe(ctx, f.At, 60*time.Second); err != nil {
			return f, err
		}
		if err := r.cluster.Resume(leader); err != nil {
			return f, err
		}
	case LeaderKill, FollowerKill, LeaderPause:
		leader, err := r.waitLeader(ctx, 30*time.Second)
		if err != nil {
			return f, err
		}
		m := leader
		if kind == FollowerKill {
			m = (leader + 1 + r.rng.IntN(r.cluster.Size()-1)) % r.cluster.Size()
		}
		f.Target = fmt.Sprintf("m%d", m)
		f.At = time.Now()
		if kind == LeaderPause {
			if err := r.cluster.Pause(m); err != nil {
				return f, err
			}
		} else {
			r.cluster.Kill(m)
		}
		d, err := r.probe(ctx, f.At, 60*time.Second)
		if err != nil {
			return f, err
		}
		f.Recovery = d
		sleepCtx(ctx, time.Second)
		if kind == LeaderPause {
			err = r.cluster.Resume(m)
		} else {
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			err = r.cluster.Restart(rctx, m)
			cancel()
		}
		if err != nil {
			return f, err
		}
		return f, nil
	default:
		return f, fmt.Errorf("unknown fault kind %q", kind)
	}
	// Stranded claims must come back: wait (bounded) and take the last.
	deadline := time.Now().Add(r.cfg.TTL + 30*time.Second)
	for _, op := range stranded {
		for {
			if state, at, ok := r.settled(op.Task, f.At); ok {
				if state == "PENDING" || state == "DEAD" {
					f.Stranded++
					f.Tasks = append(f.Tasks, op.Task)
					f.Recoveries = append(f.Recoveries, at.Sub(f.At))
					f.Recovery = max(f.Recovery, at.Sub(f.At))
				} else {
					f.Survived++
				}
				break
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
				f.Unrecovered = append(f.Unrecovered, op.Task) // the checker will say whether it was lost
				break
			}
		}
	}
	return f, nil
}
