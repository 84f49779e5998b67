package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// TestKubeEndpointSlices: each Service's Endpoints are served as discovery.k8s.io/v1 EndpointSlices (one
// per subset, labelled with the service's name, ready and not-ready addresses with their conditions);
// an informer sees slices appear, change, split and go as the Endpoints do; kubectl's columns; writes
// are refused with a 405 that says why; another account sees none of them.
func TestKubeEndpointSlices(t *testing.T) {
	st, srv := kubeLab(t)
	kEp, _ := api.LookupKind("Endpoints")
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Subsets: []corev1.EndpointSubset{{
		Addresses:         []corev1.EndpointAddress{{IP: "10.244.0.5", TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}}},
		NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.244.0.6"}},
		Ports:             []corev1.EndpointPort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
	}}}
	api.SetAccount(ep, "default")
	if err := st.Create(ep); err != nil {
		t.Fatal(err)
	}
	cs := clientset(t, srv.URL, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	l, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 {
		t.Fatalf("slices of web: %d, want 1", len(l.Items))
	}
	s := l.Items[0]
	if !strings.HasPrefix(s.Name, "web-") || len(s.Name) != len("web-")+5 || s.AddressType != discoveryv1.AddressTypeIPv4 ||
		len(s.Endpoints) != 2 || *s.Endpoints[0].Conditions.Ready != true || *s.Endpoints[1].Conditions.Ready != false ||
		s.Endpoints[0].TargetRef.Name != "web-1" || len(s.Ports) != 1 || *s.Ports[0].Port != 80 || *s.Ports[0].Name != "http" {
		t.Fatalf("slice: %+v", s)
	}
	got, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil || got.UID != s.UID {
		t.Fatalf("get %s: %v", s.Name, err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get of the Endpoints' own name: %v, want NotFound", err)
	}
	if other, err := clientset(t, srv.URL, "alice").DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil || len(other.Items) != 0 {
		t.Errorf("alice sees %v (%v)", other, err)
	}

	code, body := rawGet(t, srv.URL+"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", "application/json;as=Table;v=v1;g=meta.k8s.io")
	if code != 200 || !strings.Contains(string(body), `"AddressType"`) || !strings.Contains(string(body), `"10.244.0.5,10.244.0.6"`) {
		t.Errorf("table: %d %s", code, body)
	}
	_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "x"}, AddressType: "IPv4"}, metav1.CreateOptions{})
	if se, ok := err.(*apierrors.StatusError); !ok || se.ErrStatus.Code != http.StatusMethodNotAllowed || !strings.Contains(se.ErrStatus.Message, "change the Service") {
		t.Errorf("create: %v, want 405 saying slices follow the Service", err)
	}

	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"))
	inf := f.Discovery().V1().EndpointSlices().Informer()
	events := make(chan string, 20)
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { events <- "add " + o.(*discoveryv1.EndpointSlice).Name },
		UpdateFunc: func(_, o any) {
			s := o.(*discoveryv1.EndpointSlice)
			events <- "update " + s.Name + " " + strings.Join(s.Endpoints[0].Addresses, ",")
		},
		DeleteFunc: func(o any) { events <- "delete " + o.(*discoveryv1.EndpointSlice).Name },
	})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	want := func(w string) {
		t.Helper()
		select {
		case e := <-events:
			if e != w {
				t.Fatalf("event %q, want %q", e, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event, want %q", w)
		}
	}
	want("add " + s.Name)
	// A second port set is a second slice; dropping it again deletes that slice.
	ep.Subsets[0].Addresses[0].IP = "10.244.0.7"
	two := append(ep.Subsets, corev1.EndpointSubset{Addresses: []corev1.EndpointAddress{{IP: "10.244.0.8"}},
		Ports: []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}})
	ep.Subsets = two
	if err := st.Update(ep); err != nil {
		t.Fatal(err)
	}
	want("update " + s.Name + " 10.244.0.7")
	second := endpointSliceName(ep, 1)
	want("add " + second)
	ep.Subsets = two[:1]
	if err := st.Update(ep); err != nil {
		t.Fatal(err)
	}
	want("update " + s.Name + " 10.244.0.7")
	want("delete " + second)
	if err := st.Delete(kEp, "default", "web"); err != nil {
		t.Fatal(err)
	}
	want("delete " + s.Name)
}
