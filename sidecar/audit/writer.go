package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Retention defaults.
const (
	// DefaultKeep is how many records are kept at most.
	DefaultKeep = 10_000
	// DefaultMaxAge is how long a record is kept at most.
	DefaultMaxAge = 90 * 24 * time.Hour
)

// WriterConfig says who acts and how long records are kept.
type WriterConfig struct {
	// Actor is who does the actions written (LocalActor for the running
	// process).
	Actor Actor
	// Keep bounds the records kept: writing one deletes the oldest past
	// it. Default DefaultKeep.
	Keep int
	// MaxAge bounds how long a record is kept: writing one deletes the
	// records older than this, by their writers' clocks. Default
	// DefaultMaxAge.
	MaxAge time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Writer makes the operations that record an action. It is safe for
// concurrent use.
type Writer struct {
	kv  clientv3.KV
	cfg WriterConfig
}

// NewWriter returns a writer of records on kv, which must be the
// deployment's namespaced client.
func NewWriter(kv clientv3.KV, cfg WriterConfig) (*Writer, error) {
	switch {
	case cfg.Keep < 0:
		return nil, errors.New("audit: keep: must not be negative")
	case cfg.MaxAge < 0:
		return nil, errors.New("audit: max age: must not be negative")
	}
	if cfg.Keep == 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &cfg.Actor
	a.User, a.Host, a.EtcdUser, a.Via = clip(a.User), clip(a.Host), clip(a.EtcdUser), clip(a.Via)
	return &Writer{kv: kv, cfg: cfg}, nil
}

// Ops returns the operations that record action on object: the put of
// the record and the deletion of records past retention. Put them in the
// Then branch of the transaction that does the action, so that the record
// is written exactly when the action is. Ops reads how many records there
// are (and, when too many, the oldest keys); cancelling ctx cancels the
// read.
func (w *Writer) Ops(ctx context.Context, action Action, object, detail string) ([]clientv3.Op, error) {
	now := w.cfg.Now()
	var b [4]byte
	_, _ = rand.Read(b[:])
	key := recordKey(now, hex.EncodeToString(b[:]))
	val, err := json.Marshal(Record{TimeMS: now.UnixMilli(), Action: action, Object: clip(object), Detail: clip(detail), Actor: w.cfg.Actor})
	if err != nil {
		return nil, err
	}
	ops := []clientv3.Op{clientv3.OpPut(key, string(val))}
	end, err := w.trimEnd(ctx, now)
	if err != nil {
		return nil, err
	}
	// The deletion never reaches the new key (a writer whose clock is
	// behind the others' skips the trim; the next writer does it): etcd
	// refuses a transaction that puts and deletes the same key.
	if end > Prefix {
		ops = append(ops, clientv3.OpDelete(Prefix, clientv3.WithRange(min(end, key))))
	}
	return ops, nil
}

// trimEnd returns where the deletion of records past retention ends
// (exclusive): past every record older than MaxAge, and past the oldest
// records beyond Keep once one more is written. Prefix: nothing to trim.
func (w *Writer) trimEnd(ctx context.Context, now time.Time) (string, error) {
	end := recordKey(now.Add(-w.cfg.MaxAge), "")
	resp, err := w.kv.Get(ctx, Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return "", err
	}
	if excess := resp.Count + 1 - int64(w.cfg.Keep); excess > 0 {
		old, err := w.kv.Get(ctx, Prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(excess))
		if err != nil {
			return "", err
		}
		if n := len(old.Kvs); n > 0 {
			end = max(end, string(old.Kvs[n-1].Key)+"\x00")
		}
	}
	return end, nil
}
