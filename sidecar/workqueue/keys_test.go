package workqueue

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestParseClaimCanonicalOnly(t *testing.T) {
	sec := strings.Repeat("ab", 16)
	id, token, secret, err := ParseClaim("utt_1@42." + sec)
	if err != nil || id != "utt_1" || token != 42 || secret != sec {
		t.Fatalf("ParseClaim = %q %d %q %v", id, token, secret, err)
	}
	for _, bad := range []string{
		"utt_1@42", "utt_1@+42." + sec, "utt_1@042." + sec, "utt_1@-42." + sec, "utt_1@0." + sec,
		"utt_1@42." + strings.ToUpper(sec), "utt_1@42." + sec[:31], "utt_1@42." + sec + "0", "@42." + sec,
		"bad id@42." + sec, "utt_1@99999999999999999999." + sec,
	} {
		if _, _, _, err := ParseClaim(bad); err == nil {
			t.Errorf("ParseClaim(%q) accepted", bad)
		}
	}
}

// The error for a malformed claim quotes a bounded part of it: a socket
// caller's 1 MiB claim came back whole in the error before.
func TestMalformedClaimErrorIsShort(t *testing.T) {
	_, _, _, err := ParseClaim(strings.Repeat("\x1b", 1<<20))
	if err == nil || len(err.Error()) > 4*maxClaimLen+100 || !strings.Contains(err.Error(), "1048576 bytes") {
		t.Fatalf("error of %d bytes: %.200v", len(err.Error()), err)
	}
}

// FuzzParseClaim: whatever ParseClaim accepts formats back to the same
// handle, and what FormatClaim makes parses back; a refusal's message is
// bounded whatever the claim's length.
func FuzzParseClaim(f *testing.F) {
	f.Add("t1@11." + strings.Repeat("0", 32))
	f.Add("a@b@7." + newClaimSecret())
	f.Add("t1@+11.x")
	f.Fuzz(func(t *testing.T, c string) {
		id, token, secret, err := ParseClaim(c)
		if err != nil {
			if len(err.Error()) > 4*maxClaimLen+100 {
				t.Fatalf("error of %d bytes for a claim of %d", len(err.Error()), len(c))
			}
			return
		}
		if back := FormatClaim(id, token, secret); back != c {
			t.Fatalf("ParseClaim(%q) formats back as %q", c, back)
		}
	})
}

// FuzzIndexKeys: every ready and delay key written for a valid task parses
// back to what was written (a key that does not parse would be skipped,
// and its task never handed out).
func FuzzIndexKeys(f *testing.F) {
	f.Add("tts", "utt_1", int32(0), int64(1_763_000_000_000_000_000), int64(0))
	f.Add("q.a-b", "x:y", int32(-1000), int64(0), int64(MaxDelay))
	f.Fuzz(func(t *testing.T, queue, id string, prio int32, order, delay int64) {
		if ValidateQueue(queue) != nil || ValidateID(id) != nil || prio < MinPriority || prio > MaxPriority || order < 0 || delay < 0 || delay > int64(MaxDelay) {
			return
		}
		e, err := parseReadyKey(readyKey(queue, prio, order, id))
		if err != nil || e.Queue != queue || e.ID != id || e.Priority != prio || e.Order != order {
			t.Fatalf("ready key round trip: %+v %v", e, err)
		}
		due := time.Now().Add(time.Duration(delay))
		got, gid, err := parseDelayKey(delayKey(due, id))
		if err != nil || gid != id || !got.Equal(time.Unix(0, due.UnixNano())) {
			t.Fatalf("delay key round trip: %v %q %v", got, gid, err)
		}
	})
}

