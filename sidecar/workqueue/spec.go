package workqueue

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// spec is the immutable record of a task, the value of task/<id> (the id
// is the key). It holds what the task's first status is derived from: a
// task submitted ready has no state/<id> until it first leaves its ready
// entry (see pendingStatus), so the spec says where that entry is.
type spec struct {
	Queue    string
	Priority int32
	Order    int64 // position within its priority (Unix ns); its millisecond is when it was created
	routing
	// NotBeforeMS is set when the task was submitted held back (not_before
	// in the future); such a task has a state/<id> from its submit on.
	NotBeforeMS int64
	Payload     json.RawMessage
	Traceparent string // the W3C traceparent of the submit
}

// CreatedMS is when the task was submitted (Unix ms).
func (sp *spec) CreatedMS() int64 { return sp.Order / 1e6 }

// The spec is stored in a binary form (D-size9): a pending task is mostly
// its spec, and the field names and decimal numbers of JSON cost ~40
// bytes of it. The value is
//
//	specFormat, uvarint flags, uvarint length and the queue,
//	the order in 8 bytes (big-endian), the fields the flags name in the
//	order of the flags below, and the payload's JSON to the end.
//
// A string is its uvarint length and its bytes; a number a (zig-zag for
// the priority) uvarint. A field left out is the common case: priority 0,
// the package defaults (recordMaxAttempts, recordTimeoutMS), no batch.
// The first byte tells the formats apart: JSON starts with '{'.
const specFormat = '3'

// The flags of a spec record, in the order of their fields.
const (
	specTrace       = 1 << iota // a version-00 traceparent: trace id, span id and flags, 25 bytes
	specBatch                   // string
	specPriority                // zig-zag varint
	specMaxAttempts             // uvarint
	specTimeout                 // uvarint, ms
	specPinned                  // no field
	specAffinity                // string
	specRequire                 // uvarint count, then key and value strings, keys sorted
	specNotBefore               // uvarint, Unix ms
	specTraceText               // string: a traceparent of another form
)

// encodeSpec returns the stored form of sp.
func encodeSpec(sp spec) []byte {
	var flags uint64
	trace, short := traceparentBytes(sp.Traceparent)
	set := func(f uint64, on bool) {
		if on {
			flags |= f
		}
	}
	set(specTrace, short)
	set(specBatch, sp.Batch != "")
	set(specPriority, sp.Priority != 0)
	set(specMaxAttempts, sp.MaxAttempts != 0)
	set(specTimeout, sp.TimeoutMS != 0)
	set(specPinned, sp.Pinned)
	set(specAffinity, sp.Affinity != "")
	set(specRequire, len(sp.Require) > 0)
	set(specNotBefore, sp.NotBeforeMS != 0)
	set(specTraceText, !short && sp.Traceparent != "")

	b := make([]byte, 0, 64+len(sp.Payload)+len(sp.Batch)+len(sp.Affinity))
	b = append(b, specFormat)
	b = binary.AppendUvarint(b, flags)
	b = appendString(b, sp.Queue)
	b = binary.BigEndian.AppendUint64(b, uint64(sp.Order))
	if short {
		b = append(b, trace...)
	}
	if sp.Batch != "" {
		b = appendString(b, sp.Batch)
	}
	if sp.Priority != 0 {
		b = binary.AppendVarint(b, int64(sp.Priority))
	}
	if sp.MaxAttempts != 0 {
		b = binary.AppendUvarint(b, uint64(sp.MaxAttempts))
	}
	if sp.TimeoutMS != 0 {
		b = binary.AppendUvarint(b, uint64(sp.TimeoutMS))
	}
	if sp.Affinity != "" {
		b = appendString(b, sp.Affinity)
	}
	if len(sp.Require) > 0 {
		b = binary.AppendUvarint(b, uint64(len(sp.Require)))
		keys := make([]string, 0, len(sp.Require))
		for k := range sp.Require {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = appendString(appendString(b, k), sp.Require[k])
		}
	}
	if sp.NotBeforeMS != 0 {
		b = binary.AppendUvarint(b, uint64(sp.NotBeforeMS))
	}
	if flags&specTraceText != 0 {
		b = appendString(b, sp.Traceparent)
	}
	return append(b, sp.Payload...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// errShortSpec reports a binary spec that ends before its fields do.
var errShortSpec = errors.New("spec record ends early")

// specReader reads the fields of a binary spec in order; the first
// failure sticks.
type specReader struct {
	b   []byte
	err error
}

func (r *specReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortSpec
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *specReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShortSpec
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *specReader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShortSpec
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *specReader) string() string { return string(r.bytes(r.uvarint())) }

// decodeBinarySpec reads a spec of specFormat (b without its format byte).
func decodeBinarySpec(b []byte) (spec, error) {
	r := &specReader{b: b}
	var sp spec
	flags := r.uvarint()
	if flags >= specTraceText<<1 {
		return spec{}, fmt.Errorf("spec record has unknown flags %#x", flags)
	}
	sp.Queue = r.string()
	if o := r.bytes(8); o != nil {
		sp.Order = int64(binary.BigEndian.Uint64(o))
	}
	if flags&specTrace != 0 {
		if t := r.bytes(25); t != nil {
			sp.Traceparent = traceparentOf(t)
		}
	}
	if flags&specBatch != 0 {
		sp.Batch = r.string()
	}
	if flags&specPriority != 0 {
		sp.Priority = int32(r.varint())
	}
	if flags&specMaxAttempts != 0 {
		sp.MaxAttempts = int32(r.uvarint())
	}
	if flags&specTimeout != 0 {
		sp.TimeoutMS = int64(r.uvarint())
	}
	sp.Pinned = flags&specPinned != 0
	if flags&specAffinity != 0 {
		sp.Affinity = r.string()
	}
	if flags&specRequire != 0 {
		n := r.uvarint()
		if n > MaxRequire {
			return spec{}, fmt.Errorf("spec record requires %d labels", n)
		}
		sp.Require = make(map[string]string, n)
		for range n {
			k := r.string()
			sp.Require[k] = r.string()
		}
	}
	if flags&specNotBefore != 0 {
		sp.NotBeforeMS = int64(r.uvarint())
	}
	if flags&specTraceText != 0 {
		sp.Traceparent = r.string()
	}
	if r.err != nil {
		return spec{}, r.err
	}
	sp.Payload = json.RawMessage(r.b)
	return sp, nil
}

// traceparentBytes returns the trace id, span id and flags of a version-00
// traceparent in its canonical (lower-case) form, which decodeSpec
// restores exactly.
func traceparentBytes(tp string) ([]byte, bool) {
	if len(tp) != 55 || tp[:3] != "00-" || tp[35] != '-' || tp[52] != '-' {
		return nil, false
	}
	h := tp[3:35] + tp[36:52] + tp[53:]
	if strings.ToLower(h) != h {
		return nil, false
	}
	b, err := hex.DecodeString(h)
	return b, err == nil
}

// traceparentOf is the version-00 traceparent of the 25 bytes
// traceparentBytes returns.
func traceparentOf(b []byte) string {
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:24]) + "-" + hex.EncodeToString(b[24:])
}

