// Package registry keeps the list of live sidecars in etcd.
//
// Each sidecar puts one entry, workers/<worker id>, bound to its lease: the
// entry exists exactly as long as the lease, so it vanishes within the TTL
// when the sidecar dies or is cut off, and at once when it stops cleanly
// (the lease is revoked). When the lease is lost and a new one granted, the
// entry is written again under the new one.
//
// The entry carries what an operator needs to find a worker (worker id,
// host, pid, queues, labels, version, start time). It is written once per
// lease, never per task: a fleet of hundreds of sidecars rewriting an entry
// whenever a claim starts or ends cost about one etcd write per task at 256
// sidecars (`baton bench`). The number of tasks in hand is counted by List
// from the claim keys instead, which carry their holder's lease.
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
}

// Config says what a Registrar registers.
type Config struct {
	// Entry is what is registered; Lease and UpdatedMS are filled in.
	Entry Entry
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Clock stamps UpdatedMS and times the retry of a failed write
	// (RetryInterval). Default: the wall clock.
	Clock clockwork.Clock
}

// RetryInterval is how long Run waits after a failed write before it
// writes again (sooner when the lease changes).
const RetryInterval = time.Second

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

// Run writes the entry under each lease the sidecar is granted until ctx
// ends. It does not delete the entry on return: revoking the lease does
// that.
func (r *Registrar) Run(ctx context.Context) {
	var written clientv3.LeaseID // the lease the entry was written under, 0 for none
	var retry <-chan time.Time
	for ctx.Err() == nil {
		sess, changed, err := r.lease.Session()
		if err == nil && sess.Lease() != written {
			e := r.cfg.Entry
			e.Lease = int64(sess.Lease())
			e.UpdatedMS = r.cfg.Clock.Now().UnixMilli()
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, perr := r.kv.Put(wctx, prefix+e.WorkerID, mustJSON(e), clientv3.WithLease(sess.Lease()))
			cancel()
			if perr != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Warn("registering the sidecar failed; retrying", "err", perr)
				}
				retry = r.cfg.Clock.After(RetryInterval)
			} else {
				written, retry = sess.Lease(), nil
			}
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-retry:
		}
	}
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
