package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/batonhq/baton/sidecar/configdoc"
)

// writeConfig changes the config document every 250ms until ctx ends,
// ignoring failures (etcd faults), and returns the revision of its last
// successful write.
func (r *run) writeConfig(ctx context.Context, cs *configdoc.Store) int64 {
	var last int64
	for n := 0; ctx.Err() == nil; n++ {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cs.Set(wctx, ConfigName, fmt.Appendf(nil, `{"seq":%d,"sample_rate":24000}`, n))
		cancel()
		if err == nil {
			last = d.Revision
			r.mu.Lock()
			r.configWrites++
			r.mu.Unlock()
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
	return last
}

// finalConfig writes the config once more after the faults (retrying until
// etcd takes it) and waits up to limit for every live worker to have seen
// it. It returns the final revision and the live workers.
func (r *run) finalConfig(ctx context.Context, cs *configdoc.Store, limit time.Duration) (int64, []string) {
	deadline := time.Now().Add(limit)
	var final int64
	for final == 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cs.Set(wctx, ConfigName, []byte(`{"seq":"final","sample_rate":24000}`))
		cancel()
		if err == nil {
			final = d.Revision
		} else {
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}
	var live []string
	r.mu.Lock()
	for _, s := range r.sidecars {
		for _, w := range s.workers {
			live = append(live, w.Name())
		}
	}
	r.mu.Unlock()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		seen := map[string]int64{}
		r.mu.Lock()
		for _, c := range r.configSeen {
			seen[c.Watcher] = max(seen[c.Watcher], c.Revision)
		}
		r.mu.Unlock()
		all := true
		for _, w := range live {
			all = all && seen[w] >= final
		}
		if all {
			break
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return final, live
}
