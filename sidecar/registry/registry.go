// Package registry keeps the list of live sidecars in etcd.
//
// Each sidecar puts one entry, workers/<worker id>, bound to its lease: the
// entry exists exactly as long as the lease, so it vanishes within the TTL
// when the sidecar dies or is cut off, and at once when it stops cleanly
// (the lease is revoked). When the lease is lost and a new one granted, the
// entry is written again under the new one.
//
// The entry carries what an operator needs to find a worker (worker id,
// host, pid, queues, labels, version, start time) and the number of tasks
// in hand. The count changes with every claim, so its writes are coalesced:
// at most one per Config.MinInterval (default 1s), and the last value is
// always written.
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
	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = "workers/"

// Entry is one registered sidecar.
type Entry struct {
	WorkerID  string            `json:"worker_id"`
	Host      string            `json:"host"`
	PID       int               `json:"pid"`
	Queues    []string          `json:"queues"`
	Labels    map[string]string `json:"labels,omitempty"`
	Version   string            `json:"version"`
	StartedMS int64             `json:"started_ms"`
	InHand    int               `json:"in_hand"`
	// Lease is the sidecar's etcd lease (hex in `baton workers list`).
	Lease int64 `json:"lease"`
	// UpdatedMS is when the entry was last written.
	UpdatedMS int64 `json:"updated_ms"`
}

// Config says what a Registrar registers.
type Config struct {
	// Entry is the static part; InHand, Lease and UpdatedMS are filled in.
	Entry Entry
	// InHand returns the number of tasks in hand. Required.
	InHand func() int
	// Changed receives a value when InHand may have changed. Optional.
	Changed <-chan struct{}
	// MinInterval is the least time between two writes. Default 1s.
	MinInterval time.Duration
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
}

// Registrar writes one sidecar's entry. Run it in a goroutine.
type Registrar struct {
	kv    clientv3.KV
	lease *coord.LeaseKeeper
	cfg   Config
}

// New returns a registrar writing through kv (wrapped in the deployment's
// namespace) under the keeper's lease.
func New(kv clientv3.KV, lease *coord.LeaseKeeper, cfg Config) *Registrar {
	if cfg.MinInterval == 0 {
		cfg.MinInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registrar{kv: kv, lease: lease, cfg: cfg}
}

// Run keeps the entry current until ctx ends. It does not delete the entry
// on return: revoking the lease does that.
func (r *Registrar) Run(ctx context.Context) {
	var written Entry // last entry written, Lease 0 when none under the current lease
	var last time.Time
	var retry <-chan time.Time
	dirty := true
	for ctx.Err() == nil {
		sess, changed, err := r.lease.Session()
		if err == nil && sess.Lease() != clientv3.LeaseID(written.Lease) {
			dirty = true
		}
		var wait <-chan time.Time
		if err == nil && dirty {
			if d := r.cfg.MinInterval - time.Since(last); d > 0 && written.Lease == int64(sess.Lease()) {
				wait = time.After(d)
			} else {
				e := r.cfg.Entry
				e.InHand = r.cfg.InHand()
				e.Lease = int64(sess.Lease())
				e.UpdatedMS = time.Now().UnixMilli()
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, perr := r.kv.Put(wctx, prefix+e.WorkerID, mustJSON(e), clientv3.WithLease(sess.Lease()))
				cancel()
				last = time.Now()
				if perr != nil {
					if ctx.Err() == nil {
						r.cfg.Logger.Warn("registering the sidecar failed; retrying", "err", perr)
					}
					retry = time.After(time.Second)
				} else {
					written, dirty, retry = e, false, nil
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-r.cfg.Changed:
			dirty = true
		case <-wait:
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
func List(ctx context.Context, kv clientv3.KV) ([]Entry, error) {
	resp, err := kv.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e Entry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("registry entry %s: %w", strings.TrimPrefix(string(kv.Key), prefix), err)
		}
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
