package workqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/batonhq/baton/sidecar/audit"
	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Errors returned by the Store and the Dispatcher. The socket server maps
// them to Connect codes.
var (
	// ErrClaimLost: the claim is stale or finished (the lease lapsed, the
	// task was claimed again, or it was already completed).
	ErrClaimLost = errors.New("workqueue: claim lost or already finished")
	// ErrDraining: the sidecar is shutting down and hands out no work.
	ErrDraining = errors.New("workqueue: sidecar is shutting down")
)

// InvalidError is bad input; Field names what is wrong (for example
// "tasks[3].payload").
type InvalidError struct {
	Field string
	Err   error
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(field string, format string, args ...any) error {
	return &InvalidError{Field: field, Err: fmt.Errorf(format, args...)}
}

// DefaultResultLimit is the default Config.ResultLimit: a result is a
// small JSON object (a path or URI of the output, its duration, a note),
// never the output itself.
const DefaultResultLimit = 4 << 10

// Config holds the settings of the work queue. The zero value of each field
// means its documented default.
type Config struct {
	// PayloadLimit is the largest payload, in bytes. Default 64 KiB.
	PayloadLimit int
	// ResultLimit is the largest result of Complete, in bytes (its JSON
	// encoding). Default DefaultResultLimit (4 KiB): etcd holds
	// coordination, not outputs; a worker writes its output to a file or
	// object storage and returns its path or URI.
	ResultLimit int
	// MaxTxnOps is the most operations one etcd transaction may carry; it
	// must not exceed the server's --max-txn-ops. Default 128.
	MaxTxnOps int
	// MaxTxnBytes bounds the size of one submit transaction; it must stay
	// under the server's --max-request-bytes. Default 1 MiB.
	MaxTxnBytes int
	// DefaultMaxAttempts applies to tasks submitted without one. Default 3.
	DefaultMaxAttempts int32
	// DefaultTimeout is how long a claim may go without a heartbeat when the
	// task does not say. Default 5m.
	DefaultTimeout time.Duration
	// BackoffBase and BackoffMax bound the retry delay: attempt n waits
	// about BackoffBase*2^(n-1), at most BackoffMax, with jitter. Defaults
	// 1s and 5m.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Retention is how long DONE, DEAD and CANCELLED tasks are kept.
	// Default 24h.
	Retention time.Duration
	// Window is how many ready entries per queue the scheduler keeps in
	// memory to choose among (for priority, labels and affinity). Default
	// 512.
	Window int
	// AffinityWait is the longest a task waits because the workers free
	// to take it prefer tasks whose affinity key they hold: past it, the
	// oldest task of the highest priority goes first. Default 5s.
	AffinityWait time.Duration
	// SweepInterval is how often the scheduler looks for orphaned claims,
	// claims past their deadline and finished tasks past retention.
	// Default 10s.
	SweepInterval time.Duration
	// ExpiryGrace is how long past its deadline a claim held by another
	// sidecar must be before this sidecar expires it (clock skew and the
	// holder's own timer get the first chance). Default 5s.
	ExpiryGrace time.Duration
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Clock is the one clock of the store and the dispatcher: the times
	// written into tasks, deadlines, backoffs, the scheduler's timers and
	// the background duties' intervals. Default: the wall clock. The
	// deadlines of single etcd calls are real time whatever the clock.
	Clock clockwork.Clock
	// Observer is told what the dispatcher does, for metrics. Default:
	// none.
	Observer Observer
	// DepthInterval is how often the dispatcher samples the depth of its
	// queues for Observer.QueueDepth (one etcd transaction per sample).
	// Default 15s; unused without an Observer.
	DepthInterval time.Duration
	// TracerProvider makes the dispatcher's spans (claim, requeue, answers).
	// Default: a no-op provider.
	TracerProvider trace.TracerProvider
	// Audit, when set, records the operator's actions (Cancel, Retry,
	// Pause, Resume) in the transaction that does each: an action that
	// changes nothing, or whose compare fails, writes no record. Default:
	// none (the baton CLI always sets it).
	Audit *audit.Writer
	// SchedulerDuties run while this sidecar is the elected scheduler,
	// each in its own goroutine, started with every term; their ctx ends
	// with the term, which waits for them to return. The sidecar logs
	// operator actions this way (audit.Follower).
	SchedulerDuties []func(ctx context.Context)
	// Admission, when set, refuses Submit with a *QuotaError while etcd's
	// database is above the high-water mark of its quota (see
	// admission.go). Default: none.
	Admission *Admission
}

func (c Config) withDefaults() Config {
	if c.PayloadLimit == 0 {
		c.PayloadLimit = 64 << 10
	}
	if c.ResultLimit == 0 {
		c.ResultLimit = DefaultResultLimit
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = 128
	}
	if c.MaxTxnBytes == 0 {
		c.MaxTxnBytes = 1 << 20
	}
	if c.DefaultMaxAttempts == 0 {
		c.DefaultMaxAttempts = 3
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = 5 * time.Minute
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.Window == 0 {
		c.Window = 512
	}
	if c.AffinityWait == 0 {
		c.AffinityWait = 5 * time.Second
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 10 * time.Second
	}
	if c.ExpiryGrace == 0 {
		c.ExpiryGrace = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.DepthInterval == 0 {
		c.DepthInterval = 15 * time.Second
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	return c
}

// Now returns the current time on the Clock.
func (c Config) Now() time.Time { return c.Clock.Now() }

// Validate reports the first field that is out of range.
func (c Config) Validate() error {
	switch {
	case c.PayloadLimit < 0:
		return invalid("PayloadLimit", "must not be negative")
	case c.ResultLimit < 0:
		return invalid("ResultLimit", "must not be negative")
	case c.MaxTxnOps < 0 || c.MaxTxnOps > 0 && c.MaxTxnOps < 8:
		return invalid("MaxTxnOps", "must be at least 8")
	case c.MaxTxnBytes < 0:
		return invalid("MaxTxnBytes", "must not be negative")
	case c.DefaultMaxAttempts < 0:
		return invalid("DefaultMaxAttempts", "must not be negative")
	case c.DefaultTimeout < 0:
		return invalid("DefaultTimeout", "must not be negative")
	case c.BackoffBase < 0 || c.BackoffMax < 0:
		return invalid("BackoffBase", "must not be negative")
	case c.Retention < 0:
		return invalid("Retention", "must not be negative")
	case c.Window < 0:
		return invalid("Window", "must not be negative")
	case c.AffinityWait < 0:
		return invalid("AffinityWait", "must not be negative")
	case c.DepthInterval < 0:
		return invalid("DepthInterval", "must not be negative")
	}
	return nil
}

// Store performs the work queue's etcd transactions. It holds no state of
// its own beyond its settings and is safe for concurrent use.
type Store struct {
	kv  clientv3.KV
	cfg Config
}

// NewStore returns a Store on kv, which should already be wrapped in the
// deployment's namespace (clientv3/namespace).
func NewStore(kv clientv3.KV, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{kv: kv, cfg: cfg.withDefaults()}, nil
}

// Config returns the store's settings with defaults applied.
func (s *Store) Config() Config { return s.cfg }

// audited returns ops with the record of the operator's action added, when
// the store records actions (Config.Audit).
func (s *Store) audited(ctx context.Context, ops []clientv3.Op, action audit.Action, object, detail string) ([]clientv3.Op, error) {
	if s.cfg.Audit == nil {
		return ops, nil
	}
	rec, err := s.cfg.Audit.Ops(ctx, action, object, detail)
	if err != nil {
		return nil, fmt.Errorf("audit record: %w", err)
	}
	return append(ops, rec...), nil
}
