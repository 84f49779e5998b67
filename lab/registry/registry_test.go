package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// knownImages resolves the lab's image names and nothing else, as the lab's image store does once they are
// built; these tests check admission, not containerd.
type knownImages struct{}

func (knownImages) Resolve(_ context.Context, name string) (containerd.Image, error) {
	switch name {
	case "nginx", "busybox", "podinfo", "httpd":
		return nil, nil
	}
	return nil, fmt.Errorf("image %q is not in the lab; build it with `pi image build %s`", name, name)
}

func newRegistry(t *testing.T, maxPods int) (*Registry, *store.Store) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, pool, _ := net.ParseCIDR("198.18.0.0/29") // 6 addresses
	r := New(Config{Store: st, Images: knownImages{}, FIPPool: pool, FIPQuota: 5, MaxPodsPerAccount: maxPods})
	for _, name := range []string{api.DefaultAccount, "alice"} {
		a := &api.Account{}
		a.Name = name
		if err := r.Create(context.Background(), "", a, false); err != nil {
			t.Fatal(err)
		}
	}
	return r, st
}

func service(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80}}}}
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}
}

// parallel runs fn(i) for i in [0, n) at once and returns the errors.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

func TestConcurrentServicesGetDistinctIPs(t *testing.T) {
	r, st := newRegistry(t, 0)
	for _, err := range parallel(40, func(i int) error {
		return r.Create(context.Background(), "alice", service(fmt.Sprintf("s%d", i)), false)
	}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	objs, _ := st.List(kindService, "alice")
	seen := map[string]string{}
	for _, o := range objs {
		ip := o.(*corev1.Service).Spec.ClusterIP
		if other, dup := seen[ip]; dup {
			t.Errorf("services %s and %s share clusterIP %s", other, o.GetName(), ip)
		}
		seen[ip] = o.GetName()
	}
	if len(seen) != 40 {
		t.Fatalf("%d distinct clusterIPs for 40 services", len(seen))
	}
}

func TestConcurrentAccountsGetDistinctIndexes(t *testing.T) {
	r, st := newRegistry(t, 0)
	for _, err := range parallel(16, func(i int) error {
		a := &api.Account{}
		a.Name = fmt.Sprintf("c%d", i)
		return r.Create(context.Background(), "", a, false)
	}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	objs, _ := st.List(kindAccount, "")
	seen := map[int]string{}
	for _, o := range objs {
		idx := o.(*api.Account).Status.Index
		if other, dup := seen[idx]; dup || idx == 0 {
			t.Errorf("accounts %s and %s share index %d", other, o.GetName(), idx)
		}
		seen[idx] = o.GetName()
	}
}

func TestConcurrentPodsStopAtTheCap(t *testing.T) {
	r, st := newRegistry(t, 10)
	for i := 0; i < 7; i++ {
		if err := r.Create(context.Background(), "alice", pod(fmt.Sprintf("p%d", i)), false); err != nil {
			t.Fatal(err)
		}
	}
	var refused int
	for _, err := range parallel(40, func(i int) error {
		return r.Create(context.Background(), "alice", pod(fmt.Sprintf("q%d", i)), false)
	}) {
		if err != nil {
			if !IsInvalid(err) || !strings.Contains(err.Error(), "holds 10 pods") {
				t.Fatalf("unexpected refusal: %v", err)
			}
			refused++
		}
	}
	objs, _ := st.List(kindPod, "alice")
	if len(objs) != 10 || refused != 37 {
		t.Fatalf("%d pods stored and %d refused; want 10 and 37", len(objs), refused)
	}
	// The cap is per account: the default account still takes pods.
	if err := r.Create(context.Background(), api.DefaultAccount, pod("p0"), false); err != nil {
		t.Fatal(err)
	}
}

func TestPodIPsAreDistinctUnderConcurrency(t *testing.T) {
	r, st := newRegistry(t, 0)
	for i := 0; i < 30; i++ {
		if err := r.Create(context.Background(), "alice", pod(fmt.Sprintf("p%d", i)), false); err != nil {
			t.Fatal(err)
		}
	}
	for _, err := range parallel(30, func(i int) error {
		_, err := r.SchedulePod("alice", fmt.Sprintf("p%d", i))
		return err
	}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	objs, _ := st.List(kindPod, "alice")
	seen := map[string]bool{}
	for _, o := range objs {
		ip := o.(*corev1.Pod).Status.PodIP
		if ip == "" || seen[ip] {
			t.Fatalf("pod %s: address %q missing or given twice", o.GetName(), ip)
		}
		seen[ip] = true
	}
	// A pod keeps its address.
	p, err := r.SchedulePod("alice", "p0")
	if err != nil {
		t.Fatal(err)
	}
	if !seen[p.Status.PodIP] {
		t.Fatalf("p0 got a new address %s", p.Status.PodIP)
	}
}

func TestConcurrentFIPsStayInQuotaAndPool(t *testing.T) {
	r, st := newRegistry(t, 0)
	errs := parallel(12, func(i int) error {
		account := "alice"
		if i%2 == 1 {
			account = api.DefaultAccount
		}
		_, err := r.AllocateFIPs(account, 1)
		return err
	})
	var ok int
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	all, _ := st.List(kindFIP, "")
	seen := map[string]bool{}
	for _, o := range all {
		if seen[o.GetName()] {
			t.Fatalf("fip %s allocated twice", o.GetName())
		}
		seen[o.GetName()] = true
	}
	// The pool holds 6 addresses; each account may hold 5.
	if ok != 6 || len(all) != 6 {
		t.Fatalf("%d allocations succeeded, %d stored; want 6 and 6", ok, len(all))
	}
}

func TestFIPCountIsAllOrNothing(t *testing.T) {
	r, st := newRegistry(t, 0)
	if _, err := r.AllocateFIPs("alice", 4); err != nil {
		t.Fatal(err)
	}
	// 2 free addresses are left in the pool: asking for 3 gets none (and bills none).
	if _, err := r.AllocateFIPs(api.DefaultAccount, 3); err == nil || !strings.Contains(err.Error(), "nothing was allocated") {
		t.Fatalf("3 of 2 free addresses: err %v", err)
	}
	if held, _ := st.List(kindFIP, api.DefaultAccount); len(held) != 0 {
		t.Fatalf("the refused request left %d fips", len(held))
	}
	// alice holds 4 of 5: 2 more would pass the quota.
	if _, err := r.AllocateFIPs("alice", 2); err == nil || !strings.Contains(err.Error(), "exceed the quota") {
		t.Fatalf("over quota: err %v", err)
	}
	if held, _ := st.List(kindFIP, "alice"); len(held) != 4 {
		t.Fatalf("alice holds %d fips, want 4", len(held))
	}
}

func TestSetIsAllOrNothing(t *testing.T) {
	lb := func(name string, port int32) *corev1.Service {
		s := service(name)
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerIP = "198.18.0.1"
		s.Spec.Ports[0].Port = port
		return s
	}
	withIP := func(name, ip string) *corev1.Service { s := service(name); s.Spec.ClusterIP = ip; return s }
	cases := []struct {
		name string
		set  []metav1.Object
		want string
	}{
		{"a pod twice", []metav1.Object{pod("a"), pod("a")}, `pod "a" already exists`},
		{"two services on one clusterIP", []metav1.Object{withIP("x", "10.96.0.50"), withIP("y", "10.96.0.50")}, `already allocated to service "x"`},
		{"two LoadBalancers on one FIP port", []metav1.Object{lb("web", 80), lb("web2", 80)}, `already used by service "web"`},
		{"an unknown image after a good pod", []metav1.Object{pod("ok"), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bad"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nope"}}}}}, `image "nope" is not in the lab`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, st := newRegistry(t, 0)
			if _, err := r.AllocateFIPs("alice", 1); err != nil {
				t.Fatal(err)
			}
			err := r.CreateSet(context.Background(), "alice", c.set, false)
			var set *SetError
			if !errors.As(err, &set) || len(set.Items) != 1 || set.Items[0].Index != 1 || !strings.Contains(set.Items[0].Err.Error(), c.want) {
				t.Fatalf("err %v, want item 1 refused with %q", err, c.want)
			}
			for _, k := range []api.Kind{kindPod, kindService} {
				if objs, _ := st.List(k, "alice"); len(objs) != 0 {
					t.Fatalf("%d %s stored from a refused set", len(objs), k.Plural)
				}
			}
		})
	}
}

