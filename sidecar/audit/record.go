package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key layout, relative to the deployment's namespace.
const (
	// Prefix holds the records.
	Prefix = "audit/"
	// cursorKey holds the revision up to which records were logged.
	cursorKey = "auditcursor"
)

// Action is what an operator did. The set is fixed (Actions), so that it
// can label a metric.
type Action string

// Actions recorded.
const (
	TaskCancel  Action = "task.cancel"
	TaskRetry   Action = "task.retry"
	QueuePause  Action = "queue.pause"
	QueueResume Action = "queue.resume"
	ConfigSet   Action = "config.set"
)

// Actions are every Action, in a stable order.
var Actions = []Action{TaskCancel, TaskRetry, QueuePause, QueueResume, ConfigSet}

// Known reports whether a is one of Actions (a record written by a newer
// client may hold another).
func (a Action) Known() bool { return slices.Contains(Actions, a) }

// maxField bounds each text field of a record, in bytes.
const maxField = 256

// Actor is who did an action, as the writing client reports it.
type Actor struct {
	// UID and User are the OS user running the client.
	UID  int    `json:"uid"`
	User string `json:"user,omitempty"`
	// Host is the client's host name; PID its process.
	Host string `json:"host,omitempty"`
	PID  int    `json:"pid"`
	// EtcdUser is the etcd user the client logged in as; empty without
	// etcd authentication.
	EtcdUser string `json:"etcd_user,omitempty"`
	// Via says how the action came when not from the baton CLI: "web
	// page from ADDR" for the operator page (package ui), whose actions
	// run in the sidecar's process and so carry its user, host and pid.
	Via string `json:"via,omitempty"`
}

// LocalActor is this process: its OS user, host and pid, and the given
// etcd user.
func LocalActor(etcdUser string) Actor {
	a := Actor{UID: os.Getuid(), PID: os.Getpid(), EtcdUser: etcdUser}
	if u, err := user.Current(); err == nil {
		a.User = u.Username
	}
	a.Host, _ = os.Hostname()
	return a
}

// Record is one operator action.
type Record struct {
	// Key is the record's etcd key (relative to the namespace); Revision
	// the etcd revision of the transaction that did the action and wrote
	// the record (for config.set, the document's new revision). Neither
	// is stored in the record itself.
	Key      string `json:"key,omitempty"`
	Revision int64  `json:"revision,omitempty"`
	// TimeMS is when, by the writer's clock (Unix ms).
	TimeMS int64  `json:"time_ms"`
	Action Action `json:"action"`
	// Object is what the action was done to: a task id, a queue, a
	// configuration document's name.
	Object string `json:"object"`
	// Detail says more, for example the state a cancelled task was in.
	Detail string `json:"detail,omitempty"`
	Actor
}

// Time is TimeMS as a time.
func (r Record) Time() time.Time { return time.UnixMilli(r.TimeMS) }

// LogArgs are the record's slog attributes.
func (r Record) LogArgs() []any {
	return []any{"action", string(r.Action), "object", r.Object, "detail", r.Detail,
		"uid", r.UID, "user", r.User, "host", r.Host, "pid", r.PID, "etcd_user", r.EtcdUser, "via", r.Via,
		"at", r.Time().UTC(), "revision", r.Revision}
}

// clip cuts s to at most maxField bytes, on a rune boundary.
func clip(s string) string {
	if len(s) <= maxField {
		return s
	}
	s = s[:maxField]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// recordKey is the key of a record written at t: it sorts by t.
func recordKey(t time.Time, suffix string) string {
	return fmt.Sprintf("%s%019d-%s", Prefix, max(t.UnixNano(), 0), suffix)
}

// decode reads a stored record.
func decode(key string, value []byte, rev int64) (Record, error) {
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		return Record{}, fmt.Errorf("audit record %s: %w", key, err)
	}
	r.Key, r.Revision = key, rev
	return r, nil
}

// List returns the newest limit records (all when limit <= 0), oldest
// first, and whether there are more. kv must be the namespaced client.
// A record that does not decode is left out and counted in skipped.
func List(ctx context.Context, kv clientv3.KV, limit int) (recs []Record, more bool, skipped int, err error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := kv.Get(ctx, Prefix, opts...)
	if err != nil {
		return nil, false, 0, err
	}
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		kv := resp.Kvs[i]
		r, err := decode(string(kv.Key), kv.Value, kv.ModRevision)
		if err != nil {
			skipped++
			continue
		}
		recs = append(recs, r)
	}
	return recs, resp.More, skipped, nil
}

// parseCursor reads auditcursor's value; 0 when missing or bad.
func parseCursor(v []byte) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}
