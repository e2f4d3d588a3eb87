package workqueue

import "testing"

// The default --max-pending of baton submit: a fifth of the quota at
// 450 + 1.2·P bytes a task, and never 0.
func TestDefaultMaxPending(t *testing.T) {
	for _, tc := range []struct {
		quota int64
		avg   int
		want  int
	}{
		{2 << 30, 250, 572_662},    // etcd's default quota, GLM-TTS lines
		{8 << 30, 250, 2_290_649},  // etcd's largest suggested quota
		{2 << 30, 64 << 10, 5_430}, // payloads at the limit
		{0, 250, 572_662},          // no quota given: etcd's default
		{1, 250, 1},                // never 0: feeding would never start
		{2 << 30, -5, 954_437},     // a negative average counts as 0
	} {
		if got := DefaultMaxPending(tc.quota, tc.avg); got != tc.want {
			t.Errorf("DefaultMaxPending(%d, %d) = %d, want %d", tc.quota, tc.avg, got, tc.want)
		}
	}
}
