package workqueue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Admission control: etcd refuses every write, for the whole fleet, once
// its database reaches its quota (the NOSPACE alarm), until an operator
// compacts, defragments and disarms it. Submit is the only write whose
// volume the fleet does not control, so Submit alone is refused, with
// ErrQuota's numbers, once etcd's database size passes a high-water mark
// of the quota; claims, answers, heartbeats and locks go on, with the
// rest of the quota as their headroom.
//
// etcd's Status RPC reports the database size but not the quota, so the
// quota is configured (--etcd-quota-bytes, the members'
// --quota-backend-bytes). The size is read at most every
// AdmissionConfig.Refresh, only when a Submit asks, and between two reads
// the bytes this process submitted are added to it as an estimate, so that
// a burst of submits cannot overshoot by a refresh interval's worth.

// Defaults of AdmissionConfig.
const (
	// DefaultQuotaBytes is etcd's default --quota-backend-bytes (2 GiB).
	DefaultQuotaBytes = 2 << 30
	// DefaultSubmitHighWater is the fraction of the quota past which
	// Submit is refused: the last 20% is headroom for the writes of the
	// tasks already in etcd (a claim and an answer each write a few
	// records, kept until compaction) and for locks and config.
	DefaultSubmitHighWater = 0.8
	// DefaultAdmissionRefresh is how old the database size read from etcd
	// may be before a Submit reads it again.
	DefaultAdmissionRefresh = 5 * time.Second
)

// QuotaError is Submit's refusal while etcd's database is above the
// high-water mark of its quota. The server maps it to RESOURCE_EXHAUSTED.
type QuotaError struct {
	DBSize    int64   // etcd's database size, bytes (the largest of its members)
	Quota     int64   // the quota, bytes
	HighWater float64 // the fraction of Quota past which Submit is refused
	Pending   int64   // tasks waiting (ready or delayed); -1 when not counted
	Cost      int64   // estimated bytes of the refused submit
	NoSpace   bool    // etcd has raised its NOSPACE alarm
}

func (e *QuotaError) Error() string {
	pending := "an unknown number of"
	if e.Pending >= 0 {
		pending = fmt.Sprint(e.Pending)
	}
	why := fmt.Sprintf("etcd's database is %s of its %s quota (%.0f%%), %s tasks pending; submits stop at %.0f%%, and this one would add about %s",
		FormatBytes(e.DBSize), FormatBytes(e.Quota), 100*float64(e.DBSize)/float64(max(e.Quota, 1)), pending, 100*e.HighWater, FormatBytes(e.Cost))
	if e.NoSpace {
		why = "etcd has raised its NOSPACE alarm (" + why + ")"
	}
	return "submit refused: " + why + ": let workers finish pending tasks, or raise etcd's --quota-backend-bytes and --etcd-quota-bytes"
}

