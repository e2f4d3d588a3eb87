package server

import (
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// The scope's checks, without a socket: which queues pass, the code and
// the message of those that do not.
func TestScopeChecks(t *testing.T) {
	s := Scope{Serve: []string{"tts", "asr"}, Submit: []string{"tts", "ocr"}}
	for _, tc := range []struct {
		name string
		err  error
		code connect.Code // 0: allowed
		msg  string
	}{
		{"next served", s.checkNext("queues[0]", "asr"), 0, ""},
		{"next not served", s.checkNext("queues[1]", "ocr"), connect.CodePermissionDenied, `queues[1]: queue "ocr" is not served by this sidecar (its queues: tts, asr)`},
		{"next invalid name", s.checkNext("queues[0]", "a/b"), connect.CodeInvalidArgument, "queues[0]: "},
		{"next wildcard is no queue", s.checkNext("queues[0]", AnyQueue), connect.CodeInvalidArgument, "queues[0]: "},
		{"submit allowed", s.checkSubmit("tasks[0].queue", "ocr"), 0, ""},
		{"submit served but not allowed", s.checkSubmit("tasks[2].queue", "asr"), connect.CodePermissionDenied, `tasks[2].queue: queue "asr" is not one this sidecar may submit to (its submit queues: tts, ocr)`},
		{"submit anywhere", Scope{Submit: []string{AnyQueue}}.checkSubmit("tasks[0].queue", "x"), 0, ""},
		{"submit with no scope", Scope{}.checkSubmit("tasks[0].queue", "x"), connect.CodePermissionDenied, "(its submit queues: none)"},
	} {
		if tc.code == 0 {
			if tc.err != nil {
				t.Errorf("%s: %v, want allowed", tc.name, tc.err)
			}
			continue
		}
		if connect.CodeOf(tc.err) != tc.code || !strings.Contains(tc.err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, tc.err, tc.code, tc.msg)
		}
	}
}

// The queues an error lists are bounded, whatever the configuration.
func TestScopeErrorListsAtMost16Queues(t *testing.T) {
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("q%d", i))
	}
	err := Scope{Submit: many}.checkSubmit("tasks[0].queue", "x")
	if msg := err.Error(); !strings.HasSuffix(msg, "q15 and 24 more)") || strings.Contains(msg, "q16") {
		t.Fatalf("%v: want the first 16 queues and how many more", err)
	}
}
