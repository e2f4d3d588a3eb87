package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/batonhq/baton/sidecar/workqueue"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The fleet's scheduler is one sidecar elected through etcd
// (sidecar/workqueue/scheduler.go): it alone assigns tasks to waiting Next
// calls and runs the sweep, promotion and retention. The scheduler faults
// find it and kill or pause it on purpose, and measure how long dispatch
// stopped.
//
// The scheduler is the holder of the key with the lowest create revision
// under <namespace>/elect/scheduler/ (concurrency.Election); the key's
// value is the sidecar's --worker-id, which the harness sets to the
// sidecar slot's name.

// electionPrefix is where the sidecars campaign, inside the namespace
// (the harness's client is namespaced already).
const electionPrefix = "elect/scheduler/"

// schedulerFaultWeight is how many times more often than other kinds the
// scheduler faults are drawn, so that every run of the default length
// kills and pauses the scheduler several times.
var schedulerFaultWeight = map[string]int{SchedulerKill: 3, SchedulerPause: 1, SchedulerPartition: 1}

// drawFault draws a fault kind from kinds, the scheduler faults weighted.
func (r *run) drawFault() string {
	total := 0
	for _, k := range r.cfg.Faults {
		total += max(1, schedulerFaultWeight[k])
	}
	n := r.rng.IntN(total)
	for _, k := range r.cfg.Faults {
		if n -= max(1, schedulerFaultWeight[k]); n < 0 {
			return k
		}
	}
	return r.cfg.Faults[len(r.cfg.Faults)-1]
}

// electKey is one election key.
type electKey struct {
	key, holder string
	rev         int64 // create revision
}

// leader reads the election key that leads, if any.
func (r *run) leader(ctx context.Context) (electKey, bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := r.kv.Get(rctx, electionPrefix, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return electKey{}, false, err
	}
	kv := resp.Kvs[0]
	return electKey{key: string(kv.Key), holder: string(kv.Value), rev: kv.CreateRevision}, true, nil
}

// findScheduler waits up to limit for a leading election key held by a
// live sidecar process: a key created before the slot's process started
// belongs to a killed incarnation whose lease has not expired yet.
func (r *run) findScheduler(ctx context.Context, limit time.Duration) (*sidecarSlot, electKey, bool) {
	deadline := time.Now().Add(limit)
	for {
		if lk, ok, err := r.leader(ctx); err == nil && ok {
			r.mu.Lock()
			for _, s := range r.sidecars {
				if s.name == lk.holder && !s.proc.Exited() && lk.rev > s.startRev {
					r.mu.Unlock()
					return s, lk, true
				}
			}
			r.mu.Unlock()
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 50*time.Millisecond) {
			return nil, electKey{}, false
		}
	}
}

// currentRev reads etcd's current revision, retrying for a few seconds; 0
// when etcd did not answer.
func (r *run) currentRev(ctx context.Context) int64 {
	for range 10 {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := r.kv.Get(rctx, "chaos-rev")
		cancel()
		if err == nil {
			return resp.Header.Revision
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			break
		}
	}
	return 0
}

// submitProbe submits one short task (outside the task mix) and returns
// its id: the time until it is claimed is how long dispatch stopped.
func (r *run) submitProbe(ctx context.Context, qs *workqueue.Store) (string, error) {
	r.mu.Lock()
	id := fmt.Sprintf("probe%03d", len(r.probes))
	r.probes = append(r.probes, id)
	r.mu.Unlock()
	b, _ := json.Marshal(Payload{ID: id, WorkMS: 200})
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := qs.Submit(sctx, []workqueue.Spec{{ID: id, Queue: Queue, Payload: b, MaxAttempts: 4}})
		cancel()
		if err == nil {
			return id, nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return id, fmt.Errorf("probe task %s: %w", id, err)
		}
	}
}

// firstState returns when task first took state after t.
func (r *run) firstState(task, state string, t time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.states {
		if e.task == task && e.state == state && !e.at.Before(t) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// injectScheduler kills (SIGKILL, restarted 0.5s later like sidecar-kill),
// pauses (SIGSTOP for TTL+2s, then SIGCONT) or cuts off (its proxies hold
// all traffic for TTL+2s, like sidecar-partition) the sidecar that is the
// scheduler now, submits a probe task at once, and measures the time
// until another sidecar's election key leads (Elected) and until the
// probe is claimed (Dispatch). It returns the claims in hand of the
// scheduler's workers, which must come back like any sidecar fault's.
func (r *run) injectScheduler(ctx context.Context, f *Fault, qs *workqueue.Store) ([]Op, error) {
	s, lk, ok := r.findScheduler(ctx, r.cfg.TTL+30*time.Second)
	if !ok {
		// Dispatch has stopped for good: every Next waits in vain. The
		// checker's stuck and lost tasks will show it; say so here.
		f.Target = "none"
		f.NoScheduler = true
		return nil, nil
	}
	f.Target = s.name
	stranded := r.stranded(s.workers)
	f.At = time.Now()
	switch f.Kind {
	case SchedulerKill:
		s.proc.Kill()
	case SchedulerPause:
		if err := s.proc.Signal(syscall.SIGSTOP); err != nil {
			return nil, err
		}
	default:
		s.link.Partition()
	}
	probe, err := r.submitProbe(ctx, qs)
	if err != nil {
		return nil, err
	}
	f.Probe = probe
	measured := make(chan struct{})
	go func() {
		defer close(measured)
		deadline := f.At.Add(r.cfg.TTL + 30*time.Second)
		for f.Elected == 0 || f.Dispatch == 0 {
			if f.Elected == 0 {
				if nk, ok, err := r.leader(ctx); err == nil && ok && nk.key != lk.key {
					f.Elected, f.NewScheduler = time.Since(f.At), nk.holder
				}
			}
			if f.Dispatch == 0 {
				if at, ok := r.firstState(probe, "CLAIMED", f.At); ok {
					f.Dispatch = at.Sub(f.At)
				}
			}
			if time.Now().After(deadline) || !sleepCtx(ctx, 20*time.Millisecond) {
				return
			}
		}
	}()
	switch f.Kind {
	case SchedulerKill:
		sleepCtx(ctx, 500*time.Millisecond)
		err = r.startSidecar(s)
	case SchedulerPause:
		sleepCtx(ctx, r.cfg.TTL+2*time.Second)
		err = s.proc.Signal(syscall.SIGCONT)
	default:
		sleepCtx(ctx, r.cfg.TTL+2*time.Second)
		s.link.Heal()
	}
	<-measured
	if err != nil {
		return nil, err
	}
	return stranded, nil
}

func isSchedulerFault(kind string) bool {
	return kind == SchedulerKill || kind == SchedulerPause || kind == SchedulerPartition
}
