// Package controller makes the kernel and containerd match the store. Controllers are level-triggered: each
// reads an object's desired state from the store and converges the world to it, so a daemon restart is just
// another reconcile.
package controller

import (
	"context"
	"github.com/pilab/pi/lab/registry"
	"k8s.io/client-go/util/flowcontrol"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/overlay"
	"github.com/pilab/pi/runtime/images"
	"github.com/pilab/pi/runtime/pods"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config is what the controllers act on.
type Config struct {
	Lab    string
	RunDir string
	// Store is read; Registry is the door for the writes that allocate or count (pods, ReplicaSets, Pod IPs).
	Store    *store.Store
	Registry *registry.Registry
	Runtime  *pods.Runtime
	Images   *images.Store
	Network  *network.Manager
	// Overlay builds the nodes of a multi-node lab and stretches each account's network over them; a
	// single-node lab has one node without a namespace of its own and never calls it.
	Overlay *overlay.Manager
	// EvictionTimeout is how long the pods of a stopped node wait before they are evicted (0: 30 s).
	EvictionTimeout time.Duration
	// RuntimeVersion is containerd's version, as nodes report it.
	RuntimeVersion string
	// NodeName is the machine's name, the source of the lab's events.
	NodeName string
	// SequentialIPs makes pod addresses predictable (a test hook: two accounts then hold the same addresses).
	SequentialIPs bool
	// FIPPool is the lab's Floating IP range; HostNetns the namespace playing the Internet ("" = the machine's).
	FIPPool   *net.IPNet
	HostNetns string
	Log       *slog.Logger
}

// Manager runs every controller of a lab.
type Manager struct {
	Config
	pods     *queue
	accounts *queue
	nodes    *queue
	// segments remembers, per account index, the node set its overlay segment was last built for.
	segMu    sync.Mutex
	segments map[int]string
	// segNodes are, per account index, the nodes its segment was last built on: where its Service rules
	// go too (forgetSegments leaves them, so a rebuild does not take the rules away meanwhile).
	segNodes map[int][]int
	// frozen remembers, per node, whether its pods were last frozen (stopped) or thawed.
	frozenMu sync.Mutex
	frozen   map[string]bool
	// startBackoff spaces the tries of a container that fails to start: 10 s, doubling, at most 5 min.
	startBackoff *flowcontrol.Backoff

	uidMu   sync.Mutex
	uidKeys map[string]string // pod UID -> queue key, to route container exits

	wg sync.WaitGroup
}

var (
	kindPod, _        = api.LookupKind("Pod")
	kindAccount, _    = api.LookupKind("Account")
	kindEvent, _      = api.LookupKind("Event")
	kindService, _    = api.LookupKind("Service")
	kindEndpoints, _  = api.LookupKind("Endpoints")
	kindDeployment, _ = api.LookupKind("Deployment")
	kindReplicaSet, _ = api.LookupKind("ReplicaSet")
	kindFIP, _        = api.LookupKind("FloatingIP")
	kindNode, _       = api.LookupKind("Node")
)

// New makes the controllers; Run starts them.
func New(c Config) *Manager {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return &Manager{
		Config:   c,
		pods:     newQueue(),
		accounts: newQueue(),
		nodes:    newQueue(),
		uidKeys:  map[string]string{},
		segments: map[int]string{},
		segNodes: map[int][]int{},
		frozen:   map[string]bool{},

		startBackoff: flowcontrol.NewBackOff(10*time.Second, 5*time.Minute),
	}
}

// createWithin bounds a controller's create through the registry: admission asks containerd about images.
const createWithin = 30 * time.Second

// createObject creates an object through the registry, as a client's create would be.
func (m *Manager) createObject(account string, o metav1.Object) error {
	ctx, cancel := context.WithTimeout(context.Background(), createWithin)
	defer cancel()
	return m.Registry.Create(ctx, account, o, false)
}

func objKey(account, name string) string { return account + "/" + name }

func splitKey(key string) (string, string) {
	a, n, _ := strings.Cut(key, "/")
	return a, n
}

// Run starts the controllers and blocks until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	events := m.Store.Watch(ctx, "", "")
	m.resyncAll()
	m.startWorkers(ctx, m.pods, 4, m.reconcilePod)
	m.startWorkers(ctx, m.accounts, 2, m.reconcileAccount)
	m.startWorkers(ctx, m.nodes, 1, m.reconcileNode)
	m.startMore(ctx)

	exits := m.Runtime.Exits(ctx)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	go func() {
		<-ctx.Done()
		m.pods.Close()
		m.accounts.Close()
		m.nodes.Close()
	}()
	for {
		select {
		case <-ctx.Done():
			m.wg.Wait()
			return
		case ev, ok := <-events:
			if !ok {
				// Fell behind: list everything again and re-watch.
				events = m.Store.Watch(ctx, "", "")
				m.resyncAll()
				continue
			}
			m.route(ev)
		case ex, ok := <-exits:
			if !ok {
				exits = nil
				continue
			}
			m.uidMu.Lock()
			key, known := m.uidKeys[ex.PodUID]
			m.uidMu.Unlock()
			if known {
				m.pods.Add(key)
			}
		case <-tick.C:
			m.resyncAll()
			m.startBackoff.GC()
		}
	}
}

