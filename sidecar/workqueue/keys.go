package workqueue

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/sidecar/internal/names"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Key layout, relative to the deployment's namespace prefix:
//
//	task/<id>                               spec: payload and settings, written once (spec.go)
//	state/<id>                              the task's current Status (canonical); absent while a
//	                                        task submitted ready has not moved (statuses.go)
//	result/<id>                             the result JSON of a DONE task
//	error/<id>                              the last error of a failed attempt
//	batch/<batch>/<order>                   membership of a batch: the ids of its tasks that one
//	                                        submit transaction created (members.go)
//	q/ready/<queue>/<prio>/<order>/<id>     PENDING and eligible now; value: readyRecord (a format
//	                                        byte and what the key does not say; the byte alone for
//	                                        a plain task)
//	q/delay/<due>/<id>                      waiting for backoff or not_before; value: Status
//	q/claim/<id>                            live claim, bound to the sidecar's lease; value: Status
//	q/run/<id>                              durable marker of a CLAIMED task (no lease)
//	q/cancel/<id>                           an operator asked to cancel the CLAIMED task; value: token
//	q/pause/<queue>                         the queue is paused: nothing is handed out
//	q/w/<lease>/<seq>                       a waiting Next call of the sidecar holding lease, and
//	                                        then the task assigned to it (see wait.go)
//	elect/scheduler/<lease>                 candidates for the fleet's scheduler (see scheduler.go)
//	gc/<finished>/<id>                      retention index of finished tasks; value: batch
//	pin/<batch>                             the config document pinned with a batch (Pin)
//	workers/<worker id>                     registry entry of a live sidecar, under its lease
//
// The scheduler watches q/; every other sidecar watches only its own
// q/w/<lease>/. Index keys sort in the order work is
// handed out: <prio> is 1000-priority in four digits (higher priority
// first), <order> and <due> are Unix nanoseconds in 19 digits.
const (
	prefixTask   = "task/"
	prefixState  = "state/"
	prefixResult = "result/"
	prefixError  = "error/"
	prefixBatch  = "batch/"
	prefixQ      = "q/"
	prefixReady  = "q/ready/"
	prefixDelay  = "q/delay/"
	prefixClaim  = "q/claim/"
	prefixRun    = "q/run/"
	prefixCancel = "q/cancel/"
	prefixPause  = "q/pause/"
	prefixWait   = "q/w/"
	prefixGC     = "gc/"
	prefixPin    = "pin/"
)

// Limits on names.
const (
	MaxIDLen    = 128
	MaxQueueLen = 64
	MinPriority = -1000
	MaxPriority = 1000
)

func taskKey(id string) string        { return prefixTask + id }
func stateKey(id string) string       { return prefixState + id }
func resultKey(id string) string      { return prefixResult + id }
func errorKey(id string) string       { return prefixError + id }
func claimKey(id string) string       { return prefixClaim + id }
func runKey(id string) string         { return prefixRun + id }
func cancelKey(id string) string      { return prefixCancel + id }
func pauseKey(q string) string        { return prefixPause + q }
func pinKey(batch string) string      { return prefixPin + batch }
func readyPrefix(queue string) string { return prefixReady + queue + "/" }

func readyKey(queue string, priority int32, order int64, id string) string {
	return fmt.Sprintf("%s%s/%04d/%019d/%s", prefixReady, queue, MaxPriority-int(priority), order, id)
}

func delayKey(due time.Time, id string) string {
	return fmt.Sprintf("%s%019d/%s", prefixDelay, due.UnixNano(), id)
}

func gcKey(finished time.Time, id string) string {
	return fmt.Sprintf("%s%019d/%s", prefixGC, finished.UnixNano(), id)
}

// gcUpTo is the exclusive end of the gc range holding tasks finished before t.
func gcUpTo(t time.Time) string { return fmt.Sprintf("%s%019d", prefixGC, t.UnixNano()) }

// delayUpTo is the exclusive end of the delay range holding entries due
// at or before t.
func delayUpTo(t time.Time) string { return fmt.Sprintf("%s%019d/\xff", prefixDelay, t.UnixNano()) }

// readyEntry is a parsed ready index key.
type readyEntry struct {
	Queue    string
	Priority int32
	Order    int64
	ID       string
}

// parseReadyKey accepts only what readyKey writes: a valid queue and task
// id, a priority within MinPriority..MaxPriority and a non-negative order,
// in their fixed widths. Anything else (a key written by hand or by a bug)
// is malformed, to be skipped and counted, never claimed (FuzzIndexKeys).
func parseReadyKey(k string) (readyEntry, error) {
	rest, ok := strings.CutPrefix(k, prefixReady)
	if !ok {
		return readyEntry{}, fmt.Errorf("not a ready key: %q", k)
	}
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) != 4 || ValidateQueue(parts[0]) != nil || ValidateID(parts[3]) != nil {
		return readyEntry{}, fmt.Errorf("malformed ready key: %q", k)
	}
	p, ok := fixedDigits(parts[1], 4)
	if !ok || p > MaxPriority-MinPriority {
		return readyEntry{}, fmt.Errorf("malformed priority in ready key: %q", k)
	}
	o, ok := fixedDigits(parts[2], 19)
	if !ok {
		return readyEntry{}, fmt.Errorf("malformed order in ready key: %q", k)
	}
	return readyEntry{Queue: parts[0], Priority: int32(MaxPriority - p), Order: o, ID: parts[3]}, nil
}

