package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/workqueue"
)

// AnyQueue in Scope.Submit lets Submit name any queue (`--submit-queue
// '*'`). It is not a valid queue name, so it cannot mean a queue.
const AnyQueue = "*"

// Scope is the queues a socket caller may reach through one sidecar: Next
// takes only from the queues the sidecar serves, Submit writes only to
// the queues it may submit to. Without it any process allowed on the
// socket could drain or flood every queue of the namespace.
//
// Only Next and Submit name queues. Heartbeat, Complete, Fail and Release
// name claims, which the sidecar holds only for tasks of its own queues;
// locks and config documents are not queues and stay namespace-wide
// (docs/decisions.md, D-scope1).
//
// A Scope is read-only once the handler serves: safe for concurrent use.
type Scope struct {
	// Serve are the sidecar's queues (--queue), in its order of
	// preference: what Next takes from, and its default.
	Serve []string
	// Submit are the queues Submit may name (--submit-queue); AnyQueue
	// among them allows every queue. Empty: none.
	Submit []string
}

// checkNext refuses a queue this sidecar does not serve. field names the
// request field (queues[i]).
func (s Scope) checkNext(field, q string) error {
	if err := workqueue.ValidateQueue(q); err != nil {
		return invalidArg(field, err.Error())
	}
	if slices.Contains(s.Serve, q) {
		return nil
	}
	return denied(field, fmt.Sprintf("queue %q is not served by this sidecar (its queues: %s)", q, listQueues(s.Serve)))
}

// checkSubmit refuses a queue this sidecar may not submit to.
func (s Scope) checkSubmit(field, q string) error {
	if err := workqueue.ValidateQueue(q); err != nil {
		return invalidArg(field, err.Error())
	}
	if slices.Contains(s.Submit, q) || slices.Contains(s.Submit, AnyQueue) {
		return nil
	}
	return denied(field, fmt.Sprintf("queue %q is not one this sidecar may submit to (its submit queues: %s)", q, listQueues(s.Submit)))
}

// listQueues shows queues in an error: at most 16 of them, so that the
// error stays short whatever the configuration.
func listQueues(qs []string) string {
	const most = 16
	switch {
	case len(qs) == 0:
		return "none"
	case len(qs) > most:
		return strings.Join(qs[:most], ", ") + fmt.Sprintf(" and %d more", len(qs)-most)
	}
	return strings.Join(qs, ", ")
}

func denied(field, msg string) error {
	return connect.NewError(connect.CodePermissionDenied, errors.New(field+": "+msg))
}

// refuseScope logs a request refused by the scope and counts it; rpc is
// Next or Submit. The line names the caller (peer_uid, peer_pid: ctx's
// log attributes, withPeer). The queue is in the log line only: a metric
// label would grow with whatever names callers send.
func refuseScope(ctx context.Context, log *slog.Logger, m *telemetry.Metrics, rpc telemetry.ScopedRPC, err error) error {
	m.ScopeDenied(rpc)
	log.InfoContext(ctx, "request refused: queue out of this sidecar's scope", "op", string(rpc), "err", err)
	return err
}
