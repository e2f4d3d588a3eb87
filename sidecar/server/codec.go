package server

import (
	"encoding/json"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// strictJSON is connect's JSON codec, except that a request with a field
// the API does not have is refused (INVALID_ARGUMENT, naming the field)
// instead of the field being ignored: {"wiat": "5s"} must not become a
// Next without a wait. Binary protobuf (gRPC) is left as it is: its
// unknown fields come from newer clients, not typos.
//
// One former name is still read: AttachRequest's "worker", the name of its
// field 1 until that field became "process" (docs/decisions.md, D-words1),
// so that clients written before then keep attaching. It is dropped when the
// socket API's version rises.
type strictJSON struct{ name string }

// JSONCodecs are the handler options that install strictJSON for both
// names connect gives JSON.
func JSONCodecs() []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithCodec(strictJSON{"json"}), connect.WithCodec(strictJSON{"json; charset=utf-8"})}
}

func (c strictJSON) Name() string { return c.name }

func (c strictJSON) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto.Message", m)
	}
	return protojson.MarshalOptions{}.Marshal(pm)
}

func (c strictJSON) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto.Message", m)
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	if _, ok := pm.(*batonv1.AttachRequest); ok {
		b = formerAttachKey(b)
	}
	return protojson.UnmarshalOptions{}.Unmarshal(b, pm)
}

// formerAttachKey renames the key "worker" of a JSON AttachRequest to
// "process" when the request has no "process". Anything else, including
// JSON that does not parse, is returned as it is for protojson to judge.
func formerAttachKey(b []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return b
	}
	w, ok := m["worker"]
	if _, has := m["process"]; !ok || has {
		return b
	}
	delete(m, "worker")
	m["process"] = w
	out, err := json.Marshal(m)
	if err != nil {
		return b
	}
	return out
}
