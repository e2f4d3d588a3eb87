package workqueue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Spec describes a task to submit.
type Spec struct {
	// ID names the task; empty derives it from the payload (DeriveID).
	ID string
	// Queue is required.
	Queue string
	// Payload must be a JSON object.
	Payload json.RawMessage
	// Priority: higher runs first, MinPriority to MaxPriority.
	Priority int32
	// MaxAttempts; 0 means Config.DefaultMaxAttempts.
	MaxAttempts int32
	// Timeout without heartbeat; 0 means Config.DefaultTimeout.
	Timeout time.Duration
	Batch   string
	// NotBefore holds the task back until then.
	NotBefore   time.Time
	Traceparent string
	// Affinity, when set, is a key such as a speaker prompt whose
	// conditioning a GPU caches: dispatch prefers the worker that last
	// handled a task with the same key (see the package doc). At most
	// MaxAffinityLen bytes.
	Affinity string
	// Require lists labels a sidecar must have been started with (its
	// --label KEY=VALUE flags) to receive the task. At most MaxRequire
	// pairs.
	Require map[string]string
}

// SubmitResult says what Submit did with each spec, in order.
type SubmitResult struct {
	IDs     []string
	Created []bool // false: a task with that id existed and was left alone
	// Pin is the batch's pinned config when Submit was given WithPin: the
	// one given, or the one the batch was pinned with before.
	Pin *Pin
}

// Counts returns how many tasks were created and how many existed.
func (r SubmitResult) Counts() (created, existing int) {
	for _, c := range r.Created {
		if c {
			created++
		} else {
			existing++
		}
	}
	return created, existing
}

// DeriveID returns the id a payload names: its "id" field, else its
// "uttid" field (GLM-TTS batch lines), else "h-" and a hash of the payload.
// idField, when set, names the only field to use before the hash.
func DeriveID(payload json.RawMessage, idField string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) == nil {
		fields := []string{"id", "uttid"}
		if idField != "" {
			fields = []string{idField}
		}
		for _, f := range fields {
			var s string
			if raw, ok := m[f]; ok && json.Unmarshal(raw, &s) == nil && s != "" {
				return s
			}
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, payload) != nil {
		buf.Reset()
		buf.Write(payload)
	}
	sum := sha256.Sum256(buf.Bytes())
	return "h-" + hex.EncodeToString(sum[:12])
}

