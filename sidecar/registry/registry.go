// Package registry keeps the list of live sidecars in etcd.
//
// Each sidecar puts one entry, workers/<worker id>, bound to its lease: the
// entry exists exactly as long as the lease, so it vanishes within the TTL
// when the sidecar dies or is cut off, and at once when it stops cleanly
// (the lease is revoked). When the lease is lost and a new one granted, the
// entry is written again under the new one.
//
// The entry carries what an operator needs to find a worker (worker id,
// host, pid, queues, labels, version, start time) and the sessions its
// processes have open, each with the name the process attached with. It is
// written once per lease and again when a session opens or closes (at most
// once per SessionsInterval), never per task: a fleet of hundreds of
// sidecars rewriting an entry whenever a claim starts or ends cost about
// one etcd write per task at 256 sidecars (`baton bench`). The number of
// tasks in hand is counted by List from the claim keys instead, which carry
// their holder's lease.
package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = Prefix

// Prefix holds the registry entries (workers/<worker id>), for watchers.
const Prefix = "workers/"

// Entry is one registered sidecar.
type Entry struct {
	WorkerID  string            `json:"worker_id"`
	Host      string            `json:"host"`
	PID       int               `json:"pid"`
	Queues    []string          `json:"queues"`
	Labels    map[string]string `json:"labels,omitempty"`
	Version   string            `json:"version"`
	StartedMS int64             `json:"started_ms"`
	// InHand is the number of claims bound to the sidecar's lease, counted
	// by List (not stored).
	InHand int `json:"in_hand"`
	// Lease is the sidecar's etcd lease (hex in `baton workers list`).
	Lease int64 `json:"lease"`
	// UpdatedMS is when the entry was last written.
	UpdatedMS int64 `json:"updated_ms"`
	// Sessions are the sessions open on the sidecar when the entry was
	// written, oldest first (filled in from Config.Sessions).
	Sessions []Session `json:"sessions,omitempty"`
}

// Session is one session open on the sidecar: the Attach stream of one of
// the worker's processes.
type Session struct {
	Session string `json:"session"`           // the session id
	Process string `json:"process,omitempty"` // the name the process attached with
	PID     int32  `json:"pid,omitempty"`     // the process id, when known
	SinceMS int64  `json:"since_ms"`          // when it opened, Unix ms
}

// Config says what a Registrar registers.
type Config struct {
	// Entry is what is registered; Lease, UpdatedMS and Sessions are
	// filled in.
	Entry Entry
	// Sessions are the sidecar's open sessions, listed in the entry. Nil:
	// none listed.
	Sessions *coord.Sessions
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Clock stamps UpdatedMS and times the retry of a failed write
	// (RetryInterval) and the spacing of session changes
	// (SessionsInterval). Default: the wall clock.
	Clock clockwork.Clock
}

// RetryInterval is how long Run waits after a failed write before it
// writes again (sooner when the lease changes).
const RetryInterval = time.Second

// SessionsInterval is the shortest time between two writes of the entry
// for changed sessions: a burst of processes attaching at once (at most
// server.MaxSessions) is one write a second, not one per session.
const SessionsInterval = time.Second

// Registrar writes one sidecar's entry. Run it in a goroutine.
type Registrar struct {
	kv    clientv3.KV
	lease *coord.LeaseKeeper
	cfg   Config
}

// New returns a registrar writing through kv (wrapped in the deployment's
// namespace) under the keeper's lease.
func New(kv clientv3.KV, lease *coord.LeaseKeeper, cfg Config) *Registrar {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Registrar{kv: kv, lease: lease, cfg: cfg}
}

// Run writes the entry under each lease the sidecar is granted, and again
// when its sessions change, until ctx ends. It does not delete the entry on
// return: revoking the lease does that.
func (r *Registrar) Run(ctx context.Context) {
	var written clientv3.LeaseID // the lease the entry was written under, 0 for none
	var retry <-chan time.Time   // a failed write is tried again
	var hold <-chan time.Time    // session changes wait for SessionsInterval
	var next time.Time           // when a write for changed sessions may come
	stale := false               // the sessions changed since the last write
	for ctx.Err() == nil {
		sess, changed, err := r.lease.Session()
		open, opened := r.sessions()
		due := err == nil && (sess.Lease() != written || stale && hold == nil && retry == nil)
		if due && sess.Lease() == written {
			if wait := next.Sub(r.cfg.Clock.Now()); wait > 0 {
				hold, due = r.cfg.Clock.After(wait), false
			}
		}
		if due {
			e := r.cfg.Entry
			e.Lease = int64(sess.Lease())
			e.UpdatedMS = r.cfg.Clock.Now().UnixMilli()
			e.Sessions = open
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, perr := r.kv.Put(wctx, prefix+e.WorkerID, mustJSON(e), clientv3.WithLease(sess.Lease()))
			cancel()
			if perr != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Warn("registering the sidecar failed; retrying", "err", perr)
				}
				retry = r.cfg.Clock.After(RetryInterval)
			} else {
				written, retry, stale = sess.Lease(), nil, false
				next = r.cfg.Clock.Now().Add(SessionsInterval)
			}
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-opened:
			stale = true
		case <-retry:
			retry = nil
		case <-hold:
			hold = nil
		}
	}
}

// sessions returns the open sessions as the entry lists them and a channel
// closed when they change (nil without Config.Sessions).
func (r *Registrar) sessions() ([]Session, <-chan struct{}) {
	if r.cfg.Sessions == nil {
		return nil, nil
	}
	ss, changed := r.cfg.Sessions.List()
	out := make([]Session, 0, len(ss))
	for _, s := range ss {
		out = append(out, Session{Session: s.ID, Process: s.Process, PID: s.PID, SinceMS: s.Started.UnixMilli()})
	}
	return out, changed
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// List returns the registered sidecars ordered by worker id.
// Each entry's InHand is the number of claims bound to its lease, read in
// the same transaction.
func List(ctx context.Context, kv clientv3.KV) ([]Entry, error) {
	tresp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(prefix, clientv3.WithPrefix()),
		clientv3.OpGet(workqueue.ClaimPrefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	held := workqueue.ClaimsByLease(tresp.Responses[1].GetResponseRange().Kvs)
	resp := tresp.Responses[0].GetResponseRange()
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e Entry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("registry entry %s: %w", strings.TrimPrefix(string(kv.Key), prefix), err)
		}
		e.InHand = held[e.Lease]
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WorkerID < out[j].WorkerID })
	return out, nil
}

// ParseLabels parses "k=v" pairs; it names the bad one.
func ParseLabels(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for i, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label[%d]: %q is not KEY=VALUE", i, p)
		}
		if len(k) > 63 || len(v) > 256 {
			return nil, fmt.Errorf("label[%d]: %q is too long (key at most 63 bytes, value 256)", i, p)
		}
		out[k] = v
	}
	return out, nil
}
