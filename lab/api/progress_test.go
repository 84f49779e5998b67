package api

import (
	"testing"
	"time"
)

func TestRecordStep(t *testing.T) {
	a := &Account{}
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	for _, r := range []StepReport{
		{"01", 6, 2, true}, {"01", 6, 1, true}, {"01", 6, 2, true}, {"03", 7, 1, false},
		{"01", 6, 3, true}, {"01", 6, 3, false}, // a step that fails on a replay is not passed any more
	} {
		RecordStep(a, r, now)
	}
	p := Progress(a)
	if got := p["01"]; got.Steps != 6 || len(got.Passed) != 2 || got.Passed[0] != 1 || got.Passed[1] != 2 || !got.At.Equal(now) {
		t.Errorf("01: %+v, want steps 6, passed [1 2]", got)
	}
	if got := p["03"]; got.Steps != 7 || len(got.Passed) != 0 {
		t.Errorf("03: %+v, want steps 7, none passed", got)
	}
	// Another version of a scenario (another step count) starts over.
	RecordStep(a, StepReport{"01", 5, 4, true}, now)
	if got := Progress(a)["01"]; got.Steps != 5 || len(got.Passed) != 1 || got.Passed[0] != 4 {
		t.Errorf("01 with 5 steps: %+v", got)
	}
	// A damaged annotation reads as no progress, and is rewritten by the next report.
	a.Annotations[ProgressAnnotation] = "{not json"
	if len(Progress(a)) != 0 {
		t.Error("a damaged annotation reads as progress")
	}
	RecordStep(a, StepReport{"02", 6, 1, true}, now)
	if got := Progress(a); len(got) != 1 || len(got["02"].Passed) != 1 {
		t.Errorf("after a damaged annotation: %+v", got)
	}
}