// Normalize checks a spec and fills in its defaults. field prefixes the
// names in errors (for example "tasks[2]").
func (s *Store) Normalize(sp *Spec, field string) error {
	if field != "" {
		field += "."
	}
	if len(sp.Payload) == 0 {
		return invalid(field+"payload", "is required")
	}
	if len(sp.Payload) > s.cfg.PayloadLimit {
		return invalid(field+"payload", "is %d bytes, over the limit of %d", len(sp.Payload), s.cfg.PayloadLimit)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(sp.Payload, &obj); err != nil || obj == nil {
		return invalid(field+"payload", "must be a JSON object")
	}
	// What a worker receives is a protobuf Struct: refuse at submit what
	// it cannot carry (numbers out of float64's range, duplicate keys,
	// invalid UTF-8) rather than claim a task that cannot be sent.
	if err := (&structpb.Struct{}).UnmarshalJSON(sp.Payload); err != nil {
		return invalid(field+"payload", "cannot be sent to workers: %v", err)
	}
	if sp.ID == "" {
		sp.ID = DeriveID(sp.Payload, "")
	}
	if err := ValidateID(sp.ID); err != nil {
		return &InvalidError{Field: field + "id", Err: err}
	}
	if err := ValidateQueue(sp.Queue); err != nil {
		return &InvalidError{Field: field + "queue", Err: err}
	}
	if sp.Priority < MinPriority || sp.Priority > MaxPriority {
		return invalid(field+"priority", "%d is outside %d..%d", sp.Priority, MinPriority, MaxPriority)
	}
	if sp.MaxAttempts < 0 || sp.MaxAttempts > 1000 {
		return invalid(field+"max_attempts", "%d is outside 0..1000", sp.MaxAttempts)
	}
	if sp.MaxAttempts == 0 {
		sp.MaxAttempts = s.cfg.DefaultMaxAttempts
	}
	if sp.Timeout < 0 {
		return invalid(field+"timeout", "must not be negative")
	}
	if sp.Timeout == 0 {
		sp.Timeout = s.cfg.DefaultTimeout
	}
	if sp.Timeout < time.Second {
		return invalid(field+"timeout", "%v is shorter than 1s", sp.Timeout)
	}
	if sp.Timeout > MaxTimeout {
		return invalid(field+"timeout", "%v is over the limit of %v", sp.Timeout, MaxTimeout)
	}
	if !sp.NotBefore.IsZero() && sp.NotBefore.After(s.cfg.Now().Add(MaxDelay)) {
		return invalid(field+"not_before", "%s is more than %v ahead", sp.NotBefore.UTC().Format(time.RFC3339), MaxDelay)
	}
	if sp.Batch != "" {
		if err := ValidateBatch(sp.Batch); err != nil {
			return &InvalidError{Field: field + "batch", Err: err}
		}
	}
	if len(sp.Traceparent) > 256 {
		return invalid(field+"traceparent", "longer than 256 bytes")
	}
	if len(sp.Affinity) > MaxAffinityLen {
		return invalid(field+"affinity", "is %d bytes, over the limit of %d", len(sp.Affinity), MaxAffinityLen)
	}
	if err := ValidateLabels(sp.Require); err != nil {
		return &InvalidError{Field: field + "require", Err: err}
	}
	if len(sp.Require) == 0 {
		sp.Require = nil
	}
	return nil
}

// Submit validates every spec first and then writes the new ones, in
// transactions of at most Config.MaxTxnOps operations and
// Config.MaxTxnBytes bytes. A task whose id exists is left as it is, so
// submitting the same specs twice creates nothing new. Two specs with the
// same id in one call are an error.
//
// Nothing is written when any spec is invalid, or when Config.Admission
// refuses the submit (a *QuotaError). When etcd fails part way,
// the transactions already committed stay; submitting again completes the
// rest.
func (s *Store) Submit(ctx context.Context, specs []Spec, opts ...SubmitOption) (SubmitResult, error) {
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	seen := make(map[string]int, len(specs))
	for i := range specs {
		if err := s.Normalize(&specs[i], fmt.Sprintf("tasks[%d]", i)); err != nil {
			return SubmitResult{}, err
		}
		if j, dup := seen[specs[i].ID]; dup {
			return SubmitResult{}, invalid(fmt.Sprintf("tasks[%d].id", i), "%q is also the id of tasks[%d]", specs[i].ID, j)
		}
		seen[specs[i].ID] = i
	}
	res := SubmitResult{IDs: make([]string, len(specs)), Created: make([]bool, len(specs))}
	for i := range specs {
		res.IDs[i] = specs[i].ID
	}
	if a := s.cfg.Admission; a != nil {
		var cost int64
		for i := range specs {
			cost += submitCost(&specs[i])
		}
		if err := a.admit(ctx, cost, s.PendingCount); err != nil {
			return res, fmt.Errorf("submit: %w", err)
		}
	}
	pins, err := s.batchPins(ctx, specs, o.pin)
	if err != nil {
		return res, err
	}
	if o.pin != nil {
		res.Pin = pins.pin
	}
	// The orders of the tasks count up from one base, in the order of
	// specs, across the transactions: the member key of a batch's tasks in
	// one transaction is named by the first one's (members.go).
	now := s.cfg.Now()
	base := now.UnixNano()
	for start := 0; start < len(specs); {
		end, ops, size := start, 0, 0
		batches := map[string]bool{}
		for end < len(specs) && end-start < chunkSpan-1 {
			o, b := opsFor(&specs[end], now)
			if bt := specs[end].Batch; bt != "" && !batches[bt] {
				o += 2 // the batch's member key, and its pin's touch if it is pinned
			}
			if end > start && (ops+o > s.cfg.MaxTxnOps || size+b > s.cfg.MaxTxnBytes) {
				break
			}
			ops, size = ops+o, size+b
			batches[specs[end].Batch] = true
			end++
		}
		var err error
		base, err = s.submitChunk(ctx, specs[start:end], res.Created[start:end], now, base+int64(start), pins)
		if err != nil {
			return res, err
		}
		base -= int64(start)
		start = end
		if o.progress != nil {
			o.progress(end, len(specs))
		}
	}
	return res, nil
}

// SubmitOption is a rarely used option of Submit.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	progress func(done, total int)
	pin      *Pin
}

// WithPin pins a configuration document to the batch of the specs, which
// must all name the same batch: every task of the batch is handed out with
// it (Claimed.Pin), whatever the config is when the task runs. The pin is
// written once per batch; submitting to a batch pinned before keeps its
// first pin (SubmitResult.Pin says which), and pinning a batch to a
// document of another name is refused.
func WithPin(p Pin) SubmitOption {
	return func(o *submitOptions) { o.pin = &p }
}