func (m *Manager) startWorkers(ctx context.Context, q *queue, n int, fn func(ctx context.Context, account, name string) (time.Duration, error)) {
	for i := 0; i < n; i++ {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for {
				key, ok := q.Get()
				if !ok {
					return
				}
				account, name := splitKey(key)
				after, err := fn(ctx, account, name)
				q.Done(key)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					m.Log.Warn("reconcile failed", "key", key, "err", err)
					// Each failure in a row waits longer before the retry, up to a cap.
					after = max(after, q.Failed(key))
				} else {
					q.Forget(key)
				}
				if after > 0 {
					q.AddAfter(key, after)
				}
			}
		}()
	}
}

// route queues what a stored change concerns.
func (m *Manager) route(ev api.WatchEvent) {
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if json := ev.Object; len(json) > 0 {
		_ = unmarshal(json, &meta)
	}
	switch ev.Kind {
	case "Pod":
		m.pods.Add(objKey(ev.Account, meta.Metadata.Name))
	case "Account":
		m.accounts.Add(objKey("", meta.Metadata.Name))
		// Pods wait for their account's network.
		if ev.Type != api.Deleted {
			m.queueAccountPods(meta.Metadata.Name)
		}
	case "Node":
		m.nodes.Add(objKey("", meta.Metadata.Name))
		if ev.Type != api.Modified {
			// A node came or went: every account's segment spans a new set of nodes, and a Pending pod
			// may fit now.
			m.forgetSegments()
			if objs, err := m.Store.List(kindAccount, ""); err == nil {
				for _, o := range objs {
					m.accounts.Add(objKey("", o.GetName()))
				}
			}
		}
		m.queuePendingPods()
	}
	m.routeMore(ev, &meta.Metadata)
}

func (m *Manager) queueAccountPods(account string) {
	objs, _ := m.Store.List(kindPod, account)
	for _, o := range objs {
		m.pods.Add(objKey(account, o.GetName()))
	}
}

func (m *Manager) resyncAll() {
	if objs, err := m.Store.List(kindAccount, ""); err == nil {
		for _, o := range objs {
			m.accounts.Add(objKey("", o.GetName()))
		}
	}
	if objs, err := m.Store.List(kindPod, ""); err == nil {
		for _, o := range objs {
			m.pods.Add(objKey(api.AccountOf(o), o.GetName()))
		}
	}
	if objs, err := m.Store.List(kindNode, ""); err == nil {
		for _, o := range objs {
			m.nodes.Add(objKey("", o.GetName()))
		}
	}
	m.resyncMore()
}

// event records a Kubernetes Event about an object, shown by `pi describe`.
func (m *Manager) event(o metav1.Object, kind, typ, reason, msg string) {
	account := api.AccountOf(o)
	now := metav1.NewTime(time.Now().UTC())
	// Repeats of the same event fold into one with a count, as in Kubernetes.
	name := o.GetName() + "." + strings.ToLower(reason)
	if old, err := m.Store.Get(kindEvent, account, name); err == nil {
		ev := old.(*corev1.Event)
		if ev.InvolvedObject.UID == o.GetUID() && ev.Message == msg {
			ev.Count++
			ev.LastTimestamp = now
			m.Store.Update(ev)
			return
		}
		m.Store.Delete(kindEvent, account, name)
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: name},
		InvolvedObject: corev1.ObjectReference{Kind: kind, Name: o.GetName(), UID: o.GetUID(), Namespace: api.Namespace},
		Type:           typ, Reason: reason, Message: msg,
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		Source: corev1.EventSource{Component: "pi", Host: m.NodeName},
	}
	api.SetAccount(ev, account)
	if err := m.Store.Create(ev); err != nil && !store.IsAlreadyExists(err) {
		m.Log.Warn("record event", "err", err)
	}
}

// deleteEvents removes the events about an object that is gone.
func (m *Manager) deleteEvents(account string, uid string) {
	objs, _ := m.Store.List(kindEvent, account)
	for _, o := range objs {
		if o.(*corev1.Event).InvolvedObject.UID == metav1UID(uid) {
			m.Store.Delete(kindEvent, account, o.GetName())
		}
	}
}
