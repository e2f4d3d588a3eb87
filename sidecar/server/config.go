package server

import (
	"context"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/gen/baton/v1/batonv1connect"
	"github.com/batonhq/baton/sidecar/configdoc"
	"github.com/batonhq/baton/sidecar/telemetry"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"
)

// ConfigHandler implements ConfigService on a configdoc.Store.
type ConfigHandler struct {
	Store  *configdoc.Store
	Logger *slog.Logger
	// TracerProvider traces each Watch delivery (baton.config.deliver); may
	// be nil.
	TracerProvider trace.TracerProvider
}

var _ batonv1connect.ConfigServiceHandler = (*ConfigHandler)(nil)

func documentProto(d configdoc.Document) (*structpb.Struct, error) {
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON(d.Data); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("config %s at revision %d: %w", d.Name, d.Revision, err))
	}
	return s, nil
}

// Get returns the current version of a document.
func (h *ConfigHandler) Get(ctx context.Context, req *connect.Request[batonv1.GetRequest]) (*connect.Response[batonv1.GetResponse], error) {
	if err := configdoc.ValidateName(req.Msg.GetName()); err != nil {
		return nil, invalidArg("name", err.Error())
	}
	ectx, cancel := etcdContext(ctx)
	defer cancel()
	d, err := h.Store.Get(ectx, req.Msg.GetName())
	if err != nil {
		return nil, rpcErr(ctx, err)
	}
	doc, err := documentProto(d)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&batonv1.GetResponse{Document: doc, Revision: d.Revision}), nil
}

// Watch streams the document each time it changes, until the caller goes
// away.
func (h *ConfigHandler) Watch(ctx context.Context, req *connect.Request[batonv1.WatchRequest], stream *connect.ServerStream[batonv1.WatchResponse]) error {
	if err := configdoc.ValidateName(req.Msg.GetName()); err != nil {
		return invalidArg("name", err.Error())
	}
	if req.Msg.GetAfterRevision() < 0 {
		return invalidArg("after_revision", "must not be negative")
	}
	// Send the response headers now: a watcher that is up to date gets no
	// message until the next change, and its client must not wait for one
	// to learn the call was accepted.
	if err := stream.Send(nil); err != nil {
		return err
	}
	err := h.Store.Watch(ctx, req.Msg.GetName(), req.Msg.GetAfterRevision(), func(d configdoc.Document) error {
		_, span := telemetry.StartConfigDelivery(ctx, h.TracerProvider, d.Name, d.Revision)
		defer span.End()
		doc, err := documentProto(d)
		if err == nil {
			err = stream.Send(&batonv1.WatchResponse{Document: doc, Revision: d.Revision})
		}
		if err != nil {
			span.RecordError(err)
		}
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	return toConnect(err)
}