// parseDelayKey accepts only what delayKey writes: a non-negative due time
// in 19 digits and a valid task id.
func parseDelayKey(k string) (due time.Time, id string, err error) {
	rest, ok := strings.CutPrefix(k, prefixDelay)
	if !ok {
		return time.Time{}, "", fmt.Errorf("not a delay key: %q", k)
	}
	ns, id, ok := strings.Cut(rest, "/")
	n, nok := fixedDigits(ns, 19)
	if !ok || !nok || ValidateID(id) != nil {
		return time.Time{}, "", fmt.Errorf("malformed delay key: %q", k)
	}
	return time.Unix(0, n), id, nil
}

// fixedDigits parses s as exactly width decimal digits (no sign) that fit
// an int64.
func fixedDigits(s string, width int) (int64, bool) {
	if len(s) != width {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// ValidateID reports whether id can name a task: 1 to 128 bytes of ASCII
// letters, digits and "_.:-".
func ValidateID(id string) error {
	return names.Check(id, MaxIDLen, "_.:-")
}

// ValidateQueue reports whether q can name a queue: 1 to 64 bytes of ASCII
// letters, digits and "_.-".
func ValidateQueue(q string) error {
	return names.Check(q, MaxQueueLen, "_.-")
}

// ValidateBatch reports whether b can name a batch (same rules as task ids).
func ValidateBatch(b string) error { return names.Check(b, MaxIDLen, "_.:-") }

// Claim handles are "<id>@<fencing token>.<secret>". The secret is 128
// random bits in hex, made by the sidecar that holds the claim when it
// hands the task to a worker session and kept only in that sidecar's
// memory (never in etcd): a handle is unguessable, even knowing the task
// id and the fencing token (which `baton tasks get` shows), and it is
// answerable only through the sidecar that holds the claim, by whoever it
// was handed to. Workers fence their outputs with the token, not the
// handle.

// claimSecretLen is the length of a claim handle's secret in hex digits.
const claimSecretLen = 32

// newClaimSecret returns a fresh claim secret.
func newClaimSecret() string {
	var b [claimSecretLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// FormatClaim returns the opaque claim handle for a task id, token and
// secret.
func FormatClaim(id string, token int64, secret string) string {
	return id + "@" + strconv.FormatInt(token, 10) + "." + secret
}

// ParseClaim splits a claim handle into task id, fencing token and
// secret. Only the canonical form is accepted: a token in decimal without
// sign or leading zeros, a secret of 32 lower-case hex digits.
func ParseClaim(c string) (id string, token int64, secret string, err error) {
	i := strings.LastIndexByte(c, '@')
	if i <= 0 {
		return "", 0, "", malformedClaim(c)
	}
	tok, secret, ok := strings.Cut(c[i+1:], ".")
	token, err = strconv.ParseInt(tok, 10, 64)
	if !ok || err != nil || token <= 0 || strconv.FormatInt(token, 10) != tok || !isLowerHex(secret, claimSecretLen) {
		return "", 0, "", malformedClaim(c)
	}
	id = c[:i]
	if err := ValidateID(id); err != nil {
		return "", 0, "", malformedClaim(c)
	}
	return id, token, secret, nil
}

// maxClaimLen is the longest claim handle: a task id, "@", a token of at
// most 19 digits, "." and the secret.
const maxClaimLen = MaxIDLen + 1 + 19 + 1 + claimSecretLen

// malformedClaim is the error for a claim that does not parse. It quotes
// at most maxClaimLen bytes of it: a claim comes from a socket caller, and
// a message of up to 4 MiB must not come back whole in the error (nor
// make the cost of an error grow with it, which kept FuzzParseClaim
// minimising long inputs).
func malformedClaim(c string) error {
	if len(c) > maxClaimLen {
		return fmt.Errorf("malformed claim %q... (%d bytes, longer than any claim)", c[:maxClaimLen], len(c))
	}
	return fmt.Errorf("malformed claim %q", c)
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Limits on times. Index keys hold Unix nanoseconds in 19 digits, which
// overflow past the year 2262; these bounds keep every time written far
// from that, and a far-future typo from parking a task for centuries.
const (
	// MaxTimeout bounds a task's heartbeat timeout.
	MaxTimeout = 7 * 24 * time.Hour
	// MaxDelay bounds how far ahead not_before and retry_after may be.
	MaxDelay = 366 * 24 * time.Hour
)

// Limits on routing fields.
const (
	MaxAffinityLen   = 256
	MaxRequire       = 16
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 256
)

// ValidateLabels reports whether m can be a task's required labels: at most
// MaxRequire pairs, keys 1 to 63 bytes of ASCII letters, digits and "_.-/",
// values at most 256 bytes. It names the bad key.
func ValidateLabels(m map[string]string) error {
	if len(m) > MaxRequire {
		return fmt.Errorf("%d labels, over the limit of %d", len(m), MaxRequire)
	}
	for k, v := range m {
		if err := names.Check(k, MaxLabelKeyLen, "_.-/"); err != nil {
			return fmt.Errorf("label %q: %w", k, err)
		}
		if len(v) > MaxLabelValueLen {
			return fmt.Errorf("label %q: value is %d bytes, over the limit of %d", k, len(v), MaxLabelValueLen)
		}
	}
	return nil
}

// LabelsMatch reports whether a sidecar with labels have may receive a task
// that requires want: every required key present with the same value.
func LabelsMatch(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func labelsLen(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v) + 6
	}
	return n
}

// ClaimPrefix is the prefix of the live claim keys, each bound to the
// lease of the sidecar holding it (for counting tasks in hand: see
// ClaimsByLease).
const ClaimPrefix = prefixClaim

// ClaimsByLease counts claim keys (read under ClaimPrefix) by the lease
// they are bound to.
func ClaimsByLease(kvs []*mvccpb.KeyValue) map[int64]int {
	n := make(map[int64]int)
	for _, kv := range kvs {
		n[kv.Lease]++
	}
	return n
}
