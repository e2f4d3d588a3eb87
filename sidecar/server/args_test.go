package server

import (
	"errors"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/workqueue"
	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fuzzNow is the store's clock in the fuzz targets: fixed, so that a
// failure replays.
var fuzzNow = time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)

func fuzzStore(f *testing.F) *workqueue.Store {
	s, err := workqueue.NewStore(nil, workqueue.Config{Clock: clockwork.NewFakeClockAt(fuzzNow)})
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// exactNanos is seconds s and nanos n as nanoseconds, without overflow.
func exactNanos(s int64, n int32) *big.Int {
	v := new(big.Int).Mul(big.NewInt(s), big.NewInt(int64(time.Second)))
	return v.Add(v, big.NewInt(int64(n)))
}

// checkDuration asserts durationArg's contract for one field and bound:
// accepted ⇒ a valid Duration, 0..max, converted exactly (no saturation);
// refused ⇒ INVALID_ARGUMENT naming the field, and the value really was
// malformed, negative or over max.
func checkDuration(t *testing.T, field string, max time.Duration, s int64, n int32) {
	t.Helper()
	d := &durationpb.Duration{Seconds: s, Nanos: n}
	got, err := durationArg(field, d, max)
	exact := exactNanos(s, n)
	if err != nil {
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(connectMessage(err), field+": ") {
			t.Fatalf("%s %v: error %v does not name the field", field, d, err)
		}
		if d.CheckValid() == nil && exact.Sign() >= 0 && exact.Cmp(big.NewInt(int64(max))) <= 0 {
			t.Fatalf("%s %v: refused a valid duration within 0..%v: %v", field, d, max, err)
		}
		return
	}
	if d.CheckValid() != nil {
		t.Fatalf("%s %v: accepted an invalid duration", field, d)
	}
	if got < 0 || got > max || big.NewInt(int64(got)).Cmp(exact) != 0 {
		t.Fatalf("%s %v: accepted as %v (%d ns), want exactly %s ns within 0..%v", field, d, got, got, exact, max)
	}
}

// FuzzDurationArgs: every Duration a request carries (Next's wait,
// Fail's retry_after, a task's timeout, Lock's wait) is accepted only
// within its bound and converted exactly; a refusal names the field.
func FuzzDurationArgs(f *testing.F) {
	f.Add(int64(2), int32(500_000_000))
	f.Add(int64(9_000_000_000), int32(0))     // retry_after that overflowed a delay key (issue 13, item 1)
	f.Add(int64(315_576_000_000), int32(999)) // the longest valid Duration
	f.Add(int64(600), int32(1))
	f.Add(int64(-1), int32(0))
	f.Add(int64(1), int32(-1))
	f.Add(int64(math.MaxInt64), int32(math.MaxInt32))
	f.Fuzz(func(t *testing.T, s int64, n int32) {
		checkDuration(t, "wait", MaxWait, s, n)
		checkDuration(t, "retry_after", workqueue.MaxDelay, s, n)
		checkDuration(t, "tasks[0].timeout", workqueue.MaxTimeout, s, n)

		// Lock's wait is cut to MaxLockWait rather than refused.
		d := &durationpb.Duration{Seconds: s, Nanos: n}
		w, err := lockWait(d)
		exact := exactNanos(s, n)
		switch {
		case err != nil:
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(connectMessage(err), "wait: ") {
				t.Fatalf("lock wait %v: error %v does not name the field", d, err)
			}
			if d.CheckValid() == nil && exact.Sign() >= 0 {
				t.Fatalf("lock wait %v: refused: %v", d, err)
			}
		case d.CheckValid() != nil || exact.Sign() < 0:
			t.Fatalf("lock wait %v: accepted as %v", d, w)
		case exact.Cmp(big.NewInt(int64(MaxLockWait))) >= 0 && w != MaxLockWait,
			exact.Cmp(big.NewInt(int64(MaxLockWait))) < 0 && big.NewInt(int64(w)).Cmp(exact) != 0:
			t.Fatalf("lock wait %v: %v, want min(%s ns, %v)", d, w, exact, MaxLockWait)
		}
	})
}

// FuzzNotBefore: a task's not_before is accepted only when it is a valid
// Timestamp at most workqueue.MaxDelay ahead, and then, if it is in the
// future, its Unix nanoseconds (the delay key) do not overflow. A
// refusal names the field.
func FuzzNotBefore(f *testing.F) {
	f.Add(fuzzNow.Unix()+60, int32(0))
	f.Add(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), int32(0)) // issue 13, item 1
	f.Add(time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC).Unix(), int32(0))
	f.Add(int64(-62135596800), int32(0)) // year 1: the zero time.Time
	f.Add(int64(253402300800), int32(0)) // year 10000
	f.Add(int64(0), int32(1_000_000_000))
	store := fuzzStore(f)
	f.Fuzz(func(t *testing.T, s int64, n int32) {
		ts := &timestamppb.Timestamp{Seconds: s, Nanos: n}
		spec := &batonv1.TaskSpec{Id: "t", Queue: "q", Payload: &structpb.Struct{}, NotBefore: ts}
		sp, err := specFromProto(spec, "tasks[0]")
		if err == nil {
			err = toConnect(store.Normalize(&sp, "tasks[0]"))
		}
		if err != nil {
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(connectMessage(err), "tasks[0].not_before: ") {
				t.Fatalf("not_before %v: error %v does not name the field", ts, err)
			}
			if ts.CheckValid() == nil && !ts.AsTime().After(fuzzNow.Add(workqueue.MaxDelay)) {
				t.Fatalf("not_before %v: refused: %v", ts, err)
			}
			return
		}
		if ts.CheckValid() != nil {
			t.Fatalf("not_before %v: accepted an invalid timestamp", ts)
		}
		nb := sp.NotBefore
		if nb.Unix() != s || nb.Nanosecond() != int(n) {
			t.Fatalf("not_before %v: converted to %v", ts, nb)
		}
		if nb.After(fuzzNow.Add(workqueue.MaxDelay)) {
			t.Fatalf("not_before %v: accepted beyond %v ahead", ts, workqueue.MaxDelay)
		}
		if nb.After(fuzzNow) && !time.Unix(0, nb.UnixNano()).Equal(nb) {
			t.Fatalf("not_before %v: its Unix nanoseconds overflow", ts)
		}
	})
}

