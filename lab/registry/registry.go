// Package registry is the one door into a lab's store for every write that allocates or counts: the API
// server's creates and replaces, `pi create fip`, and the controllers' own creates (a ReplicaSet's pods, a
// Deployment's ReplicaSets) and Pod IP assignments all come through here.
//
// Every decision that reads the store to pick or count something — a Service IP, an account index, a Pod
// IP, a Floating IP, the pods-per-account cap, the FIP quota, a LoadBalancer port on a FIP — is made under
// one lock together with the write that records it, so two concurrent requests can never both see the same
// free address or both fit under the same cap (the apiserver gets the same guarantee from etcd
// transactions; pilab's store is one bbolt file in one process, so one mutex is the transaction).
package registry

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"

	"github.com/containerd/containerd"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/network"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageResolver finds a lab image by the name a container gives.
type ImageResolver interface {
	Resolve(ctx context.Context, name string) (containerd.Image, error)
}

// Config is what admission needs besides the store.
type Config struct {
	Store  *store.Store
	Images ImageResolver
	// FIPPool is the lab's Floating IP range, FIPQuota the Floating IPs an account may hold unless its
	// spec says otherwise.
	FIPPool  *net.IPNet
	FIPQuota int
	// SequentialIPs hands out the lowest free Pod IP instead of a random one (a test hook: two accounts then
	// hold the same addresses).
	SequentialIPs bool
	// MaxPodsPerAccount overrides the pods-per-account cap (0: MaxPodsPerAccount); tests lower it.
	MaxPodsPerAccount int
}

// Registry admits and stores objects, one decision at a time.
type Registry struct {
	cfg   Config
	store *store.Store
	alloc *network.Allocator
	// mu serializes every admission with the store write that records it.
	mu sync.Mutex
}

// New makes a registry over a store.
func New(c Config) *Registry {
	return &Registry{cfg: c, store: c.Store, alloc: network.NewAllocator(c.SequentialIPs)}
}

// InvalidError is a request the user must change; the lab is fine.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// Invalid makes an InvalidError.
func Invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// IsInvalid reports whether err is a request the user must change.
func IsInvalid(err error) bool {
	var inv *InvalidError
	return errors.As(err, &inv)
}

// ItemError is what went wrong with one object of a set.
type ItemError struct {
	Index int
	Err   error
}

// SetError lists every object of a set that could not be created; none of the set was.
type SetError struct{ Items []ItemError }

