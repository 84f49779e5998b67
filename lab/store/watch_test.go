package store

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pod(name string) *corev1.Pod { return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}} }

func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event in 5s")
	}
	return Event{}
}

// TestWatchFromReplays: a watch from a resourceVersion gets exactly the changes after it (a create, an
// update, a delete carrying the deletion's own resourceVersion), then live ones; ListAt's resourceVersion
// is the one a watch resumes from without a gap.
func TestWatchFromReplays(t *testing.T) {
	s := openTest(t)
	kPod, _ := api.LookupKind("Pod")
	if err := s.Create(pod("a")); err != nil {
		t.Fatal(err)
	}
	objs, listRV, err := s.ListAt(kPod, api.DefaultAccount)
	if err != nil || len(objs) != 1 {
		t.Fatalf("ListAt: %v %v", objs, err)
	}
	if cur, _ := s.ResourceVersion(); cur != listRV || objs[0].GetResourceVersion() != strconv.FormatUint(listRV, 10) {
		t.Fatalf("list rv %d, store rv %d, object rv %s", listRV, cur, objs[0].GetResourceVersion())
	}
	b := pod("b")
	if err := s.Create(b); err != nil {
		t.Fatal(err)
	}
	b.Labels = map[string]string{"x": "y"}
	if err := s.Update(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(kPod, api.DefaultAccount, "a"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.WatchFrom(ctx, "Pod", api.DefaultAccount, listRV)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ string
		rv  uint64
	}{{api.Added, listRV + 1}, {api.Modified, listRV + 2}, {api.Deleted, listRV + 3}}
	for _, w := range want {
		ev := next(t, ch)
		if ev.Type != w.typ || ev.ResourceVersion != w.rv {
			t.Fatalf("got %s at %d, want %s at %d", ev.Type, ev.ResourceVersion, w.typ, w.rv)
		}
	}
	if err := s.Create(pod("c")); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ch); ev.Type != api.Added || ev.ResourceVersion != listRV+4 {
		t.Fatalf("live event: %s at %d", ev.Type, ev.ResourceVersion)
	}
	// Another account's changes are not this watch's.
	other := pod("d")
	api.SetAccount(other, "alice")
	if err := s.Create(other); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		t.Fatalf("alice's pod reached default's watch: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestWatchFromExpired: once the history has moved past a resourceVersion, a watch from it is ErrExpired;
// from the oldest one still covered it works; a fresh store has no history before its Open.
func TestWatchFromExpired(t *testing.T) {
	s := openTest(t)
	s.SetHistorySize(4)
	for i := range 10 {
		if err := s.Create(pod("p" + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	cur, _ := s.ResourceVersion()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.WatchFrom(ctx, "Pod", "", 1); !errors.Is(err, ErrExpired) {
		t.Fatalf("watch from 1 after 10 changes with a history of 4: %v, want ErrExpired", err)
	}
	ch, err := s.WatchFrom(ctx, "Pod", "", cur-4)
	if err != nil {
		t.Fatalf("watch from %d (4 back): %v", cur-4, err)
	}
	for i := uint64(1); i <= 4; i++ {
		if ev := next(t, ch); ev.ResourceVersion != cur-4+i {
			t.Fatalf("replayed rv %d, want %d", ev.ResourceVersion, cur-4+i)
		}
	}
}

// TestWatchFromOrdered: concurrent writers' events reach a watcher in resourceVersion order, none lost.
func TestWatchFromOrdered(t *testing.T) {
	s := openTest(t)
	rv, _ := s.ResourceVersion()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.WatchFrom(ctx, "", "", rv)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if err := s.Create(pod("w" + strconv.Itoa(w) + "-" + strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i := uint64(1); i <= 400; i++ {
		if ev := next(t, ch); ev.ResourceVersion != rv+i {
			t.Fatalf("event %d has rv %d, want %d", i, ev.ResourceVersion, rv+i)
		}
	}
}