func TestWritesNeedAnAccountThatExists(t *testing.T) {
	r, _ := newRegistry(t, 0)
	for _, account := range []string{"ghost", "../../etc", ""} {
		err := r.Create(context.Background(), account, service("s"), false)
		if err == nil {
			t.Fatalf("a service in account %q was created", account)
		}
	}
	if _, err := r.AllocateFIPs("ghost", 1); !store.IsNotFound(err) {
		t.Fatalf("fip for a missing account: %v", err)
	}
}

func TestAccountQuotaCannotBeRaisedByUpdate(t *testing.T) {
	r, st := newRegistry(t, 0)
	o, _ := st.Get(kindAccount, "", "alice")
	a := o.(*api.Account)
	a.Spec.FIPQuota = 100
	err := r.Update(context.Background(), "", a)
	if err == nil || !strings.Contains(err.Error(), "spec.fipQuota: Forbidden") {
		t.Fatalf("raising the quota: %v", err)
	}
}

// TestAccountPodAndServiceQuotas: an account's podQuota and serviceQuota hold for any writer, under
// concurrency (the registry decides every cap in one place), an update of an existing Service is not a
// new one, and neither quota can be raised by an update.
func TestAccountPodAndServiceQuotas(t *testing.T) {
	r, st := newRegistry(t, 0)
	ctx := context.Background()
	learner := &api.Account{ObjectMeta: metav1.ObjectMeta{Name: "learner01"}, Spec: api.AccountSpec{PodQuota: 3, ServiceQuota: 2}}
	if err := r.Create(ctx, "", learner, false); err != nil {
		t.Fatal(err)
	}
	errs := parallel(10, func(i int) error { return r.Create(ctx, "learner01", pod(fmt.Sprintf("p%d", i)), false) })
	ok, refused := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), "exceeded quota") && strings.Contains(err.Error(), "spec.podQuota"):
			refused++
		default:
			t.Errorf("pod create: %v", err)
		}
	}
	if ok != 3 || refused != 7 {
		t.Errorf("10 pods at once against a quota of 3: %d created, %d refused", ok, refused)
	}
	// Another account is not held to learner01's quota.
	for i := range 5 {
		if err := r.Create(ctx, "alice", pod(fmt.Sprintf("a%d", i)), false); err != nil {
			t.Fatalf("alice's pod %d: %v", i, err)
		}
	}
	for _, name := range []string{"s1", "s2"} {
		if err := r.Create(ctx, "learner01", service(name), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Create(ctx, "learner01", service("s3"), false); err == nil || !strings.Contains(err.Error(), "spec.serviceQuota") {
		t.Errorf("a third Service against a quota of 2: %v", err)
	}
	o, _ := st.Get(kindService, "learner01", "s1")
	svc := o.(*corev1.Service)
	svc.Labels = map[string]string{"tier": "web"}
	if err := r.Update(ctx, "learner01", svc); err != nil {
		t.Errorf("updating a Service at the quota: %v", err)
	}
	o, _ = st.Get(kindAccount, "", "learner01")
	a := o.(*api.Account)
	a.Spec.PodQuota = 100
	if err := r.Update(ctx, "", a); err == nil || !strings.Contains(err.Error(), "spec.podQuota: Forbidden") {
		t.Errorf("raising the pod quota: %v", err)
	}
	// The cgroup ceilings (issue 11) are as fixed as the counts.
	for field, set := range map[string]func(*api.Account){
		"cpuQuota":    func(a *api.Account) { a.Spec.CPUQuota = "8" },
		"memoryQuota": func(a *api.Account) { a.Spec.MemoryQuota = "64Gi" },
	} {
		o, _ = st.Get(kindAccount, "", "learner01")
		a := o.(*api.Account)
		set(a)
		if err := r.Update(ctx, "", a); err == nil || !strings.Contains(err.Error(), "spec."+field+": Forbidden") {
			t.Errorf("raising the %s: %v", field, err)
		}
	}
	o, _ = st.Get(kindAccount, "", "learner01")
	a = o.(*api.Account)
	a.Labels = map[string]string{"cohort": "b"}
	if err := r.Update(ctx, "", a); err != nil {
		t.Errorf("an update leaving the quotas alone: %v", err)
	}
}