// FuzzWaitKey: a wait key parses back to the lease and sequence it was
// made of, and whatever parseWaitKey accepts formats back the same.
func FuzzWaitKey(f *testing.F) {
	f.Add(uint64(0x694d8c1b2a3f4e5d), uint64(1), "q/w/694d8c1b2a3f4e5d/1")
	f.Add(uint64(1), uint64(1<<40), "q/w/0000000000000001/x")
	f.Fuzz(func(t *testing.T, lease, seq uint64, k string) {
		key := waitKey(clientv3.LeaseID(lease), seq)
		l, s, err := parseWaitKey(key)
		if err != nil || uint64(l) != lease || s != seq {
			t.Fatalf("wait key %q parsed as %x %d %v", key, l, s, err)
		}
		if l, s, err := parseWaitKey(k); err == nil && waitKey(l, s) != k {
			t.Fatalf("parseWaitKey(%q) formats back as %q", k, waitKey(l, s))
		}
	})
}

// TestParseIndexKeysCanonicalOnly: the parsers of ready and delay keys
// accept only what readyKey and delayKey write. Before, a signed or
// out-of-range priority, a negative order or due time, or an empty or
// slashed task id parsed, and the entry would have been claimed as a
// task that cannot exist (found by FuzzParseIndexKeys).
func TestParseIndexKeysCanonicalOnly(t *testing.T) {
	good := readyKey("tts", 5, 1_763_000_000_000_000_000, "utt_1")
	if _, err := parseReadyKey(good); err != nil {
		t.Fatalf("parseReadyKey(%q): %v", good, err)
	}
	for _, bad := range []string{
		"q/ready/tts/+995/1763000000000000000/utt_1",
		"q/ready/tts/-001/1763000000000000000/utt_1",
		"q/ready/tts/9999/1763000000000000000/utt_1",
		"q/ready/tts/0995/-763000000000000000/utt_1",
		"q/ready/tts/0995/+763000000000000000/utt_1",
		"q/ready/tts/0995/1763000000000000000/",
		"q/ready/tts/0995/1763000000000000000/a/b",
		"q/ready//0995/1763000000000000000/utt_1",
		"q/ready/t s/0995/1763000000000000000/utt_1",
	} {
		if e, err := parseReadyKey(bad); err == nil {
			t.Errorf("parseReadyKey(%q) accepted: %+v", bad, e)
		}
	}
	for _, bad := range []string{
		"q/delay/-000000000000000001/utt_1", "q/delay/+763000000000000000/utt_1",
		"q/delay/1763000000000000000/", "q/delay/1763000000000000000/a/b", "q/delay/17/utt_1",
	} {
		if due, id, err := parseDelayKey(bad); err == nil {
			t.Errorf("parseDelayKey(%q) accepted: %v %q", bad, due, id)
		}
	}
}

// FuzzParseIndexKeys: whatever parseReadyKey or parseDelayKey accepts is
// a key that readyKey or delayKey writes, byte for byte, for a valid
// queue, priority and task id; the entry of any other key is skipped,
// never claimed.
func FuzzParseIndexKeys(f *testing.F) {
	f.Add(readyKey("tts", 5, 1_763_000_000_000_000_000, "utt_1"))
	f.Add(readyKey("q.a-b", MinPriority, 0, "x:y"))
	f.Add(delayKey(time.Unix(0, 1_763_000_000_000_000_000), "utt_1"))
	f.Add("q/ready/tts/+995/1763000000000000000/utt_1")
	f.Add("q/delay/-000000000000000001/utt_1")
	f.Fuzz(func(t *testing.T, k string) {
		if e, err := parseReadyKey(k); err == nil {
			if ValidateQueue(e.Queue) != nil || ValidateID(e.ID) != nil || e.Priority < MinPriority || e.Priority > MaxPriority || e.Order < 0 {
				t.Fatalf("parseReadyKey(%q) = %+v: out of what is ever written", k, e)
			}
			if back := readyKey(e.Queue, e.Priority, e.Order, e.ID); back != k {
				t.Fatalf("parseReadyKey(%q) formats back as %q", k, back)
			}
		}
		if due, id, err := parseDelayKey(k); err == nil {
			if ValidateID(id) != nil || due.UnixNano() < 0 {
				t.Fatalf("parseDelayKey(%q) = %v %q: out of what is ever written", k, due, id)
			}
			if back := delayKey(due, id); back != k {
				t.Fatalf("parseDelayKey(%q) formats back as %q", k, back)
			}
		}
	})
}