// WithProgress calls f after each transaction with the number of specs
// written or found existing so far.
func WithProgress(f func(done, total int)) SubmitOption {
	return func(o *submitOptions) { o.progress = f }
}

// opsFor returns how many operations a task adds to the longest list of a
// submit transaction, and a bound on its bytes. etcd's --max-txn-ops bounds
// each of a transaction's compare, success and failure lists, not their
// sum (etcd's checkTxnRequest), and the longest here is the success list:
// the spec and the ready entry, or the spec, the state and the delay entry
// of a task held back (createOps). The compare and failure lists have one
// per task. A batch adds its member key and its pin's touch to the success
// list and a compare each to the others, counted by the caller once per
// batch.
func opsFor(sp *Spec, now time.Time) (ops, bytes int) {
	ops = 2
	if sp.NotBefore.After(now) {
		ops++ // the state and the delay entry instead of the ready entry
	}
	return ops, len(sp.Payload) + 512 + 2*len(sp.Affinity) + 2*labelsLen(sp.Require)
}

// batchPinning says which batches of a Submit have a pinned config.
type batchPinning struct {
	pinned map[string]bool // batch → has pin/<batch>
	pin    *Pin            // the pin of WithPin's batch, as stored
	batch  string          // WithPin's batch
}

// batchPins writes the pin of WithPin and finds which other batches of the
// specs are pinned already, so that follow-up tasks submitted into a pinned
// batch get its config too.
func (s *Store) batchPins(ctx context.Context, specs []Spec, p *Pin) (batchPinning, error) {
	bp := batchPinning{pinned: map[string]bool{}}
	if p != nil {
		if len(specs) > 0 {
			bp.batch = specs[0].Batch
		}
		for i := range specs {
			if specs[i].Batch == "" {
				return bp, invalid(fmt.Sprintf("tasks[%d].batch", i), "a pinned config needs a batch")
			}
			if specs[i].Batch != bp.batch {
				return bp, invalid(fmt.Sprintf("tasks[%d].batch", i), "a pinned config needs every task in one batch; got %q and %q", bp.batch, specs[i].Batch)
			}
		}
		if bp.batch == "" {
			return bp, nil
		}
		stored, err := s.ensurePin(ctx, bp.batch, *p)
		if err != nil {
			return bp, err
		}
		bp.pin, bp.pinned[bp.batch] = stored, true
	}
	for i := range specs {
		b := specs[i].Batch
		if _, seen := bp.pinned[b]; seen || b == "" {
			continue
		}
		resp, err := s.kv.Get(ctx, pinKey(b), clientv3.WithCountOnly())
		if err != nil {
			return bp, fmt.Errorf("submit: %w", err)
		}
		bp.pinned[b] = resp.Count > 0
	}
	return bp, nil
}

// ensurePin writes the batch's pin unless it has one, and returns the pin
// the batch has.
func (s *Store) ensurePin(ctx context.Context, batch string, p Pin) (*Pin, error) {
	if p.PinnedMS == 0 {
		p.PinnedMS = ms(s.cfg.Now())
	}
	enc, err := json.Marshal(p)
	if err != nil {
		return nil, invalid("pin.document", "%v", err)
	}
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(pinKey(batch)), "=", 0)).
		Then(clientv3.OpPut(pinKey(batch), string(enc))).
		Else(clientv3.OpGet(pinKey(batch))).Commit()
	if err != nil {
		return nil, fmt.Errorf("submit: pinning config: %w", err)
	}
	if resp.Succeeded {
		return &p, nil
	}
	var old Pin
	if err := json.Unmarshal(resp.Responses[0].GetResponseRange().Kvs[0].Value, &old); err != nil {
		return nil, fmt.Errorf("submit: batch %s: unreadable pin: %w", batch, err)
	}
	if old.Name != p.Name {
		return nil, invalid("pin_config", "batch %q is pinned to config %q, not %q", batch, old.Name, p.Name)
	}
	return &old, nil
}