// fieldPath matches the field an INVALID_ARGUMENT error names:
// "tasks[3].not_before: ...".
var fieldPath = regexp.MustCompile(`^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): `)

// namesField reports whether msg starts with the proto name of a field of
// m (a path through nested messages, with indexes into lists that exist).
func namesField(m protoreflect.Message, msg string) bool {
	sub := fieldPath.FindStringSubmatch(msg)
	if sub == nil {
		return false
	}
	for part := range strings.SplitSeq(sub[1], ".") {
		name, index, indexed := strings.Cut(part, "[")
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return false
		}
		if !indexed {
			if fd.Message() == nil || fd.IsList() || fd.IsMap() {
				return true // a scalar, a map or a whole list: the path ends here
			}
			m = m.Get(fd).Message()
			continue
		}
		i, err := strconv.Atoi(strings.TrimSuffix(index, "]"))
		if !fd.IsList() || err != nil || i >= m.Get(fd).List().Len() {
			return false
		}
		if fd.Message() == nil {
			return true
		}
		m = m.Get(fd).List().Get(i).Message()
	}
	return true
}

// connectMessage is the message of a Connect error, without its code.
func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// validateRequest runs the checks a handler makes of m before it reaches
// etcd, as the handler makes them.
func validateRequest(store *workqueue.Store, m proto.Message) error {
	switch m := m.(type) {
	case *batonv1.NextRequest:
		if _, err := durationArg("wait", m.GetWait(), MaxWait); err != nil {
			return err
		}
		if len(m.GetQueues()) > 0 {
			return toConnect(workqueue.CheckQueues(m.GetQueues()))
		}
	case *batonv1.SubmitRequest:
		if n := len(m.GetTasks()); n > MaxSubmitTasks || n == 0 {
			return invalidArg("tasks", "count")
		}
		for i, t := range m.GetTasks() {
			field := "tasks[" + strconv.Itoa(i) + "]"
			sp, err := specFromProto(t, field)
			if err != nil {
				return err
			}
			if sp.Queue == "" {
				sp.Queue = "tts"
			}
			if err := store.Normalize(&sp, field); err != nil {
				return toConnect(err)
			}
			if err := acceptedSpec(sp); err != nil {
				return err
			}
		}
	case *batonv1.FailRequest:
		_, err := durationArg("retry_after", m.GetRetryAfter(), workqueue.MaxDelay)
		return err
	case *batonv1.HeartbeatRequest:
		return progressArg(m.GetProgress())
	case *batonv1.LockRequest:
		if err := namedlock.ValidateLockName(m.GetName()); err != nil {
			return invalidArg("name", err.Error())
		}
		_, err := lockWait(m.GetWait())
		return err
	}
	return nil
}

