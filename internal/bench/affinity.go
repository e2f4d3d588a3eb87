package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
)

// The affinity run's shape, from issue 12: TTS engines cache one speaker's
// conditioning at a time, so a worker that gets the speaker of its
// previous task saves that work.
const (
	AffinitySidecars = 16
	AffinitySpeakers = 32
)

// affinity runs AffinitySidecars in-process sidecars, one consumer each,
// and drains FleetTasks tasks spread at random over AffinitySpeakers
// speakers three times on the same fleet: a warm-up, the tasks without
// affinity keys (the speaker only in the payload), and the same tasks with
// Spec.Affinity set to the speaker. Each consumer remembers its previous
// task's speaker; the hit share is the share of tasks (after a consumer's
// first) whose speaker was that one. Without keys it measures chance.
func (r *runner) affinity(ctx context.Context) (AffinityResult, error) {
	const name = "affinity"
	defer r.cleanup(context.Background(), name)
	ec := r.cfg.Etcd
	ec.Namespace = r.ns(name)
	f, err := startFleet(ctx, ec, r.dir, AffinitySidecars)
	if err != nil {
		return AffinityResult{}, err
	}
	tasks := r.cfg.FleetTasks
	// The same speakers in the same order for both runs.
	rng := rand.New(rand.NewPCG(12, 16))
	speakers := make([]string, tasks)
	for n := range speakers {
		speakers[n] = fmt.Sprintf("spk-%02d", rng.IntN(AffinitySpeakers))
	}
	res := AffinityResult{Sidecars: AffinitySidecars, Speakers: AffinitySpeakers, Tasks: tasks}
	err = r.onFleet(ctx, f, ec, func(w *workers) error {
		if _, err := r.drain(ctx, w, "w", min(tasks, 200), nil); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		without, err := r.drain(ctx, w, "n", tasks, func(n int) (string, bool) { return speakers[n], false })
		if err != nil {
			return fmt.Errorf("without affinity keys: %w", err)
		}
		with, err := r.drain(ctx, w, "a", tasks, func(n int) (string, bool) { return speakers[n], true })
		if err != nil {
			return fmt.Errorf("with affinity keys: %w", err)
		}
		res.HitShare = share(with.hits, with.followers)
		res.HitShareWithout = share(without.hits, without.followers)
		res.TasksPerS, res.TasksPerSWithout = with.tasksPerS, without.tasksPerS
		if without.tasksPerS > 0 {
			res.ThroughputRatio = round(with.tasksPerS/without.tasksPerS, 3)
		}
		res.Cost, res.CostWithout = with.cost, without.cost
		return nil
	})
	res.Load1 = loadAvg()[0]
	return res, err
}

func share(hits, of int) float64 {
	if of == 0 {
		return 0
	}
	return round(float64(hits)/float64(of), 3)
}
