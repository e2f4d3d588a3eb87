package configdoc

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch calls send with the named document each time it changes, until ctx
// ends or send returns an error. It starts with the current version when
// that is newer than after (pass 0 to always get it). Revisions passed to
// send only rise. A document that does not exist yet is delivered when it is
// first set.
//
// Watch returns ctx's error when ctx ends and send's error when send fails.
// While etcd is unreachable it keeps retrying, on the store's clock: 50ms
// after the first failure, twice as long after each further one, up to
// 5s. A watch that ends after running for more than 5s is read again at
// once and the backoff starts over. It never returns on its own.
func (s *Store) Watch(ctx context.Context, name string, after int64, send func(Document) error) error {
	if err := ValidateName(name); err != nil {
		return &InvalidError{Field: "name", Err: err}
	}
	if after < 0 {
		return invalid("after_revision", "must not be negative")
	}
	last := after
	deliver := func(data []byte, rev int64) error {
		if rev <= last {
			return nil
		}
		last = rev
		return send(Document{Name: name, Data: data, Revision: rev})
	}
	backoff := 50 * time.Millisecond
	for {
		// Read the current version, then follow changes after that read.
		resp, err := s.kv.Get(ctx, configKey(name))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			select {
			case <-s.clock.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		if len(resp.Kvs) == 1 {
			if err := deliver(resp.Kvs[0].Value, resp.Kvs[0].ModRevision); err != nil {
				return err
			}
		}
		started := s.clock.Now()
		err = s.follow(ctx, name, resp.Header.Revision+1, deliver)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var sendErr *sendError
		if errors.As(err, &sendErr) {
			return sendErr.err
		}
		// The watch ended (compaction, leader loss, restart): read again,
		// at once if it had been running for a while.
		if s.clock.Since(started) > 5*time.Second {
			backoff = 50 * time.Millisecond
			continue
		}
		select {
		case <-s.clock.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// sendError carries the error of the caller's send through follow.
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }

// follow delivers the puts of the document's key from rev on, until the
// watch fails or ctx ends.
func (s *Store) follow(ctx context.Context, name string, rev int64, deliver func([]byte, int64) error) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.watcher.Watch(wctx, configKey(name), clientv3.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if err := deliver(ev.Kv.Value, ev.Kv.ModRevision); err != nil {
				return &sendError{err}
			}
		}
	}
	return errors.New("configdoc: watch closed")
}