// errBrokenContract marks an accepted spec that breaks a bound; it is not
// a Connect error, so FuzzRequests fails on it.
var errBrokenContract = errors.New("accepted spec breaks its bounds")

// acceptedSpec checks what Normalize promises of a spec it accepts.
func acceptedSpec(sp workqueue.Spec) error {
	switch {
	case workqueue.ValidateID(sp.ID) != nil, workqueue.ValidateQueue(sp.Queue) != nil,
		sp.Batch != "" && workqueue.ValidateBatch(sp.Batch) != nil,
		sp.Priority < workqueue.MinPriority || sp.Priority > workqueue.MaxPriority,
		sp.Timeout < time.Second || sp.Timeout > workqueue.MaxTimeout,
		sp.NotBefore.After(fuzzNow.Add(workqueue.MaxDelay)),
		(&structpb.Struct{}).UnmarshalJSON(sp.Payload) != nil:
		return errBrokenContract
	}
	return nil
}

// FuzzRequests decodes arbitrary bytes as a socket request with the
// strict JSON codec, as the sidecar does, and runs the handler's checks on
// what decodes: they never panic; what they accept is within every bound
// (acceptedSpec, the duration and progress bounds); what they refuse is
// INVALID_ARGUMENT naming a field the request has.
func FuzzRequests(f *testing.F) {
	sec := strings.Repeat("0", 32)
	for _, s := range []struct {
		kind uint8
		body string
	}{
		{0, `{"queues":["tts"],"wait":"2.5s"}`},
		{0, `{"queues":["a/b"]}`},
		{0, `{"wiat":"5s"}`},
		{1, `{"tasks":[{"id":"u1","payload":{"syn_text":"hi"},"timeout":"30s","notBefore":"2027-01-01T00:00:00Z","priority":5,"batch":"b1","require":{"model":"indextts2"}}]}`},
		{1, `{"tasks":[{"payload":{}},{"payload":{"x":1},"timeout":"315576000000s"}]}`},
		{1, `{"tasks":[{"payload":{},"notBefore":"2300-01-01T00:00:00Z"}]}`},
		{2, `{"claim":"t@1.` + sec + `","retryAfter":"9000000000s"}`},
		{3, `{"claim":"t@1.` + sec + `","progress":"NaN"}`},
		{3, `{"claim":"c","progress":0.5}`},
		{4, `{"name":"gpu-0","wait":"1000s","session":"s"}`},
		{4, `{"name":"a/b"}`},
	} {
		f.Add(s.kind, []byte(s.body))
	}
	store := fuzzStore(f)
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		msgs := []proto.Message{&batonv1.NextRequest{}, &batonv1.SubmitRequest{}, &batonv1.FailRequest{}, &batonv1.HeartbeatRequest{}, &batonv1.LockRequest{}}
		m := msgs[int(kind)%len(msgs)]
		if err := (strictJSON{"json"}).Unmarshal(body, m); err != nil {
			return
		}
		err := validateRequest(store, m)
		if err == nil {
			if hb, ok := m.(*batonv1.HeartbeatRequest); ok && !(hb.GetProgress() >= 0 && hb.GetProgress() <= 1) {
				t.Fatalf("heartbeat progress %v accepted", hb.GetProgress())
			}
			return
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !namesField(m.ProtoReflect(), connectMessage(err)) {
			t.Fatalf("%T %s: error %v is not INVALID_ARGUMENT naming a field of the request", m, body, err)
		}
	})
}