// FuzzNames: a task id, queue or batch name is accepted only when it
// cannot escape the keys it is used in: printable ASCII without "/", so
// that each key built from it lies under its own prefix, cuts back to the
// name, and no other accepted name's prefix contains it (batch "a" does
// not list the members of "a/b"; queue "q" does not see the ready
// entries of "q/x"). Claim handles made for an accepted id parse back.
func FuzzNames(f *testing.F) {
	f.Add("utt_1", "tts", "b1", "b2")
	f.Add("a/b", "q/x", "..", ".")
	f.Add("x:y", "a.b-c", "a", "a:b")
	f.Add("\x1b[31m", "", "é", strings.Repeat("x", 129))
	f.Fuzz(func(t *testing.T, id, queue, batch, other string) {
		accepted := func(check func(string) error, s string, max int) bool {
			err := check(s)
			if err != nil {
				if err.Error() == "" {
					t.Fatalf("%q refused with an empty error", s)
				}
				return false
			}
			if s == "" || len(s) > max || strings.ContainsAny(s, "/ ") {
				t.Fatalf("%q accepted", s)
			}
			for i := 0; i < len(s); i++ {
				if s[i] < 0x21 || s[i] > 0x7e {
					t.Fatalf("%q accepted with byte %#x", s, s[i])
				}
			}
			return true
		}
		if accepted(ValidateID, id, MaxIDLen) {
			for _, k := range []struct{ prefix, key string }{
				{prefixTask, taskKey(id)}, {prefixState, stateKey(id)}, {prefixResult, resultKey(id)}, {prefixError, errorKey(id)},
				{prefixClaim, claimKey(id)}, {prefixRun, runKey(id)}, {prefixCancel, cancelKey(id)},
			} {
				if rest, ok := strings.CutPrefix(k.key, k.prefix); !ok || rest != id {
					t.Fatalf("key %q of id %q does not cut back to it under %q", k.key, id, k.prefix)
				}
			}
			for _, token := range []int64{1, 1 << 62} {
				sec := newClaimSecret()
				gid, gtok, gsec, err := ParseClaim(FormatClaim(id, token, sec))
				if err != nil || gid != id || gtok != token || gsec != sec {
					t.Fatalf("claim of %q, %d does not parse back: %q %d %v", id, token, gid, gtok, err)
				}
			}
		}
		if accepted(ValidateQueue, queue, MaxQueueLen) {
			if rest, ok := strings.CutPrefix(pauseKey(queue), prefixPause); !ok || rest != queue {
				t.Fatalf("pause key %q does not cut back to %q", pauseKey(queue), queue)
			}
			if ValidateQueue(other) == nil && other != queue && strings.HasPrefix(readyKey(other, 0, 0, "t"), readyPrefix(queue)) {
				t.Fatalf("ready entries of queue %q lie under the prefix of queue %q", other, queue)
			}
		}
		if accepted(ValidateBatch, batch, MaxIDLen) {
			if rest, ok := strings.CutPrefix(pinKey(batch), prefixPin); !ok || rest != batch {
				t.Fatalf("pin key %q does not cut back to %q", pinKey(batch), batch)
			}
			p := batchPrefix(batch) // what eachMember reads
			if rest := strings.TrimPrefix(memberKey(batch, 1<<62), p); ValidateID(rest) != nil {
				t.Fatalf("member key %q of batch %q does not cut back to a name: %q", memberKey(batch, 1<<62), batch, rest)
			}
			if ValidateID(id) == nil && strings.TrimPrefix(formerMemberKey(batch, id), p) != id {
				t.Fatalf("member key %q of batch %q does not cut back to id %q", formerMemberKey(batch, id), batch, id)
			}
			if ValidateBatch(other) == nil && other != batch && strings.HasPrefix(memberKey(other, 0), p) {
				t.Fatalf("members of batch %q lie under the prefix of batch %q", other, batch)
			}
		}
	})
}

