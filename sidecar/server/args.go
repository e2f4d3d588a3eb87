package server

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The checks of request fields that the handlers share, as functions of
// the field alone (FuzzRequests runs them on arbitrary requests). Each
// error is INVALID_ARGUMENT and starts with the field's proto name.

// durationArg reads a Duration field: 0 when it is absent; refused when it
// is malformed, negative or longer than max. A protobuf Duration reaches
// ±10,000 years, beyond what time.Duration holds (±292 years, where
// AsDuration saturates): the bound is checked on the seconds first, so a
// huge value is refused as itself, not as the saturated one.
func durationArg(field string, d *durationpb.Duration, max time.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalidArg(field, "not a valid duration: "+err.Error())
	}
	if d.GetSeconds() < 0 || d.GetNanos() < 0 {
		return 0, invalidArg(field, "must not be negative")
	}
	if d.GetSeconds() > int64(max/time.Second) || d.AsDuration() > max {
		return 0, invalidArg(field, fmt.Sprintf("%s is over the limit of %v", durationString(d), max))
	}
	return d.AsDuration(), nil
}

// durationString shows a valid, non-negative Duration as time.Duration
// does, or in whole seconds when it is too long for one.
func durationString(d *durationpb.Duration) string {
	if d.GetSeconds() < math.MaxInt64/int64(time.Second) {
		return d.AsDuration().String()
	}
	return fmt.Sprintf("%ds", d.GetSeconds())
}

// timestampArg reads a Timestamp field: the zero time when it is absent;
// refused when it is malformed (outside years 1 to 9999, or nanos out of
// range). How far ahead it may be is the caller's bound (not_before:
// workqueue.Store.Normalize, with the store's clock).
func timestampArg(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalidArg(field, "not a valid timestamp: "+err.Error())
	}
	return ts.AsTime(), nil
}

// progressArg checks Heartbeat's progress: a fraction from 0 to 1. NaN is
// refused too (it compares false with both bounds).
func progressArg(p float64) error {
	if !(p >= 0 && p <= 1) {
		return invalidArg("progress", fmt.Sprintf("%v is not between 0 and 1", p))
	}
	return nil
}
