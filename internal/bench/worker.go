package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar/client"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// This file holds what the bench's baton workers do over the socket, the
// same calls a Python worker makes.

// spec returns the TaskSpec of task id.
func spec(id string, n int) *batonv1.TaskSpec {
	return &batonv1.TaskSpec{Id: id, Queue: queue, Payload: &structpb.Struct{Fields: map[string]*structpb.Value{
		"n": structpb.NewNumberValue(float64(n)), "syn_text": structpb.NewStringValue("bench"),
	}}}
}

// submitChunk is how many tasks one Submit call carries when loading a
// queue; the sidecar writes them in transactions of at most 128 ops.
const submitChunk = 500

// submit enqueues tasks ids[from:to] of name(n) through the sidecars'
// Submit calls, spreading the calls over cs.
func submit(ctx context.Context, cs []*client.Client, from, to int, name func(int) string) error {
	var specs []*batonv1.TaskSpec
	call := 0
	flush := func() error {
		if len(specs) == 0 {
			return nil
		}
		c := cs[call%len(cs)]
		call++
		resp, err := c.Tasks.Submit(ctx, connect.NewRequest(&batonv1.SubmitRequest{Tasks: specs}))
		if err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		if int(resp.Msg.GetCreated()) != len(specs) {
			return fmt.Errorf("submit: %d of %d tasks created", resp.Msg.GetCreated(), len(specs))
		}
		specs = specs[:0]
		return nil
	}
	for n := from; n < to; n++ {
		specs = append(specs, spec(name(n), n))
		if len(specs) == submitChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// sessions are the worker sessions (Attach streams) of a set of clients.
type sessions struct {
	ids     []string
	cancel  context.CancelFunc
	stopFwd func() bool
	streams []*connect.ServerStreamForClient[batonv1.AttachResponse]
}

// attach opens one worker session per client. The sessions stay open
// until close, or until ctx ends.
func attach(ctx context.Context, cs []*client.Client) (*sessions, error) {
	actx, cancel := context.WithCancel(context.Background())
	s := &sessions{cancel: cancel, stopFwd: context.AfterFunc(ctx, cancel)}
	for i, c := range cs {
		st, err := c.Tasks.Attach(actx, connect.NewRequest(&batonv1.AttachRequest{Process: fmt.Sprintf("bench-worker-%d", i)}))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("attach: %w", err)
		}
		s.streams = append(s.streams, st)
		if !st.Receive() {
			s.close()
			return nil, fmt.Errorf("attach: no session: %w", st.Err())
		}
		s.ids = append(s.ids, st.Msg().GetSession())
	}
	return s, nil
}

// close ends the sessions (the sidecars see the streams close).
func (s *sessions) close() {
	s.stopFwd()
	s.cancel()
	for _, st := range s.streams {
		_ = st.Close()
	}
}

// next asks for a task under session, waiting up to wait; nil when none
// came.
func next(ctx context.Context, c *client.Client, session string, wait time.Duration) (*batonv1.Task, error) {
	resp, err := c.Tasks.Next(ctx, connect.NewRequest(&batonv1.NextRequest{
		Queues: []string{queue}, Wait: durationpb.New(wait), Session: session,
	}))
	if err != nil {
		return nil, fmt.Errorf("next: %w", err)
	}
	return resp.Msg.GetTask(), nil
}

// pause waits d, or until ctx ends: a worker's back-off before asking
// again.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// errAmbiguousComplete is a Complete answered UNAVAILABLE and then, when
// asked again, FailedPrecondition: the first may have finished the task
// (etcd applied it but the answer timed out) or the claim may have lapsed
// meanwhile. A worker cannot tell; the bench counts the task as done.
var errAmbiguousComplete = errors.New("complete answered UNAVAILABLE, then the claim was gone")

// complete finishes t. A Complete answered UNAVAILABLE (etcd did not
// answer in time: "retry") is asked again, as a worker must
// (docs/reliability.md), backing off from 50ms to 2s, until ctx ends.
func complete(ctx context.Context, c *client.Client, t *batonv1.Task) error {
	backoff, retried := retryAfter, false
	for {
		_, err := c.Tasks.Complete(ctx, connect.NewRequest(&batonv1.CompleteRequest{Claim: t.GetClaim()}))
		switch {
		case err == nil:
			return nil
		case ctx.Err() == nil && connect.CodeOf(err) == connect.CodeUnavailable:
			retried = true
			pause(ctx, backoff)
			backoff = min(2*backoff, 2*time.Second)
			continue
		case retried && connect.CodeOf(err) == connect.CodeFailedPrecondition:
			return fmt.Errorf("complete %s: %w", t.GetId(), errAmbiguousComplete)
		}
		return fmt.Errorf("complete %s: %w", t.GetId(), err)
	}
}
