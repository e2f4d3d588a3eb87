package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
	"github.com/batonhq/baton/sidecar/coord"
	"github.com/batonhq/baton/sidecar/namedlock"
	"github.com/batonhq/baton/sidecar/telemetry"
	"github.com/batonhq/baton/sidecar/workqueue"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits on what one socket caller can make the sidecar hold.
const (
	// MaxWait bounds Next's long poll.
	MaxWait = 10 * time.Minute
	// MaxProcessName bounds the process name given to Attach.
	MaxProcessName = 256
	// MaxSessions bounds the sessions open on one sidecar (one GPU
	// worker's processes need one or a few).
	MaxSessions = 1024
	// MaxSubmitTasks bounds the tasks of one Submit call.
	MaxSubmitTasks = 10_000
)

// The version of the socket API, sent in the APIVersionHeader of every
// Attach response. It rises when a change would break a client written for
// the earlier one; clients compare it with their own on connect and say
// which side to upgrade (clients/python does).
const (
	APIVersion       = "1"
	APIVersionHeader = "Baton-Api-Version"
)

// TaskHandler implements TaskService on a Dispatcher.
type TaskHandler struct {
	Dispatcher *workqueue.Dispatcher
	Store      *workqueue.Store
	Sessions   *coord.Sessions
	// Scope is what Next and Submit may name: the sidecar's queues (the
	// default of Next, and the first of them the default queue of a
	// submitted task) and the queues it may submit to.
	Scope  Scope
	Logger *slog.Logger
	// Metrics counts calls refused by Scope; may be nil.
	Metrics *telemetry.Metrics
}

var _ batonv1connect.TaskServiceHandler = (*TaskHandler)(nil)