// submitChunk writes the specs that do not exist yet in one transaction,
// with the orders first, first+1, and so on, and a member key for the
// tasks of each batch. Tasks of a pinned batch are written only while its
// pin exists, so that no task is marked pinned without a pin to hand out.
// It returns the first order it used: a member key of that name may exist
// already (another submit in the same nanosecond, or one whose tasks were
// not all removed), and then the orders move on past it.
func (s *Store) submitChunk(ctx context.Context, specs []Spec, created []bool, now time.Time, first int64, bp batchPinning) (int64, error) {
	todo := make([]int, len(specs))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		var cmps []clientv3.Cmp
		var puts, gets []clientv3.Op
		members := map[string][]string{} // batch → ids of this transaction
		var batches, memberKeys, pinnedBatches []string
		for _, i := range todo {
			sp := &specs[i]
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(taskKey(sp.ID)), "=", 0))
			gets = append(gets, clientv3.OpGet(taskKey(sp.ID), clientv3.WithKeysOnly()))
			puts = append(puts, s.createOps(sp, now, first+int64(i), bp.pinned[sp.Batch])...)
			if sp.Batch == "" {
				continue
			}
			if _, ok := members[sp.Batch]; !ok {
				// Named by the first order of the batch's tasks here.
				batches = append(batches, sp.Batch)
				memberKeys = append(memberKeys, memberKey(sp.Batch, first+int64(i)))
				if bp.pinned[sp.Batch] {
					pinnedBatches = append(pinnedBatches, sp.Batch)
				}
			}
			members[sp.Batch] = append(members[sp.Batch], sp.ID)
		}
		for k, b := range batches {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(memberKeys[k]), "=", 0))
			gets = append(gets, clientv3.OpGet(memberKeys[k], clientv3.WithKeysOnly()))
			puts = append(puts, clientv3.OpPut(memberKeys[k], encodeMembers(members[b])))
		}
		for _, b := range pinnedBatches {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pinKey(b)), ">", 0))
			gets = append(gets, clientv3.OpGet(pinKey(b), clientv3.WithKeysOnly()))
			// Touch the pin so that the collector, which removes the pin of
			// an empty batch only if the pin is unchanged, keeps it.
			puts = append(puts, clientv3.OpPut(pinKey(b), "", clientv3.WithIgnoreValue()))
		}
		resp, err := s.kv.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
		if err != nil {
			return first, fmt.Errorf("submit: %w", err)
		}
		if resp.Succeeded {
			for _, i := range todo {
				created[i] = true
			}
			return first, nil
		}
		// A member key of that name exists: move the orders past it.
		for k := range batches {
			if len(resp.Responses[len(todo)+k].GetResponseRange().Kvs) > 0 {
				first += chunkSpan
				break
			}
		}
		// A pin removed meanwhile (its batch was collected): WithPin's pin
		// is written again; a batch found pinned before is no longer.
		for k, b := range pinnedBatches {
			if len(resp.Responses[len(todo)+len(batches)+k].GetResponseRange().Kvs) > 0 {
				continue
			}
			if b == bp.batch && bp.pin != nil {
				if _, err := s.ensurePin(ctx, b, *bp.pin); err != nil {
					return first, err
				}
			} else {
				bp.pinned[b] = false
			}
		}
		// Some ids exist: leave those alone and write the rest.
		var rest []int
		for n, i := range todo {
			if len(resp.Responses[n].GetResponseRange().Kvs) == 0 {
				rest = append(rest, i)
			}
		}
		todo = rest
	}
	return first, nil
}

// createOps are the writes that create one task with the given order (its
// place in the FIFO order of its priority). A task due now gets its spec
// and its ready entry only: its state/<id> is written by whatever first
// moves it (pendingStatus). A task held back by not_before gets its state
// and its delay entry as well. Its batch's member key is written by
// submitChunk.
func (s *Store) createOps(sp *Spec, now time.Time, order int64, pinned bool) []clientv3.Op {
	st := Status{
		State: StatePending, Queue: sp.Queue, Priority: sp.Priority, MaxAttempts: sp.MaxAttempts,
		TimeoutMS: sp.Timeout.Milliseconds(), Batch: sp.Batch, Pinned: pinned, Order: order,
		Affinity: sp.Affinity, Require: sp.Require,
	}
	st.UpdatedMS = st.Order / 1e6
	rec := spec{
		Queue: sp.Queue, Priority: sp.Priority, Order: st.Order, routing: routingOf(st),
		Payload: sp.Payload, Traceparent: sp.Traceparent,
	}
	delayed := sp.NotBefore.After(now)
	if delayed {
		rec.NotBeforeMS = ms(sp.NotBefore)
	}
	ops := []clientv3.Op{clientv3.OpPut(taskKey(sp.ID), string(encodeSpec(rec)))}
	if delayed {
		st.Index = delayKey(sp.NotBefore, sp.ID)
		ops = append(ops, clientv3.OpPut(stateKey(sp.ID), st.encode()), clientv3.OpPut(st.Index, st.encode()))
	} else {
		st.Index = readyKey(sp.Queue, sp.Priority, st.Order, sp.ID)
		ops = append(ops, clientv3.OpPut(st.Index, encodeReady(st)))
	}
	return ops
}
