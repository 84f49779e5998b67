package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"
)

// TestKubeListPages: limit and continue as kube-apiserver serves them. Pages of 2 of 5 pods, each with the
// next token and the count left, the last with none; the pages stay consistent while the store changes (a
// pod created after the first page is not in the later ones, the list's resourceVersion is the first
// page's); client-go's pager walks every page; a Table (kubectl get) is paginated alike; a bad token is 400,
// a token for another list 400, an expired one 410 Expired.
func TestKubeListPages(t *testing.T) {
	st, srv := kubeLab(t)
	for i := 1; i <= 5; i++ {
		mkPod(t, st, "default", fmt.Sprintf("p%d", i), map[string]string{"app": "web"}, corev1.PodRunning)
	}
	ctx := context.Background()
	pods := clientset(t, srv.URL, "").CoreV1().Pods("default")

	var got []string
	var rv string
	opts := metav1.ListOptions{Limit: 2}
	for page := 1; ; page++ {
		l, err := pods.List(ctx, opts)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		got = append(got, names(l.Items)...)
		if page == 1 {
			rv = l.ResourceVersion
			// A pod made after the first page: a consistent list does not show it.
			mkPod(t, st, "default", "p0-late", nil, corev1.PodRunning)
		} else if l.ResourceVersion != rv {
			t.Errorf("page %d at resourceVersion %s, the first at %s", page, l.ResourceVersion, rv)
		}
		left := int64(5 - len(got))
		switch {
		case left > 0 && (l.Continue == "" || l.RemainingItemCount == nil || *l.RemainingItemCount != left):
			t.Fatalf("page %d (%v): continue %q, remainingItemCount %v; want a token and %d left", page, names(l.Items), l.Continue, l.RemainingItemCount, left)
		case left == 0 && (l.Continue != "" || l.RemainingItemCount != nil):
			t.Errorf("last page: continue %q, remainingItemCount %v; want neither", l.Continue, l.RemainingItemCount)
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	if fmt.Sprint(got) != "[p1 p2 p3 p4 p5]" {
		t.Errorf("pages gave %v, want p1..p5 once each", got)
	}

	// client-go's pager, as informers and kubectl's builder page: every pod, the late one too.
	var all []string
	p := pager.New(func(ctx context.Context, o metav1.ListOptions) (kruntime.Object, error) { return pods.List(ctx, o) })
	p.PageSize = 2
	if err := p.EachListItem(ctx, metav1.ListOptions{}, func(o kruntime.Object) error {
		all = append(all, o.(*corev1.Pod).Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Errorf("pager: %v, want 6 pods", all)
	}

	// A Table, as kubectl get --chunk-size=2 asks.
	code, body := rawGet(t, srv.URL+"/api/v1/namespaces/default/pods?limit=2", "application/json;as=Table;v=v1;g=meta.k8s.io")
	var tb metav1.Table
	if code != http.StatusOK || json.Unmarshal(body, &tb) != nil || len(tb.Rows) != 2 || tb.Continue == "" {
		t.Fatalf("table page: %d rows %d continue %q\n%s", code, len(tb.Rows), tb.Continue, body)
	}
	code, body = rawGet(t, srv.URL+"/api/v1/namespaces/default/pods?limit=10&continue="+tb.Continue, "application/json;as=Table;v=v1;g=meta.k8s.io")
	tb = metav1.Table{}
	if code != http.StatusOK || json.Unmarshal(body, &tb) != nil || len(tb.Rows) != 4 || tb.Continue != "" {
		t.Errorf("table's last page: %d rows %d continue %q\n%s", code, len(tb.Rows), tb.Continue, body)
	}

	// Bad tokens.
	if _, err := pods.List(ctx, metav1.ListOptions{Limit: 2, Continue: "garbage"}); !apierrors.IsBadRequest(err) {
		t.Errorf("continue=garbage: %v, want BadRequest", err)
	}
	first, err := pods.List(ctx, metav1.ListOptions{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	svcs := clientset(t, srv.URL, "").CoreV1().Services("default")
	if _, err := svcs.List(ctx, metav1.ListOptions{Limit: 2, Continue: first.Continue}); !apierrors.IsBadRequest(err) {
		t.Errorf("a pods token on services: %v, want BadRequest", err)
	}
	gone := encodeToken(pageToken{ID: "expired", Offset: 2})
	if _, err := pods.List(ctx, metav1.ListOptions{Limit: 2, Continue: gone}); !apierrors.IsResourceExpired(err) {
		t.Errorf("a token whose list is gone: %v, want 410 Expired", err)
	}
	if code, body := rawGet(t, srv.URL+"/api/v1/namespaces/default/pods?limit=-1", ""); code != http.StatusBadRequest {
		t.Errorf("limit=-1: %d %s", code, body)
	}
}