// Attach opens a session for the calling process for as long as the stream
// stays open.
func (h *TaskHandler) Attach(ctx context.Context, req *connect.Request[batonv1.AttachRequest], stream *connect.ServerStream[batonv1.AttachResponse]) error {
	if p := req.Msg.GetProcess(); len(p) > MaxProcessName || !utf8.ValidString(p) {
		return invalidArg("process", fmt.Sprintf("must be valid UTF-8 of at most %d bytes", MaxProcessName))
	}
	if n := h.Sessions.Len(); n >= MaxSessions {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%d sessions are open on this sidecar, the limit", n))
	}
	var pid int32
	if p, ok := PeerFrom(ctx); ok {
		pid = p.PID
	}
	s := h.Sessions.OpenFor(req.Msg.GetProcess(), pid)
	defer h.Sessions.Close(s)
	h.Logger.DebugContext(ctx, "session opened", "session", s.ID, "process", s.Process)
	stream.ResponseHeader().Set(APIVersionHeader, APIVersion)
	if err := stream.Send(&batonv1.AttachResponse{Session: s.ID}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			h.Logger.DebugContext(ctx, "session closed", "session", s.ID)
			return nil
		case msg := <-s.Pushes():
			var m *batonv1.AttachResponse
			switch msg := msg.(type) {
			case *batonv1.AttachResponse:
				m = msg
			case workqueue.CancelNotice:
				m = &batonv1.AttachResponse{Cancel: &batonv1.CancelRequested{TaskId: msg.TaskID, Claim: msg.Claim}}
			case namedlock.LockLost:
				m = &batonv1.AttachResponse{LockLost: &batonv1.LockLost{Name: msg.Name, FencingToken: msg.Token}}
			default:
				continue
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
}

func (h *TaskHandler) session(id string) (*coord.Session, error) {
	if id == "" {
		return nil, nil
	}
	s, err := h.Sessions.Get(id)
	if err != nil {
		return nil, toConnect(err)
	}
	return s, nil
}

// Next claims the next task, waiting up to the request's wait.
func (h *TaskHandler) Next(ctx context.Context, req *connect.Request[batonv1.NextRequest]) (*connect.Response[batonv1.NextResponse], error) {
	queues := req.Msg.GetQueues()
	if len(queues) == 0 {
		queues = h.Scope.Serve
	}
	if len(queues) == 0 {
		return nil, invalidArg("queues", "no queue given and the sidecar has no --queue")
	}
	// The count and the names first: the scope check below then never
	// runs over more than MaxQueuesPerNext names.
	if err := workqueue.CheckQueues(queues); err != nil {
		return nil, rpcErr(ctx, err)
	}
	for i, q := range req.Msg.GetQueues() {
		if err := h.Scope.checkNext(fmt.Sprintf("queues[%d]", i), q); err != nil {
			if connect.CodeOf(err) == connect.CodePermissionDenied {
				return nil, refuseScope(ctx, h.Logger, h.Metrics, telemetry.ScopedNext, err)
			}
			return nil, err
		}
	}
	wait, err := durationArg("wait", req.Msg.GetWait(), MaxWait)
	if err != nil {
		return nil, err
	}
	sess, err := h.session(req.Msg.GetSession())
	if err != nil {
		return nil, err
	}
	c, err := h.Dispatcher.Next(ctx, queues, wait, sess)
	if err != nil {
		return nil, rpcErr(ctx, err)
	}
	if c == nil {
		return connect.NewResponse(&batonv1.NextResponse{}), nil
	}
	t, err := taskProto(c)
	if err != nil {
		// A task that cannot be sent would come back on every attempt:
		// it is DEAD at once, with the reason, and not handed out.
		ectx, cancel := etcdContext(ctx)
		defer cancel()
		if _, _, ferr := h.Dispatcher.Fail(ectx, c.Claim(), "cannot be sent to a worker: "+err.Error(), true, 0); ferr != nil {
			h.Logger.ErrorContext(ctx, "marking a task that cannot be sent DEAD failed; it returns after its timeout", "task", c.ID, "err", ferr)
		}
		// The worker gets no task (it asks again); the log says why.
		h.Logger.ErrorContext(ctx, "a claimed task cannot be sent to a worker; it is DEAD", "task", c.ID, "err", err)
		return connect.NewResponse(&batonv1.NextResponse{}), nil
	}
	return connect.NewResponse(&batonv1.NextResponse{Task: t}), nil
}

func taskProto(c *workqueue.Claimed) (*batonv1.Task, error) {
	payload := &structpb.Struct{}
	if err := payload.UnmarshalJSON(c.Payload); err != nil {
		return nil, fmt.Errorf("task %s: payload: %w", c.ID, err)
	}
	t := &batonv1.Task{
		Id:           c.ID,
		Queue:        c.Status.Queue,
		Payload:      payload,
		Attempt:      c.Status.Attempt,
		MaxAttempts:  c.Status.MaxAttempts,
		Claim:        c.Claim(),
		FencingToken: c.Token,
		Deadline:     timestamppb.New(c.Deadline()),
		Batch:        c.Status.Batch,
		Traceparent:  c.Traceparent,
		Priority:     c.Status.Priority,
		Timeout:      durationpb.New(c.Status.Timeout()),
		Affinity:     c.Status.Affinity,
	}
	if p := c.Pin; p != nil {
		doc := &structpb.Struct{}
		if err := doc.UnmarshalJSON(p.Document); err != nil {
			return nil, fmt.Errorf("task %s: pinned config: %w", c.ID, err)
		}
		t.ConfigName, t.ConfigRevision, t.Config = p.Name, p.Revision, doc
	}
	return t, nil
}

func needClaim(c string) error {
	if c == "" {
		return invalidArg("claim", "is required")
	}
	return nil
}

// Heartbeat extends the claim's deadline.
func (h *TaskHandler) Heartbeat(ctx context.Context, req *connect.Request[batonv1.HeartbeatRequest]) (*connect.Response[batonv1.HeartbeatResponse], error) {
	if err := needClaim(req.Msg.GetClaim()); err != nil {
		return nil, err
	}
	if err := progressArg(req.Msg.GetProgress()); err != nil {
		return nil, err
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	st, err := h.Dispatcher.Heartbeat(ectx, req.Msg.GetClaim())
	if err != nil {
		return nil, h.answerErr(ctx, "Heartbeat", req.Msg.GetClaim(), err)
	}
	return connect.NewResponse(&batonv1.HeartbeatResponse{
		CancelRequested: st.CancelRequested,
		Deadline:        timestamppb.New(time.UnixMilli(st.DeadlineMS)),
	}), nil
}

// Complete finishes the task with its result.
func (h *TaskHandler) Complete(ctx context.Context, req *connect.Request[batonv1.CompleteRequest]) (*connect.Response[batonv1.CompleteResponse], error) {
	if err := needClaim(req.Msg.GetClaim()); err != nil {
		return nil, err
	}
	var result json.RawMessage
	if r := req.Msg.GetResult(); r != nil {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, invalidArg("result", err.Error())
		}
		result = b
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	if err := h.Dispatcher.Complete(ectx, req.Msg.GetClaim(), result); err != nil {
		return nil, h.answerErr(ctx, "Complete", req.Msg.GetClaim(), err)
	}
	return connect.NewResponse(&batonv1.CompleteResponse{}), nil
}

// Fail records a failed attempt.
func (h *TaskHandler) Fail(ctx context.Context, req *connect.Request[batonv1.FailRequest]) (*connect.Response[batonv1.FailResponse], error) {
	if err := needClaim(req.Msg.GetClaim()); err != nil {
		return nil, err
	}
	after, err := durationArg("retry_after", req.Msg.GetRetryAfter(), workqueue.MaxDelay)
	if err != nil {
		return nil, err
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	retry, at, err := h.Dispatcher.Fail(ectx, req.Msg.GetClaim(), req.Msg.GetError(), req.Msg.GetPermanent(), after)
	if err != nil {
		return nil, h.answerErr(ctx, "Fail", req.Msg.GetClaim(), err)
	}
	resp := &batonv1.FailResponse{WillRetry: retry}
	if retry {
		resp.RetryAt = timestamppb.New(at)
	}
	return connect.NewResponse(resp), nil
}

// Release gives the task back without using an attempt.
func (h *TaskHandler) Release(ctx context.Context, req *connect.Request[batonv1.ReleaseRequest]) (*connect.Response[batonv1.ReleaseResponse], error) {
	if err := needClaim(req.Msg.GetClaim()); err != nil {
		return nil, err
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	if err := h.Dispatcher.Release(ectx, req.Msg.GetClaim()); err != nil {
		return nil, h.answerErr(ctx, "Release", req.Msg.GetClaim(), err)
	}
	return connect.NewResponse(&batonv1.ReleaseResponse{}), nil
}

// Submit enqueues tasks; existing ids are left alone.
func (h *TaskHandler) Submit(ctx context.Context, req *connect.Request[batonv1.SubmitRequest]) (*connect.Response[batonv1.SubmitResponse], error) {
	if n := len(req.Msg.GetTasks()); n > MaxSubmitTasks {
		return nil, invalidArg("tasks", fmt.Sprintf("%d tasks, over the limit of %d per Submit; send them in parts (or use baton submit)", n, MaxSubmitTasks))
	}
	specs := make([]workqueue.Spec, len(req.Msg.GetTasks()))
	for i, t := range req.Msg.GetTasks() {
		field := fmt.Sprintf("tasks[%d]", i)
		sp, err := specFromProto(t, field)
		if err != nil {
			return nil, err
		}
		if sp.Queue == "" {
			if len(h.Scope.Serve) == 0 {
				return nil, invalidArg(field+".queue", "is required (the sidecar has no --queue)")
			}
			sp.Queue = h.Scope.Serve[0]
		}
		if err := h.Scope.checkSubmit(field+".queue", sp.Queue); err != nil {
			if connect.CodeOf(err) == connect.CodePermissionDenied {
				return nil, refuseScope(ctx, h.Logger, h.Metrics, telemetry.ScopedSubmit, err)
			}
			return nil, err
		}
		specs[i] = sp
	}
	if len(specs) == 0 {
		return nil, invalidArg("tasks", "at least one task is required")
	}
	// Tasks submitted without a trace context join the caller's trace
	// (the Submit call's span, continuing the caller's traceparent header).
	if tp := workqueue.FormatTraceparent(trace.SpanContextFromContext(ctx)); tp != "" {
		for i := range specs {
			if specs[i].Traceparent == "" {
				specs[i].Traceparent = tp
			}
		}
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	res, err := h.Store.Submit(ectx, specs)
	if err != nil {
		return nil, rpcErr(ctx, err)
	}
	created, existing := res.Counts()
	return connect.NewResponse(&batonv1.SubmitResponse{Ids: res.IDs, Created: int32(created), Existing: int32(existing)}), nil
}

func specFromProto(t *batonv1.TaskSpec, field string) (workqueue.Spec, error) {
	sp := workqueue.Spec{
		ID: t.GetId(), Queue: t.GetQueue(), Priority: t.GetPriority(), MaxAttempts: t.GetMaxAttempts(),
		Batch: t.GetBatch(), Traceparent: t.GetTraceparent(),
		// Checked by Store.Normalize, which names tasks[i].affinity and
		// tasks[i].require.
		Affinity: t.GetAffinity(), Require: t.GetRequire(),
	}
	if t.GetPayload() == nil {
		return sp, invalidArg(field+".payload", "is required")
	}
	b, err := t.GetPayload().MarshalJSON()
	if err != nil {
		return sp, invalidArg(field+".payload", err.Error())
	}
	sp.Payload = b
	// Store.Normalize checks the timeout's lower bound and how far ahead
	// not_before may be.
	if sp.Timeout, err = durationArg(field+".timeout", t.GetTimeout(), workqueue.MaxTimeout); err != nil {
		return sp, err
	}
	if sp.NotBefore, err = timestampArg(field+".not_before", t.GetNotBefore()); err != nil {
		return sp, err
	}
	return sp, nil
}

// answerErr maps the error of an answer to a claim (Complete, Fail,
// Release, Heartbeat). A refused answer (a stale, foreign or guessed
// claim) is logged with who sent it: the caller's uid and pid from the
// socket's peer credentials, and the process name and session id of the
// sessions that process opened on this sidecar (an answer carries
// no session; "-" when the process opened none; the first 4 when it
// opened more), and the claim's task.
func (h *TaskHandler) answerErr(ctx context.Context, op, claim string, err error) error {
	if errors.Is(err, workqueue.ErrClaimLost) {
		task, _, _ := strings.Cut(claim, "@")
		process, session := "-", "-"
		if p, ok := PeerFrom(ctx); ok {
			if ss := h.Sessions.OfPID(p.PID); len(ss) > 0 {
				var ps, ids []string
				for _, s := range ss[:min(len(ss), 4)] {
					ps, ids = append(ps, s.Process), append(ids, s.ID)
				}
				if len(ss) > 4 {
					ids = append(ids, fmt.Sprintf("and %d more", len(ss)-4))
				}
				process, session = strings.Join(ps, ","), strings.Join(ids, ",")
			}
		}
		// The caller's peer_uid and peer_pid come with ctx.
		h.Logger.InfoContext(ctx, "answer refused: the claim is not live on this sidecar", "op", op, "task", task, "process", process, "session", session)
	}
	return rpcErr(ctx, err)
}
