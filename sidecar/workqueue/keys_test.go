package workqueue

import (
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

// FuzzParseClaim: whatever ParseClaim accepts formats back to the same
// handle, and what FormatClaim makes parses back.
func FuzzParseClaim(f *testing.F) {
	f.Add("t1@11." + strings.Repeat("0", 32))
	f.Add("a@b@7." + newClaimSecret())
	f.Add("t1@+11.x")
	f.Fuzz(func(t *testing.T, c string) {
		id, token, secret, err := ParseClaim(c)
		if err != nil {
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
