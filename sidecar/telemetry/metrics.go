package telemetry

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is one sidecar's Prometheus metrics, on a registry of its own
// (never the default registry). Every method is safe for concurrent use and
// does nothing on a nil *Metrics, so code can take one optionally.
//
// Labels are bounded: queue names (chosen by the operator), the fixed sets
// of workqueue.Reason, workqueue.Outcome, namedlock.Outcome, ScopedRPC and
// audit.Action (plus "other"), depth states and etcd's gRPC method names.
// Task ids, lock names and worker ids never
// label a metric.
type Metrics struct {
	reg *prometheus.Registry

	claimed, completed, dead, conflicts *prometheus.CounterVec // queue
	failed, requeued                    *prometheus.CounterVec // queue, reason
	dispatch                            *prometheus.HistogramVec
	run                                 *prometheus.HistogramVec // queue, outcome
	depth                               *prometheus.GaugeVec     // queue, state
	lockWait                            *prometheus.HistogramVec // outcome
	etcdRTT                             *prometheus.HistogramVec // method, outcome
	keepaliveFailures                   prometheus.Counter
	scopeDenied                         *prometheus.CounterVec // rpc
	operatorActions                     *prometheus.CounterVec // action

	created       time.Time
	lastKeepalive atomic.Int64 // Unix ns of the last keepalive response
}

// MetricsConfig describes the process in baton_build_info.
type MetricsConfig struct {
	// Version is the build's version.
	Version string
}

// Depth states: the state label of baton_queue_depth_tasks.
const (
	DepthPending = "pending" // ready to be claimed now
	DepthDelayed = "delayed" // FAILED waiting for its backoff, or held back by not_before
	DepthClaimed = "claimed" // claimed by some worker
)

