package sidecar_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	batonv1 "github.com/batonhq/baton/gen/baton/v1"
	"github.com/batonhq/baton/sidecar"
	"github.com/batonhq/baton/sidecar/sidecartest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Malformed entries at the head of the delay index (written by hand or by
// an older version) are skipped by promotion without stopping it. Before,
// promotion re-read the index from its start after each page of 128: with
// 128 malformed entries ahead of a due task it read the same page forever
// and nothing delayed was ever promoted.
func TestMalformedDelayKeysDoNotStopPromotion(t *testing.T) {
	t.Parallel()
	sc, ns := start(t, sidecar.Config{})
	cli := sidecartest.Client(t, endpoint, ns)
	ctx := context.Background()
	val := `{"state":"FAILED","queue":"tts","attempt":1,"max_attempts":3,"timeout_ms":300000,"order":0,"updated_ms":0}`
	for i := range 130 {
		// Sorts before every well-formed key (a due time starting "000..."),
		// and is due: it lies in every promotion's range.
		if _, err := cli.Put(ctx, fmt.Sprintf("q/delay/000000000000000000a/bad-%03d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	submit(t, sc, &batonv1.TaskSpec{Id: "later", Payload: payload(t, map[string]any{}), NotBefore: timestamppb.New(time.Now().Add(time.Second))})
	if task := next(t, sc, 20*time.Second, ""); task == nil || task.Id != "later" {
		t.Fatalf("the delayed task was not promoted behind 130 malformed delay entries: %v", task)
	}
}