func (e *SetError) Error() string {
	var msgs []string
	for _, it := range e.Items {
		msgs = append(msgs, fmt.Sprintf("item %d: %v", it.Index, it.Err))
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.Is/As see the items' errors.
func (e *SetError) Unwrap() []error {
	out := make([]error, len(e.Items))
	for i, it := range e.Items {
		out[i] = it.Err
	}
	return out
}

var (
	kindAccount, _    = api.LookupKind("Account")
	kindPod, _        = api.LookupKind("Pod")
	kindService, _    = api.LookupKind("Service")
	kindFIP, _        = api.LookupKind("FloatingIP")
	kindReplicaSet, _ = api.LookupKind("ReplicaSet")
)

// checkAccount makes sure a namespaced object goes into an account that exists and is not being deleted,
// and returns that account.
func (r *Registry) checkAccount(account string) (*api.Account, error) {
	if account == "" {
		return nil, Invalid("no account given")
	}
	acct, err := r.store.Get(kindAccount, "", account)
	if store.IsNotFound(err) {
		return nil, &store.Error{Err: store.ErrNotFound, Kind: kindAccount, Name: account}
	}
	if err != nil {
		return nil, err
	}
	if acct.GetDeletionTimestamp() != nil {
		return nil, Invalid("account %q is being deleted", account)
	}
	return acct.(*api.Account), nil
}

// prepare readies an object for admission: identity fields are the lab's to give.
func prepare(account string, o metav1.Object) {
	k := api.KindOf(o)
	if k.Namespaced {
		api.SetAccount(o, account)
	}
	o.SetUID("")
	o.SetResourceVersion("")
	o.SetDeletionTimestamp(nil)
	o.SetGeneration(1)
}

// Create admits and stores a new object. With dryRun it only admits: the answer is what a create would do.
func (r *Registry) Create(ctx context.Context, account string, o metav1.Object, dryRun bool) error {
	err := r.CreateSet(ctx, account, []metav1.Object{o}, dryRun)
	var set *SetError
	if errors.As(err, &set) && len(set.Items) == 1 {
		return set.Items[0].Err
	}
	return err
}

// CreateSet admits a set of new objects as a whole — each one sees the ones before it, so two Services
// asking for one clusterIP, a pod named twice or the pod cap crossed within the set are refused — and
// stores all of them in one transaction, or none. With dryRun it only admits.
func (r *Registry) CreateSet(ctx context.Context, account string, objs []metav1.Object, dryRun bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := &view{store: r.store}
	var set SetError
	for i, o := range objs {
		if err := r.admitNew(ctx, v, account, o); err != nil {
			set.Items = append(set.Items, ItemError{Index: i, Err: err})
			continue
		}
		v.pending = append(v.pending, o)
	}
	if len(set.Items) > 0 {
		return &set
	}
	if dryRun {
		return nil
	}
	return r.store.CreateAll(objs)
}

func (r *Registry) admitNew(ctx context.Context, v *view, account string, o metav1.Object) error {
	k := api.KindOf(o)
	if k.Namespaced {
		if _, err := r.checkAccount(account); err != nil {
			return err
		}
	} else {
		account = ""
	}
	prepare(account, o)
	if _, err := v.Get(k, account, o.GetName()); err == nil {
		return &store.Error{Err: store.ErrAlreadyExists, Kind: k, Name: o.GetName()}
	}
	return r.admit(ctx, v, account, o, nil)
}

// Update admits a replacement of a stored object and stores it. The caller's resourceVersion, when set,
// must be the stored one (409 Conflict otherwise); generation counts changes of the desired state.
func (r *Registry) Update(ctx context.Context, account string, o metav1.Object) error {
	return r.UpdateWith(ctx, account, o, UpdateOptions{})
}

// UpdateOptions are an update's options.
type UpdateOptions struct {
	// DryRun admits without storing: the object is what the update would store.
	DryRun bool
	// Status replaces the object's status only (the status subresource); spec and metadata stay.
	Status bool
}

// UpdateWith is Update with options. An object being deleted takes metadata changes only (labels,
// annotations, finalizers), as in Kubernetes; once its last finalizer is gone and no controller finishes
// its kind, it is removed.
func (r *Registry) UpdateWith(ctx context.Context, account string, o metav1.Object, opts UpdateOptions) error {
	k := api.KindOf(o)
	if !k.Namespaced {
		account = ""
	} else {
		api.SetAccount(o, account)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, err := r.store.Get(k, account, o.GetName())
	if err != nil {
		return err
	}
	if rv := o.GetResourceVersion(); rv != "" && rv != old.GetResourceVersion() {
		return &store.Error{Err: store.ErrConflict, Kind: k, Name: o.GetName()}
	}
	if opts.Status {
		// The stored object with the new status, written into the caller's object.
		if err := withStatusOf(old, o); err != nil {
			return err
		}
		if err := replaceWith(o, old); err != nil {
			return err
		}
	} else if old.GetDeletionTimestamp() != nil {
		if api.SpecOf(o) != api.SpecOf(old) {
			return Invalid("%s %q is being deleted: only its metadata (labels, annotations, finalizers) may change", k.Singular, o.GetName())
		}
		if len(o.GetFinalizers()) == 0 && !controllerFinished(k) {
			if opts.DryRun {
				return nil
			}
			return r.store.Delete(k, account, o.GetName())
		}
	} else {
		if err := r.admit(ctx, &view{store: r.store}, account, o, old); err != nil {
			return err
		}
		o.SetGeneration(old.GetGeneration())
		if api.SpecOf(o) != api.SpecOf(old) {
			o.SetGeneration(old.GetGeneration() + 1)
		}
	}
	if o.GetResourceVersion() == "" {
		o.SetResourceVersion(old.GetResourceVersion())
	}
	if opts.DryRun {
		return nil
	}
	return r.store.Update(o)
}

// replaceWith makes o a copy of from (objects of one kind).
func replaceWith(o, from metav1.Object) error {
	data, err := json.Marshal(from)
	if err != nil {
		return err
	}
	v := reflect.ValueOf(o).Elem()
	v.Set(reflect.Zero(v.Type()))
	return json.Unmarshal(data, o)
}

// controllerFinished reports whether a controller removes objects of kind k once they are deleted (it
// stops containers, drives a cascade, tears a network down); other kinds go when their finalizers do.
func controllerFinished(k api.Kind) bool {
	switch k.Name {
	case "Pod", "Deployment", "ReplicaSet", "Account":
		return true
	}
	return false
}

// withStatusOf copies the status of from into to (objects of one kind), through JSON: every kind's status
// is its "status" field.
func withStatusOf(to, from metav1.Object) error {
	src, err := json.Marshal(from)
	if err != nil {
		return err
	}
	var st struct {
		Status json.RawMessage `json:"status"`
	}
	if err := json.Unmarshal(src, &st); err != nil {
		return err
	}
	dst, err := json.Marshal(to)
	if err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(dst, &m); err != nil {
		return err
	}
	if len(st.Status) == 0 {
		delete(m, "status")
	} else {
		m["status"] = st.Status
	}
	if dst, err = json.Marshal(m); err != nil {
		return err
	}
	return json.Unmarshal(dst, to)
}

// AllocateFIPs gives an account count addresses from the lab's pool within its quota: all of them, or
// none (and nothing billed) when the quota or the pool has too few.
func (r *Registry) AllocateFIPs(account string, count int) ([]*api.FloatingIP, error) {
	if count < 1 {
		return nil, Invalid("--count must be a positive number, not %d", count)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	acct, err := r.checkAccount(account)
	if err != nil {
		return nil, err
	}
	quota := r.fipQuota(acct)
	held, err := r.store.List(kindFIP, account)
	if err != nil {
		return nil, err
	}
	if len(held)+count > quota {
		return nil, Invalid("account %q holds %d of its %d floating IPs; %d more would exceed the quota (release one with `pi delete fip ADDRESS`)", account, len(held), quota, count)
	}
	all, err := r.store.List(kindFIP, "")
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, o := range all {
		used[o.GetName()] = true
	}
	var out []*api.FloatingIP
	var objs []metav1.Object
	for _, ip := range PoolAddresses(r.cfg.FIPPool) {
		if len(out) == count {
			break
		}
		if used[ip] {
			continue
		}
		f := &api.FloatingIP{}
		f.Name = ip
		api.SetAccount(f, account)
		out = append(out, f)
		objs = append(objs, f)
	}
	if len(out) < count {
		return nil, Invalid("the floating IP pool %s has %d free addresses, fewer than the %d asked for; nothing was allocated", r.cfg.FIPPool, len(out), count)
	}
	if err := r.store.CreateAll(objs); err != nil {
		return nil, err
	}
	return out, nil
}

func (r *Registry) fipQuota(a *api.Account) int {
	if a.Spec.FIPQuota > 0 {
		return a.Spec.FIPQuota
	}
	return r.cfg.FIPQuota
}

// view is the store as admission sees it: what is stored plus the objects admitted earlier in the same set.
type view struct {
	store   *store.Store
	pending []metav1.Object
}

func (v *view) Get(k api.Kind, account, name string) (metav1.Object, error) {
	for _, o := range v.pending {
		if api.KindOf(o).Name == k.Name && (!k.Namespaced || api.AccountOf(o) == account) && o.GetName() == name {
			return o, nil
		}
	}
	return v.store.Get(k, account, name)
}

func (v *view) List(k api.Kind, account string) ([]metav1.Object, error) {
	objs, err := v.store.List(k, account)
	if err != nil {
		return nil, err
	}
	for _, o := range v.pending {
		if api.KindOf(o).Name == k.Name && (account == "" || !k.Namespaced || api.AccountOf(o) == account) {
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// PoolAddresses lists a pool's usable addresses: not its network or broadcast address.
func PoolAddresses(pool *net.IPNet) []string {
	base := binary.BigEndian.Uint32(pool.IP.To4())
	ones, bits := pool.Mask.Size()
	n := uint32(1) << (bits - ones)
	var out []string
	for i := uint32(1); i+1 < n && i < 65536; i++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], base+i)
		out = append(out, net.IP(b[:]).String())
	}
	return out
}