// NewMetrics returns the metrics of one sidecar on a new registry, with the
// Go runtime and process collectors.
func NewMetrics(cfg MetricsConfig) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), created: time.Now()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.reg.MustRegister(v)
		return v
	}
	m.claimed = counter("baton_queue_tasks_claimed_total", "Tasks claimed by this sidecar's workers.", "queue")
	m.completed = counter("baton_queue_tasks_completed_total", "Tasks completed (Complete accepted) through this sidecar.", "queue")
	m.failed = counter("baton_queue_tasks_failed_total",
		"Failed attempts recorded by this sidecar, by reason: error (the worker called Fail), session_closed, timeout (no heartbeat), lease_expired.", "queue", "reason")
	m.requeued = counter("baton_queue_tasks_requeued_total",
		"Tasks this sidecar put back to wait for another attempt, by reason: error (retry after backoff), session_closed, timeout, lease_expired, released, shutdown, unknown_outcome.", "queue", "reason")
	m.dead = counter("baton_queue_tasks_dead_total", "Tasks this sidecar marked DEAD (permanent failure or last attempt failed).", "queue")
	m.conflicts = counter("baton_queue_claim_conflicts_total", "Claim transactions of this sidecar that lost to another claimer.", "queue")
	m.dispatch = histogram("baton_queue_dispatch_latency_seconds",
		"How long a task was ready (PENDING and due) before this sidecar claimed it.", prometheus.ExponentialBuckets(0.005, 4, 12), "queue")
	m.run = histogram("baton_queue_task_run_seconds",
		"How long claims made by this sidecar were held, from claim to answer or loss, by outcome: completed, failed, released, lost.",
		prometheus.ExponentialBuckets(0.1, 3, 12), "queue", "outcome")
	m.depth = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "baton_queue_depth_tasks",
		Help: "Tasks of the queue by state (pending, delayed, claimed), sampled periodically from etcd by the elected scheduler only (a sidecar whose term ended reports 0, the others nothing): take the max over sidecars."},
		[]string{"queue", "state"})
	m.reg.MustRegister(m.depth)
	m.lockWait = histogram("baton_lock_wait_seconds",
		"How long Lock and TryLock calls waited, by outcome: acquired, timeout, busy, cancelled, error.", prometheus.ExponentialBuckets(0.001, 4, 12), "outcome")
	m.etcdRTT = histogram("baton_etcd_round_trip_seconds",
		"Round-trip time of this sidecar's unary etcd requests (each attempt), by gRPC method and outcome (ok, error).",
		prometheus.ExponentialBuckets(0.0005, 2, 14), "method", "outcome")
	m.keepaliveFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_lease_keepalive_failures_total",
		Help: "Times the lease keepalive stream to etcd failed (broke or could not be opened); the etcd client reopens it."})
	m.reg.MustRegister(m.keepaliveFailures)
	m.scopeDenied = counter("baton_socket_queue_denied_total",
		"Socket calls refused (PERMISSION_DENIED) because they named a queue out of this sidecar's scope, by rpc: Next (a queue it does not serve, --queue), Submit (a queue it may not submit to, --submit-queue). Each is logged with the queue and the caller's uid and pid.", "rpc")
	for _, r := range ScopedRPCs {
		m.scopeDenied.WithLabelValues(string(r))
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "baton_lease_keepalive_age_seconds",
		Help: "Seconds since etcd last confirmed the sidecar's lease (a keepalive response); it climbs past the TTL/3 keepalive interval when keepalives fail."},
		m.keepaliveAge))
	for _, o := range namedlock.Outcomes {
		m.lockWait.WithLabelValues(string(o))
	}
	m.operatorActions = counter("baton_operator_actions_total",
		"Operator actions (baton tasks cancel|retry, queues pause|resume, config set) this sidecar logged as the scheduler, by action; \"other\" for an action this build does not know. Sum over the fleet.", "action")
	for _, a := range audit.Actions {
		m.operatorActions.WithLabelValues(string(a))
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "baton_build_info", Help: "Always 1; labelled with the build's version."}, []string{"version", "go_version"})
	build.WithLabelValues(cfg.Version, runtime.Version()).Set(1)
	m.reg.MustRegister(build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry holding every metric of the sidecar.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Queues creates the series of the given queues at zero, so that rates and
// dashboards show them before their first event.
func (m *Metrics) Queues(queues ...string) {
	if m == nil {
		return
	}
	for _, q := range queues {
		m.claimed.WithLabelValues(q)
		m.completed.WithLabelValues(q)
		m.dead.WithLabelValues(q)
		m.conflicts.WithLabelValues(q)
		m.dispatch.WithLabelValues(q)
		for _, r := range workqueue.FailReasons {
			m.failed.WithLabelValues(q, string(r))
		}
		for _, r := range workqueue.Reasons {
			m.requeued.WithLabelValues(q, string(r))
		}
		for _, o := range workqueue.Outcomes {
			m.run.WithLabelValues(q, string(o))
		}
	}
}

// ScopedRPC is a socket call that names queues and is refused for a queue
// out of the sidecar's scope: the rpc label of
// baton_socket_queue_denied_total.
type ScopedRPC string

// The scoped calls.
const (
	ScopedNext   ScopedRPC = "Next"
	ScopedSubmit ScopedRPC = "Submit"
)

// ScopedRPCs are every ScopedRPC.
var ScopedRPCs = []ScopedRPC{ScopedNext, ScopedSubmit}

// ScopeDenied counts a call refused because it named a queue out of the
// sidecar's scope.
func (m *Metrics) ScopeDenied(rpc ScopedRPC) {
	if m == nil {
		return
	}
	m.scopeDenied.WithLabelValues(string(rpc)).Inc()
}

// SidecarStats are the live counts the sidecar's parts keep themselves;
// Watch exposes them as metrics read at scrape time. Nil functions are
// left out.
type SidecarStats struct {
	// ClaimsHeld: claims this sidecar holds now.
	ClaimsHeld func() int
	// SessionsOpen: sessions (Attach streams, one per attached process of
	// the worker) open now.
	SessionsOpen func() int
	// SessionsOpened: sessions opened since the start.
	SessionsOpened func() int64
	// LeaseLost: leases that expired (or were revoked by someone else)
	// while the sidecar ran.
	LeaseLost func() int64
	// LeaseGrantFailures: failed attempts to grant a lease.
	LeaseGrantFailures func() int64
	// Scheduler: 1 while this sidecar is the fleet's elected scheduler.
	Scheduler func() int
	// SchedulerTerms: times this sidecar was elected scheduler.
	SchedulerTerms func() int64
	// Assigned: tasks this sidecar assigned as the scheduler.
	Assigned func() int64
	// Connections: socket connections open now.
	Connections func() int
	// ConnsRefused: socket connections closed at accept (the limit was
	// reached).
	ConnsRefused func() int64
	// ConnsDenied: socket connections closed because their user is not
	// allowed.
	ConnsDenied func() int64
	// AnswersRefused: answers refused because their claim is not live on
	// this sidecar.
	AnswersRefused func() int64
	// Malformed: ready entries skipped because they do not parse.
	Malformed func() int64
	// EtcdDBSize: etcd's database size in bytes (read at most every few
	// seconds, plus the submits admitted since); EtcdQuota: the quota it
	// is held against (--etcd-quota-bytes).
	EtcdDBSize func() int64
	EtcdQuota  func() int64
}

// Watch registers the metrics read from s at scrape time. Call it once per
// Metrics.
func (m *Metrics) Watch(s SidecarStats) error {
	if m == nil {
		return nil
	}
	var cs []prometheus.Collector
	gauge := func(name, help string, f func() int) {
		if f != nil {
			cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
		}
	}
	count := func(name, help string, f func() int64) {
		if f != nil {
			cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
		}
	}
	gauge("baton_queue_held_tasks", "Claims this sidecar holds now (tasks in its workers' hands).", s.ClaimsHeld)
	gauge("baton_worker_sessions", "Sessions of this sidecar's worker open now: one open Attach stream per attached process.", s.SessionsOpen)
	count("baton_worker_attaches_total", "Sessions (Attach streams of the worker's processes) opened on this sidecar.", s.SessionsOpened)
	count("baton_lease_lost_total", "Leases of this sidecar that expired because keepalives did not reach etcd within the TTL (or were revoked by someone else); their claims were returned by other sidecars.", s.LeaseLost)
	count("baton_lease_grant_failures_total", "Failed attempts of this sidecar to be granted a lease (etcd unreachable).", s.LeaseGrantFailures)
	gauge("baton_scheduler_leader", "1 while this sidecar is the fleet's elected scheduler (exactly one sidecar should be).", s.Scheduler)
	count("baton_scheduler_terms_total", "Times this sidecar was elected the fleet's scheduler.", s.SchedulerTerms)
	gauge("baton_socket_connections", "Connections open on the sidecar's socket now.", s.Connections)
	count("baton_queue_malformed_entries_total", "Ready entries this sidecar, as the scheduler, skipped because their key or value does not parse (each is logged with its key).", s.Malformed)
	count("baton_claim_answers_refused_total", "Answers (Complete, Fail, Release, Heartbeat) refused because the claim they name is not live on this sidecar: stale (lost with the lease, expired, claimed again), another sidecar's, or guessed. Each is logged with the caller.", s.AnswersRefused)
	count("baton_socket_connections_denied_total", "Connections to the sidecar's socket closed because their user (peer credentials) is not allowed by --allow-uid/--allow-gid.", s.ConnsDenied)
	count("baton_socket_connections_refused_total", "Connections to the sidecar's socket closed at once because --max-connections were open.", s.ConnsRefused)
	count("baton_scheduler_assigned_total", "Tasks this sidecar assigned to waiting workers as the scheduler.", s.Assigned)
	gauge64 := func(name, help string, f func() int64) {
		if f != nil {
			cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f()) }))
		}
	}
	gauge64("baton_etcd_db_size_bytes", "etcd's database size (the largest member's, as Status reports it, read at most every 5s), against which Submit's admission control holds the quota.", s.EtcdDBSize)
	gauge64("baton_etcd_quota_bytes", "etcd's quota (--etcd-quota-bytes, the members' --quota-backend-bytes): Submit is refused past 80% of it.", s.EtcdQuota)
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *Metrics) keepaliveAge() float64 {
	last := m.lastKeepalive.Load()
	if last == 0 {
		return time.Since(m.created).Seconds()
	}
	return time.Since(time.Unix(0, last)).Seconds()
}

