package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/registry"
	"github.com/batonhq/baton/sidecar/workqueue"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxTopics is the most topics sent in one message; more are sent as "*".
const maxTopics = 200

// watchedPrefixes are the prefixes followed besides task statuses, each
// with the topic its changes mark (config/ also marks "config:NAME").
var watchedPrefixes = []string{workqueue.PausePrefix, registry.Prefix, namedlock.PrefixLocks, namedlock.PrefixLockOwners, configdoc.Prefix, audit.Prefix}

func topicOf(prefix, key string) []string {
	switch prefix {
	case workqueue.PausePrefix:
		return []string{"queues"}
	case registry.Prefix:
		return []string{"workers"}
	case namedlock.PrefixLocks, namedlock.PrefixLockOwners:
		return []string{"locks"}
	case configdoc.Prefix:
		return []string{"config", "config:" + strings.TrimPrefix(key, prefix)}
	case audit.Prefix:
		return []string{"audit"}
	}
	return nil
}

// hub holds the live-update subscribers and the topics changed since the
// last flush. Safe for concurrent use.
type hub struct {
	max int

	mu     sync.Mutex
	subs   map[*subscriber]struct{} // written by subscribe, unsubscribe, close
	dirty  map[string]bool          // written by mark, taken by take
	closed bool
}

// subscriber is one page following live updates. ch is closed by the hub
// when it closes; lost (guarded by hub.mu) says a message was dropped
// because ch was full.
type subscriber struct {
	ch   chan []string
	lost bool
}

func newHub(max int) *hub {
	return &hub{max: max, subs: map[*subscriber]struct{}{}, dirty: map[string]bool{}}
}

// subscribe adds a subscriber; false when there are max already or the hub
// is closed.
func (h *hub) subscribe() (*subscriber, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.subs) >= h.max {
		return nil, false
	}
	s := &subscriber{ch: make(chan []string, 8)}
	h.subs[s] = struct{}{}
	return s, true
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
}

func (h *hub) mark(topics ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.dirty["*"] {
		return
	}
	for _, t := range topics {
		h.dirty[t] = true
	}
	if len(h.dirty) > maxTopics || h.dirty["*"] {
		h.dirty = map[string]bool{"*": true}
	}
}

// flush sends the dirty topics to every subscriber, without blocking.
func (h *hub) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.dirty) == 0 && !h.anyLost() {
		return
	}
	topics := make([]string, 0, len(h.dirty))
	for t := range h.dirty {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	h.dirty = map[string]bool{}
	for s := range h.subs {
		msg := topics
		if s.lost {
			msg = []string{"*"}
		}
		if len(msg) == 0 {
			continue
		}
		select {
		case s.ch <- msg:
			s.lost = false
		default:
			s.lost = true
		}
	}
}

func (h *hub) anyLost() bool {
	for s := range h.subs {
		if s.lost {
			return true
		}
	}
	return false
}

// close ends every subscription and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}

// follow watches one prefix from revision rev+1 (from now when rev is 0)
// and marks its topics, until ctx ends. A failed watch is watched again a
// second later from the revision after the last one it delivered, so no
// change is missed; after a compaction it watches from now and marks the
// prefix's topics, since changes may have been missed.
func (u *UI) follow(ctx context.Context, prefix string, rev int64) {
	retry := u.cfg.Clock.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.Chan():
		}
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range u.cfg.Watcher.Watch(wctx, prefix, opts...) {
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					rev = 0
					u.hub.mark(topicOf(prefix, prefix)...)
				}
				break
			}
			for _, ev := range resp.Events {
				u.hub.mark(topicOf(prefix, string(ev.Kv.Key))...)
			}
			if resp.Header.Revision > rev {
				rev = resp.Header.Revision
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		retry.Reset(time.Second)
	}
}

// flushLoop sends the dirty topics every FlushInterval and samples the
// batches' progress for their rates every second, until ctx ends.
func (u *UI) flushLoop(ctx context.Context) {
	t := u.cfg.Clock.NewTicker(u.cfg.FlushInterval)
	defer t.Stop()
	var lastSample time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if now := u.cfg.Clock.Now(); now.Sub(lastSample) >= time.Second && u.tally.Ready() {
			lastSample = now
			u.rates.sample(now, u.tally.Batches())
		}
		u.hub.flush()
	}
}

// events serves the live updates as server-sent events: one "message"
// per flush whose data is the JSON array of changed topics, and a comment
// every 15s to keep proxies from closing the stream.
func (u *UI) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	s, ok := u.hub.subscribe()
	if !ok {
		w.Header().Set("Retry-After", "10")
		http.Error(w, fmt.Sprintf("too many pages follow live updates (at most %d); close one or reload later", u.hub.max), http.StatusServiceUnavailable)
		return
	}
	defer u.hub.unsubscribe(s)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\nevent: hello\ndata: {}\n\n")
	fl.Flush()
	ping := u.cfg.Clock.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.Chan():
			fmt.Fprint(w, ": ping\n\n")
		case topics, ok := <-s.ch:
			if !ok {
				return // the page is stopping
			}
			b, _ := json.Marshal(topics)
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		fl.Flush()
	}
}
