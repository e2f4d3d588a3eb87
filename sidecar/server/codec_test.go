package server

import (
	"strings"
	"testing"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"google.golang.org/protobuf/proto"
)

// The JSON codec reads AttachRequest's former key "worker" as "process"
// (D-words1), there only, and nothing else that it would refuse.
func TestFormerAttachKey(t *testing.T) {
	codec := strictJSON{"json"}
	for _, c := range []struct {
		body    string
		process string // want, when accepted
		refused string // a word the error names, when refused
	}{
		{`{"process":"synth-a"}`, "synth-a", ""},
		{`{"worker":"synth-a"}`, "synth-a", ""},
		{` { "worker" : "a\u00e9" } `, "aé", ""},
		{`{}`, "", ""},
		{`{"process":"new","worker":"old"}`, "", "worker"},
		{`{"worker":7}`, "", "process"},
		{`{"proces":"typo"}`, "", "proces"},
		{`{"worker":"a"`, "", "worker"}, // not JSON: left to protojson, which refuses it
	} {
		var m batonv1.AttachRequest
		err := codec.Unmarshal([]byte(c.body), &m)
		switch {
		case c.refused == "" && (err != nil || m.GetProcess() != c.process):
			t.Errorf("%s: process %q, err %v; want %q", c.body, m.GetProcess(), err, c.process)
		case c.refused != "" && (err == nil || !strings.Contains(err.Error(), c.refused)):
			t.Errorf("%s: err %v; want one naming %q", c.body, err, c.refused)
		}
	}
	// Only AttachRequest: elsewhere "worker" is an unknown key.
	for _, m := range []proto.Message{&batonv1.NextRequest{}, &batonv1.LockRequest{}} {
		if err := codec.Unmarshal([]byte(`{"worker":"w"}`), m); err == nil || !strings.Contains(err.Error(), "worker") {
			t.Errorf("%T with worker: err %v, want it refused naming worker", m, err)
		}
	}
}
