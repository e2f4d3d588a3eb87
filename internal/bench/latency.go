package bench

import (
	"slices"
	"time"
)

// latencies collects durations; each worker owns one and the results are
// merged when the workers are done, so recording needs no lock.
type latencies []time.Duration

func (l *latencies) add(d time.Duration) { *l = append(*l, d) }

func merge(ls []latencies) latencies {
	var all latencies
	for _, l := range ls {
		all = append(all, l...)
	}
	return all
}

// quantile returns the q-quantile (0 < q ≤ 1) in milliseconds by the
// nearest-rank method, or 0 when l is empty. It sorts l.
func (l latencies) quantile(q float64) float64 {
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	i := int(q*float64(len(l))+0.5) - 1
	i = min(max(i, 0), len(l)-1)
	return ms(l[i])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
