package sidecar_test

import (
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// TestLeaseExpiryRecoveredByWatch: a claim lost with its sidecar's lease
// is returned by another sidecar's watch, not only by the periodic sweep.
// The survivor's sweep runs once at start and then not for an hour, so
// only the watch (which carries no previous values; the lost claim is
// looked up in state/<id>) can bring the task back in time.
func TestLeaseExpiryRecoveredByWatch(t *testing.T) {
	t.Parallel()
	survivor, ns := start(t, sidecar.Config{Queue: workqueue.Config{SweepInterval: time.Hour}})
	submit(t, survivor, &batonv1.TaskSpec{Id: "synth-3", Payload: payload(t, map[string]any{})})
	const ttl = 2 * time.Second
	victim, id, token := startRole(t, "BATON_TEST_ROLE=sidecar", "BATON_TEST_ENDPOINT="+endpoint, "BATON_TEST_NS="+ns,
		"BATON_TEST_SOCKET="+sidecartest.SocketPath(t), "BATON_TEST_TTL="+ttl.String())
	if id != "synth-3" {
		t.Fatalf("victim claimed %s", id)
	}
	victim.Kill()
	killed := time.Now()
	// The lease expires about one TTL after the kill (etcd may grant up
	// to another TTL on a loaded machine); far less than the hour.
	task := next(t, survivor, 2*ttl+10*time.Second, "")
	if task == nil {
		t.Fatal("task not handed out again after the dead sidecar's lease expired")
	}
	t.Logf("task back %v after SIGKILL of its sidecar (ttl %v)", time.Since(killed).Round(time.Millisecond), ttl)
	if task.Id != id || task.Attempt != 2 || task.FencingToken <= token {
		t.Fatalf("task = %s attempt %d token %d; want %s attempt 2 token > %d", task.Id, task.Attempt, task.FencingToken, id, token)
	}
}
