package main

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStartFailureBacksOff runs a pod whose container cannot start and checks the tries are spaced as the
// kubelet spaces them (10 s, doubling) and folded into one event with a count (defect: a pod that failed at
// start was retried 250, then 603, 923 and 1,196 times a minute, 2,975 events in 4 minutes).
func TestStartFailureBacksOff(t *testing.T) {
	lab := startLab(t)
	mustPi(t, lab, "image", "build", "busybox")
	mustPi(t, lab, "run", "broken", "--image=busybox", "--", "/no/such/program")
	time.Sleep(35 * time.Second)
	// One event per reason and message, with its count: the tries of 35 s with back-off 10 s, 20 s, 40 s
	// are at 0, ~10 and ~30 s, so 3 (4 allows for a try in flight as the window closes).
	counts := strings.Fields(mustPi(t, lab, "get", "events", "-o", "jsonpath={range .items[?(@.reason==\"Failed\")]}{.count}{\" \"}{end}"))
	if len(counts) != 1 {
		t.Fatalf("Failed events %v, want one event folding every try", counts)
	}
	n, _ := strconv.Atoi(counts[0])
	if n < 2 || n > 4 {
		t.Fatalf("the container was tried %d times in 35 s, want 2 to 4 (back-off 10 s, doubling)", n)
	}
	out := mustPi(t, lab, "get", "pod", "broken")
	if !strings.Contains(out, "CreateContainerError") {
		t.Fatalf("pod status:\n%s", out)
	}
}
