package audit

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Follower logs each record as it is written and reports it to Observe.
// One runs on the elected scheduler sidecar, for its term (Run's ctx).
type Follower struct {
	// KV and Watcher are the deployment's namespaced client.
	KV      clientv3.KV
	Watcher clientv3.Watcher
	// Logger receives the "operator action" lines. Default: discard.
	Logger *slog.Logger
	// Observe, when set, is called with each record after it is logged
	// (for metrics), from Run's goroutine.
	Observe func(Record)
}

// Run logs the records written after auditcursor, then each new one as it
// arrives, moving auditcursor along, until ctx ends. etcd being away is
// retried with backoff; a watch that fails (compacted, no leader) is
// resumed from the cursor, so no record is skipped.
func (f *Follower) Run(ctx context.Context) {
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := f.catchUp(ctx, log)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("audit: reading operator actions failed; retrying", "err", err, "retry_in", backoff)
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range f.Watcher.Watch(wctx, Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil {
				break // resume from the cursor
			}
			var last int64
			for _, ev := range resp.Events {
				if ev.Type != mvccpb.PUT {
					continue // retention
				}
				f.emit(log, string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision)
				last = ev.Kv.ModRevision
			}
			if last > 0 {
				f.saveCursor(ctx, log, last)
			}
		}
		cancel()
	}
}

// catchUp logs the records written after the cursor and returns the
// revision it read at.
func (f *Follower) catchUp(ctx context.Context, log *slog.Logger) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cur, err := f.KV.Get(rctx, cursorKey)
	if err != nil {
		return 0, err
	}
	var after int64
	if len(cur.Kvs) == 1 {
		after = parseCursor(cur.Kvs[0].Value)
	}
	resp, err := f.KV.Get(rctx, Prefix, clientv3.WithPrefix(), clientv3.WithMinModRev(after+1),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend), clientv3.WithRev(cur.Header.Revision))
	if err != nil {
		return 0, err
	}
	for _, kv := range resp.Kvs {
		f.emit(log, string(kv.Key), kv.Value, kv.ModRevision)
	}
	if n := len(resp.Kvs); n > 0 {
		f.saveCursor(ctx, log, resp.Kvs[n-1].ModRevision)
	}
	return cur.Header.Revision, nil
}

// emit logs one record and reports it.
func (f *Follower) emit(log *slog.Logger, key string, value []byte, rev int64) {
	r, err := decode(key, value, rev)
	if err != nil {
		log.Warn("audit: a record does not decode; skipped", "key", key, "revision", rev, "err", err)
		return
	}
	log.Info("operator action", r.LogArgs()...)
	if f.Observe != nil {
		f.Observe(r)
	}
}

// saveCursor records that the records up to rev were logged. A failure is
// logged: the next term logs those records again.
func (f *Follower) saveCursor(ctx context.Context, log *slog.Logger, rev int64) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := f.KV.Put(wctx, cursorKey, strconv.FormatInt(rev, 10)); err != nil && ctx.Err() == nil {
		log.Warn("audit: saving the log's place failed; the next scheduler may log some actions again", "err", err)
	}
}