// decodeSpec reads a spec of any format a version of Baton wrote: this
// one; the JSON of D-size6 (one- and two-letter names); or the JSON
// before it (long names, the id, created_ms), whose tasks always have a
// state/<id> (D-size7).
func decodeSpec(b []byte) (spec, error) {
	if len(b) > 0 && b[0] == specFormat {
		return decodeBinarySpec(b[1:])
	}
	var j struct {
		Queue    string `json:"q"`
		Priority int32  `json:"r,omitempty"`
		Order    int64  `json:"o"`
		routing
		NotBeforeMS  int64           `json:"n,omitempty"`
		Payload      json.RawMessage `json:"p"`
		TraceCompact string          `json:"tc,omitempty"` // the 25 bytes of a version-00 traceparent in base64
		TraceRaw     string          `json:"tp,omitempty"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return spec{}, err
	}
	if j.Queue != "" || j.Payload != nil {
		sp := spec{Queue: j.Queue, Priority: j.Priority, Order: j.Order, routing: j.routing, NotBeforeMS: j.NotBeforeMS, Payload: j.Payload, Traceparent: j.TraceRaw}
		if t, err := base64.RawStdEncoding.DecodeString(j.TraceCompact); err == nil && len(t) == 25 {
			sp.Traceparent = traceparentOf(t)
		}
		return sp, nil
	}
	var old struct {
		Queue       string          `json:"queue"`
		Payload     json.RawMessage `json:"payload"`
		Priority    int32           `json:"priority"`
		MaxAttempts int32           `json:"max_attempts"`
		TimeoutMS   int64           `json:"timeout_ms"`
		Batch       string          `json:"batch"`
		NotBeforeMS int64           `json:"not_before_ms"`
		Traceparent string          `json:"traceparent"`
		CreatedMS   int64           `json:"created_ms"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.Queue == "" {
		return spec{}, err // neither format: the callers' checks report it
	}
	sp := spec{Queue: old.Queue, Priority: old.Priority, Order: old.CreatedMS * 1e6, NotBeforeMS: old.NotBeforeMS, Payload: old.Payload, Traceparent: old.Traceparent}
	sp.routing = routingOf(Status{MaxAttempts: old.MaxAttempts, TimeoutMS: old.TimeoutMS, Batch: old.Batch})
	return sp, nil
}

// pendingStatus is the status of task id while it has no state/<id>: it
// was submitted ready and has not left its ready entry (not claimed, not
// cancelled), so it is PENDING at attempt 0 in the entry its spec names.
func pendingStatus(id string, sp spec) Status {
	st := Status{
		State: StatePending, Queue: sp.Queue, Priority: sp.Priority, Order: sp.Order,
		Index: readyKey(sp.Queue, sp.Priority, sp.Order, id), UpdatedMS: sp.CreatedMS(),
	}
	sp.routing.fill(&st)
	return st
}