// FuzzStatus: the record written to state/<id> (and to the task's index
// and claim keys) decodes to what was encoded, and whatever decodes from
// arbitrary bytes encodes and decodes again to the same record.
func FuzzStatus(f *testing.F) {
	f.Add([]byte(`{"state":"PENDING","queue":"tts","attempt":0,"max_attempts":3,"timeout_ms":30000,"order":1,"index":"q/ready/tts/1000/0000000000000000001/a","updated_ms":1,"require":{"model":"x"}}`))
	f.Add([]byte(`{"state":"CLAIMED","queue":"tts","priority":-1000,"lease":7,"deadline_ms":9223372036854775807}`))
	f.Add([]byte(`{"require":{},"affinity":"\u001b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeStatus(b)
		if err != nil {
			return
		}
		enc := st.encode()
		back, err := decodeStatus([]byte(enc))
		if err != nil {
			t.Fatalf("encode of %+v does not decode: %v", st, err)
		}
		if len(st.Require) == 0 && len(back.Require) == 0 {
			st.Require, back.Require = nil, nil // omitempty: empty and absent are the same record
		}
		if !reflect.DeepEqual(st, back) {
			t.Fatalf("state record does not round trip:\n%+v\n%+v", st, back)
		}
		if again := back.encode(); again != enc {
			t.Fatalf("encoding is not stable: %s then %s", enc, again)
		}
	})
}

// FuzzReadyRecord: the short value of a ready entry (readyRecord) decodes,
// with its key, to a status whose encoding decodes to the same status:
// leaving out the defaults and what the key says loses nothing.
func FuzzReadyRecord(f *testing.F) {
	f.Add([]byte(``))
	f.Add([]byte(`2{"b":"corpus","pn":true,"a":"spk_0001","l":{"model":"glm"}}`))
	f.Add([]byte(`2{"m":3,"t":300000,"n":2,"u":1}`))
	f.Add([]byte(`2{"m":-1,"t":0,"u":1796278921674,"l":{}}`))
	key := readyKey("tts", 5, 1796278921674403805, "utt_00000001")
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0] == '{' {
			return // the format before D-size6: read, never written (TestReadyAndSpecOfTheFormerFormat)
		}
		st, err := decodeReady(key, b)
		if err != nil {
			return
		}
		enc := encodeReady(st)
		back, err := decodeReady(key, []byte(enc))
		if err != nil {
			t.Fatalf("encodeReady of %+v does not decode: %v", st, err)
		}
		if len(st.Require) == 0 && len(back.Require) == 0 {
			st.Require, back.Require = nil, nil // omitempty: empty and absent are the same record
		}
		if !reflect.DeepEqual(st, back) {
			t.Fatalf("ready record does not round trip:\n%+v\n%+v", st, back)
		}
		if st.State != StatePending || st.Queue != "tts" || st.Priority != 5 || st.Index != key {
			t.Fatalf("the key's fields are not the status's: %+v", st)
		}
	})
}

// FuzzTraceparent: a spec gives back the traceparent it was given, in 25
// bytes when it is a canonical version-00 one.
func FuzzTraceparent(f *testing.F) {
	f.Add("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	f.Add("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01")
	f.Add("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra")
	f.Add("")
	f.Fuzz(func(t *testing.T, tp string) {
		sp := spec{Queue: "tts", Order: 1, Payload: json.RawMessage(`{}`), Traceparent: tp}
		b := encodeSpec(sp)
		back, err := decodeSpec(b)
		if err != nil {
			t.Fatalf("spec %q does not decode: %v", b, err)
		}
		if back.Traceparent != tp {
			t.Fatalf("traceparent %q came back as %q", tp, back.Traceparent)
		}
		bare := len(encodeSpec(spec{Queue: "tts", Order: 1, Payload: json.RawMessage(`{}`)}))
		if _, short := traceparentBytes(tp); short && len(b) != bare+25 {
			t.Fatalf("traceparent %q stored in %d bytes", tp, len(b)-bare)
		}
	})
}
