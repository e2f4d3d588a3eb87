package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type stateEvent struct {
	task  string
	state string
	at    time.Time
}

// onOp records a worker's Op line (or its lock or config line).
func (r *run) onOp(line string) {
	var op Op
	if err := json.Unmarshal([]byte(line), &op); err != nil {
		return
	}
	switch {
	case op.Lock != nil:
		r.onLock(*op.Lock)
		return
	case op.Config != nil:
		r.mu.Lock()
		r.configSeen = append(r.configSeen, *op.Config)
		r.mu.Unlock()
		return
	case op.Kind == "":
		return
	}
	key := [4]string{op.Worker, op.Kind, op.Task, fmt.Sprint(op.Token)}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case op.Kind == OpClaim:
		r.ops = append(r.ops, op)
		r.holding[op.Worker] = op
	case op.Return == 0:
		r.pending[key] = len(r.ops)
		r.ops = append(r.ops, op)
		if op.Kind != OpHeartbeat {
			delete(r.holding, op.Worker) // answering: no longer a stranded claim
		}
	default:
		if i, ok := r.pending[key]; ok {
			r.ops[i] = op
			delete(r.pending, key)
		} else {
			r.ops = append(r.ops, op)
		}
		if op.Kind != OpHeartbeat || op.Outcome == Rejected {
			delete(r.holding, op.Worker)
		}
	}
}

// onLock records a lock holding: its first line when Lock returned, its
// second when the holder let go.
func (r *run) onLock(h LockHold) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := h.Holder + "/" + fmt.Sprint(h.Token)
	if i, ok := r.lockIdx[k]; ok {
		r.locks[i] = h
		return
	}
	r.lockIdx[k] = len(r.locks)
	r.locks = append(r.locks, h)
}

// lockHolds returns the holdings; one whose holder never said it let go
// (killed while holding) has an unknown end.
func (r *run) lockHolds() []LockHold {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]LockHold(nil), r.locks...)
	for i := range out {
		if out[i].Released.IsZero() {
			out[i].Lost = true
		}
	}
	return out
}

// history returns the ops; calls never answered are of unknown outcome.
func (r *run) history() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Op(nil), r.ops...)
	for _, i := range r.pending {
		out[i].Outcome = Unknown
	}
	return out
}

func (r *run) watchStates(ctx context.Context) {
	const prefix = "state/"
	var rev int64 // last revision seen: a new watch resumes after it
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		for resp := range r.kv.Watch(clientv3.WithRequireLeader(ctx), prefix, opts...) {
			now := time.Now()
			r.mu.Lock()
			for _, ev := range resp.Events {
				var st struct{ State string }
				if ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &st) == nil {
					r.states = append(r.states, stateEvent{task: strings.TrimPrefix(string(ev.Kv.Key), prefix), state: st.State, at: now})
				}
				rev = max(rev, ev.Kv.ModRevision)
			}
			r.mu.Unlock()
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// dump writes the history, the state events and the faults to
// history.json in the run directory, for a failing seed's post-mortem.
func (r *run) dump(h History, faults []Fault) {
	type state struct {
		Task, State string
		At          time.Time
	}
	var states []state
	r.mu.Lock()
	for _, e := range r.states {
		states = append(states, state{e.task, e.state, e.at})
	}
	r.mu.Unlock()
	b, err := json.MarshalIndent(map[string]any{"history": h, "states": states, "faults": faults}, "", " ")
	if err == nil {
		_ = os.WriteFile(filepath.Join(r.cfg.Dir, "history.json"), b, 0o644)
	}
}
