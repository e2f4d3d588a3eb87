package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/client"
	"github.com/batonhq/baton/sidecar/etcdconn"
)

// fleet is n sidecars running inside the bench process, each a real
// sidecar.New + Run with its own etcd client, lease, watch and Unix
// socket, and no admin server: the deployed shape (one sidecar per
// worker) at a size that fits on a laptop. The bench process's CPU time is
// then the fleet's and its consumers'; etcd runs elsewhere.
//
// The fleet owns the goroutines that run the sidecars; stop ends them.
type fleet struct {
	scs     []*sidecar.Sidecar
	sockets []string
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu   sync.Mutex
	errs []error // what Run returned, written by the sidecars' goroutines
}

// fleetWave is how many sidecars start at once: each grants a lease,
// registers and sweeps as it starts.
const fleetWave = 64

// startFleet starts n sidecars in namespace ec.Namespace with sockets in
// dir, and waits until all serve (at most a minute for each wave). On
// error it stops the ones it started.
func startFleet(ctx context.Context, ec etcdconn.Config, dir string, n int) (*fleet, error) {
	runCtx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel}
	for wave := 0; wave < n; wave += fleetWave {
		exited := make(chan int, fleetWave)
		for i := wave; i < min(n, wave+fleetWave); i++ {
			socket := filepath.Join(dir, fmt.Sprintf("f%d.sock", i))
			sc, err := sidecar.New(sidecar.Config{
				Etcd: ec, Socket: socket, Queues: []string{queue},
				WorkerID: fmt.Sprintf("fleet-%d", i), Grace: time.Second,
			})
			if err != nil {
				f.stop()
				return nil, err
			}
			f.scs, f.sockets = append(f.scs, sc), append(f.sockets, socket)
			f.wg.Go(func() {
				err := sc.Run(runCtx)
				f.mu.Lock()
				if err != nil {
					f.errs = append(f.errs, fmt.Errorf("sidecar fleet-%d: %w", i, err))
				}
				f.mu.Unlock()
				exited <- i
			})
		}
		deadline := time.NewTimer(time.Minute)
		for i := wave; i < len(f.scs); i++ {
			select {
			case <-f.scs[i].Ready():
			case j := <-exited:
				deadline.Stop()
				return nil, errors.Join(fmt.Errorf("sidecar fleet-%d stopped while starting", j), f.stop())
			case <-deadline.C:
				return nil, errors.Join(fmt.Errorf("sidecar fleet-%d not serving within a minute", i), f.stop())
			case <-ctx.Done():
				deadline.Stop()
				return nil, errors.Join(ctx.Err(), f.stop())
			}
		}
		deadline.Stop()
	}
	return f, nil
}

// claimStats sums the dispatcher counters of the fleet's sidecars.
func (f *fleet) claimStats() (claims, conflicts int64) {
	for _, sc := range f.scs {
		if d := sc.Dispatcher(); d != nil {
			st := d.Stats()
			claims += st.Claims
			conflicts += st.Conflicts
		}
	}
	return claims, conflicts
}

// clients returns one client per sidecar, as a worker process beside it
// would have.
func (f *fleet) clients() []*client.Client {
	cs := make([]*client.Client, len(f.sockets))
	for i, s := range f.sockets {
		cs[i] = client.New(s)
	}
	return cs
}

// stop shuts every sidecar down (at once) and returns what their Runs
// returned. Calling it again returns the same.
func (f *fleet) stop() error {
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}