// FormatBytes prints n bytes in MB (10^6) with one decimal, or in GB past
// 10 GB.
func FormatBytes(n int64) string {
	if n >= 10e9 {
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// AdmissionConfig configures an Admission. Zero values mean the defaults.
type AdmissionConfig struct {
	// Maintenance answers Status; Endpoints are the members to ask (the
	// largest database counts: etcd's quota applies to each member).
	Maintenance clientv3.Maintenance
	Endpoints   []string
	// QuotaBytes is etcd's --quota-backend-bytes. Default
	// DefaultQuotaBytes.
	QuotaBytes int64
	// HighWater is the fraction of QuotaBytes past which Submit is
	// refused, in (0, 1]. Default DefaultSubmitHighWater.
	HighWater float64
	// Refresh bounds the age of the database size Submit decides on.
	// Default DefaultAdmissionRefresh.
	Refresh time.Duration
	// Clock ages the cached database size, as Config.Clock does for the
	// store. Default the wall clock.
	Clock clockwork.Clock
}

// Admission decides whether a Submit fits under etcd's quota. It is safe
// for concurrent use; it starts no goroutine.
type Admission struct {
	cfg AdmissionConfig

	mu      sync.Mutex
	size    int64     // the database size last read, plus what was admitted since
	noSpace bool      // the NOSPACE alarm was raised at the last read
	readAt  time.Time // when size was read; zero: never
}

// NewAdmission returns an Admission; it reads nothing until asked.
func NewAdmission(cfg AdmissionConfig) (*Admission, error) {
	if cfg.QuotaBytes < 0 {
		return nil, invalid("etcd-quota-bytes", "must not be negative")
	}
	if cfg.HighWater < 0 || cfg.HighWater > 1 {
		return nil, invalid("HighWater", "%v is outside (0, 1]", cfg.HighWater)
	}
	if cfg.QuotaBytes == 0 {
		cfg.QuotaBytes = DefaultQuotaBytes
	}
	if cfg.HighWater == 0 {
		cfg.HighWater = DefaultSubmitHighWater
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultAdmissionRefresh
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Admission{cfg: cfg}, nil
}

// Quota returns the configured quota in bytes.
func (a *Admission) Quota() int64 { return a.cfg.QuotaBytes }

// DBSize returns etcd's database size (the largest member's), read again
// if the last read is older than the refresh interval. Cancelling ctx
// abandons the read.
func (a *Admission) DBSize(ctx context.Context) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.refresh(ctx); err != nil {
		return 0, err
	}
	return a.size, nil
}

// refresh reads the database size unless the last read is recent. Called
// with mu held: concurrent submits wait for one read.
func (a *Admission) refresh(ctx context.Context) error {
	now := a.cfg.Clock.Now()
	if !a.readAt.IsZero() && now.Sub(a.readAt) < a.cfg.Refresh {
		return nil
	}
	var size int64
	noSpace := false
	for _, ep := range a.cfg.Endpoints {
		st, err := a.cfg.Maintenance.Status(ctx, ep)
		if err != nil {
			return fmt.Errorf("reading etcd's database size from %s: %w", ep, err)
		}
		size = max(size, st.DbSize)
		for _, e := range st.Errors {
			noSpace = noSpace || strings.Contains(e, "NOSPACE")
		}
	}
	a.size, a.noSpace, a.readAt = size, noSpace, now
	return nil
}

// admit reports whether a submit of about cost bytes fits below the
// high-water mark, and counts it in the estimate until the next read.
// pending counts the tasks waiting, for the refusal's message.
func (a *Admission) admit(ctx context.Context, cost int64, pending func(context.Context) (int64, error)) error {
	a.mu.Lock()
	if err := a.refresh(ctx); err != nil {
		a.mu.Unlock()
		return err
	}
	limit := int64(a.cfg.HighWater * float64(a.cfg.QuotaBytes))
	if !a.noSpace && a.size+cost <= limit {
		a.size += cost
		a.mu.Unlock()
		return nil
	}
	qe := &QuotaError{DBSize: a.size, Quota: a.cfg.QuotaBytes, HighWater: a.cfg.HighWater, Cost: cost, NoSpace: a.noSpace, Pending: -1}
	a.mu.Unlock()
	if n, err := pending(ctx); err == nil {
		qe.Pending = n
	}
	return qe
}

// submitCost estimates the etcd database bytes one spec adds while
// pending (see docs/performance.md, bytes per task), rounded up.
func submitCost(sp *Spec) int64 {
	return int64(2*(len(sp.Payload)+len(sp.Affinity)+labelsLen(sp.Require)+len(sp.Traceparent)) + 1024)
}

// PendingCount counts the tasks waiting to be handed out: ready or
// delayed (waiting for not_before or a retry's backoff).
func (s *Store) PendingCount(ctx context.Context) (int64, error) {
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(prefixReady, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(prefixDelay, clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return 0, err
	}
	return resp.Responses[0].GetResponseRange().Count + resp.Responses[1].GetResponseRange().Count, nil
}

// DefaultMaxPending is the default of `baton submit --max-pending` for a
// file whose payloads average avgPayload bytes, with etcd's quota
// quotaBytes: the pending tasks of one file may take a fifth of the quota,
// at about 450 + 1.2·payload bytes each (docs/performance.md, bytes per
// task: 594 measured for a traced 246-byte line in a batch, 520 without;
// the estimate is kept on the safe side). The rest is for
// the tasks of other batches, finished tasks within their retention, the
// history written until the next compaction, and the 20% that admission
// control keeps. 2 GiB and 250-byte payloads: about 572,000.
func DefaultMaxPending(quotaBytes int64, avgPayload int) int {
	if quotaBytes <= 0 {
		quotaBytes = DefaultQuotaBytes
	}
	return max(1, int(0.2*float64(quotaBytes)/(450+1.2*float64(max(avgPayload, 0)))))
}
