package controller

import (
	"sync/atomic"
	"testing"
	"time"
)

// A failing key retried from several sources (its own retry, watch events, the periodic resync) keeps at
// most one timer: the retries do not multiply (defect: a pod failing at start was retried 250, then 603,
// 923 and 1,196 times a minute).
func TestAddAfterKeepsOneTimerPerKey(t *testing.T) {
	q := newQueue()
	defer q.Close()
	for i := 0; i < 100; i++ {
		q.AddAfter("default/p", 50*time.Millisecond)
	}
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			key, ok := q.Get()
			if !ok {
				return
			}
			got.Add(1)
			q.Done(key)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if n := got.Load(); n != 1 {
		t.Fatalf("key handled %d times after 100 AddAfter calls, want 1", n)
	}
	// An earlier deadline replaces a later one.
	q.AddAfter("default/q", time.Hour)
	q.AddAfter("default/q", 20*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	if n := got.Load(); n != 2 {
		t.Fatalf("the sooner AddAfter did not win: %d handled", n)
	}
	q.Close()
	<-done
}

func TestFailedBacksOffAndForgets(t *testing.T) {
	q := newQueue()
	var last time.Duration
	for i := 0; i < 20; i++ {
		d := q.Failed("k")
		if d < last || d > retryMax {
			t.Fatalf("failure %d: wait %s after %s (cap %s)", i, d, last, retryMax)
		}
		last = d
	}
	if last != retryMax {
		t.Fatalf("20 failures wait %s, want the cap %s", last, retryMax)
	}
	q.Forget("k")
	if d := q.Failed("k"); d != retryBase {
		t.Fatalf("after Forget the first failure waits %s, want %s", d, retryBase)
	}
}