// OperatorAction counts an operator action logged by this sidecar (the
// scheduler's audit.Follower).
func (m *Metrics) OperatorAction(a audit.Action) {
	if m == nil {
		return
	}
	label := string(a)
	if !a.Known() {
		label = "other"
	}
	m.operatorActions.WithLabelValues(label).Inc()
}

// The workqueue.Observer methods.

var _ workqueue.Observer = (*Metrics)(nil)

// TaskClaimed implements workqueue.Observer.
func (m *Metrics) TaskClaimed(queue string, waited time.Duration) {
	if m == nil {
		return
	}
	m.claimed.WithLabelValues(queue).Inc()
	m.dispatch.WithLabelValues(queue).Observe(waited.Seconds())
}

// ClaimConflict implements workqueue.Observer.
func (m *Metrics) ClaimConflict(queue string) {
	if m == nil {
		return
	}
	m.conflicts.WithLabelValues(queue).Inc()
}

// TaskCompleted implements workqueue.Observer.
func (m *Metrics) TaskCompleted(queue string) {
	if m == nil {
		return
	}
	m.completed.WithLabelValues(queue).Inc()
}

// TaskFailed implements workqueue.Observer.
func (m *Metrics) TaskFailed(queue string, reason workqueue.Reason) {
	if m == nil {
		return
	}
	m.failed.WithLabelValues(queue, string(reason)).Inc()
}

// TaskRequeued implements workqueue.Observer.
func (m *Metrics) TaskRequeued(queue string, reason workqueue.Reason) {
	if m == nil {
		return
	}
	m.requeued.WithLabelValues(queue, string(reason)).Inc()
}

// TaskDead implements workqueue.Observer.
func (m *Metrics) TaskDead(queue string) {
	if m == nil {
		return
	}
	m.dead.WithLabelValues(queue).Inc()
}

// ClaimEnded implements workqueue.Observer.
func (m *Metrics) ClaimEnded(queue string, outcome workqueue.Outcome, held time.Duration) {
	if m == nil {
		return
	}
	m.run.WithLabelValues(queue, string(outcome)).Observe(held.Seconds())
}

// QueueDepth implements workqueue.Observer.
func (m *Metrics) QueueDepth(queue string, pending, delayed, claimed int64) {
	if m == nil {
		return
	}
	m.depth.WithLabelValues(queue, DepthPending).Set(float64(pending))
	m.depth.WithLabelValues(queue, DepthDelayed).Set(float64(delayed))
	m.depth.WithLabelValues(queue, DepthClaimed).Set(float64(claimed))
}
