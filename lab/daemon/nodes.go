package daemon

// The lab's nodes, as the daemon keeps them: made at the first start (`pi up --nodes N`), rebuilt from the
// store at every start, and changed by `pi node add|delete|stop|start` through /x/nodes. The node
// controller (lab/controller/node.go) does the kernel work; these handlers record the wish through the
// registry and wait until the controller has carried it out, so the command returns when it is true.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var kindNode, _ = api.LookupKind("Node")

// initNodes makes a new lab's nodes: one node named after the machine (its pods sit on the account
// routers), or with --nodes N > 1, nodes worker..workerN on the lab's underlay. A lab that has nodes keeps
// them; a --nodes that disagrees is reported, not acted on (nodes are added and deleted with `pi node`).
func (d *Daemon) initNodes() error {
	objs, err := d.store.List(kindNode, "")
	if err != nil {
		return err
	}
	if len(objs) > 0 {
		if d.cfg.Nodes > 0 && d.cfg.Nodes != len(objs) {
			d.log.Warn(fmt.Sprintf("lab %s has %d node(s); --nodes %d is for a new lab: add or delete nodes with `pi node add` / `pi node delete NAME`", d.cfg.Lab, len(objs), d.cfg.Nodes))
		}
		return d.collectStrayNodes(objs)
	}
	if d.cfg.Nodes <= 1 {
		host, _ := os.Hostname()
		_, err := d.registry.AddSingleNode(host)
		return err
	}
	for i := 0; i < d.cfg.Nodes; i++ {
		if _, err := d.registry.AddNode(); err != nil {
			return fmt.Errorf("make node %d of %d: %w", i+1, d.cfg.Nodes, err)
		}
	}
	return d.collectStrayNodes(nil)
}

// collectStrayNodes deletes node namespaces of this lab that no stored node has (a `pi node delete` cut
// short between the store and the kernel).
func (d *Daemon) collectStrayNodes(objs []metav1.Object) error {
	if objs == nil {
		var err error
		if objs, err = d.store.List(kindNode, ""); err != nil {
			return err
		}
	}
	want := map[int]bool{}
	for _, o := range objs {
		want[api.NodeIndex(o.(*corev1.Node))] = true
	}
	have, err := d.overlay.Nodes()
	if err != nil {
		return fmt.Errorf("list the lab's node namespaces: %w", err)
	}
	for _, n := range have {
		if !want[n.Index] {
			d.log.Info("delete stray node namespace", "index", n.Index)
			if err := d.overlay.DeleteNode(n.Index); err != nil {
				return fmt.Errorf("delete stray node %d: %w", n.Index, err)
			}
		}
	}
	return nil
}

// nodeWait bounds how long a node command waits for the node controller.
const nodeWait = 60 * time.Second

// waitNode waits until ok holds for the stored node (nil: the node is gone).
func (d *Daemon) waitNode(ctx context.Context, name string, ok func(*corev1.Node) bool) (*corev1.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, nodeWait)
	defer cancel()
	for {
		var n *corev1.Node
		o, err := d.store.Get(kindNode, "", name)
		if err == nil {
			n = o.(*corev1.Node)
		} else if !store.IsNotFound(err) {
			return nil, err
		}
		if ok(n) {
			return n, nil
		}
		select {
		case <-ctx.Done():
			msg := "is gone"
			if n != nil {
				msg = "is " + nodeReadyText(n)
			}
			return n, fmt.Errorf("node %q %s after %s; see the daemon's log (%s) and `kubectl describe node %s`", name, msg, nodeWait, "pi daemon", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func nodeReadyText(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return fmt.Sprintf("Ready=%s (%s: %s)", c.Status, c.Reason, c.Message)
		}
	}
	return "without a Ready condition"
}

// NodeResult is what a node command answers.
type NodeResult struct {
	Name    string        `json:"name"`
	Index   int           `json:"index"`
	Took    time.Duration `json:"took"`
	Evicted []string      `json:"evicted,omitempty"`
}

func (d *Daemon) nodeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /nodes", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		n, err := d.registry.AddNode()
		if err != nil {
			server.WriteError(w, err)
			return
		}
		name, index := n.Name, api.NodeIndex(n)
		if n, err = d.waitNode(r.Context(), name, func(n *corev1.Node) bool { return n != nil && api.NodeReady(n) }); err != nil {
			// No half-made node: what was recorded and built of it goes again.
			if rerr := d.registry.RemoveNode(name); rerr != nil && !store.IsNotFound(rerr) {
				err = fmt.Errorf("%w; removing the half-made node: %v", err, rerr)
			} else if derr := d.overlay.DeleteNode(index); derr != nil {
				err = fmt.Errorf("%w; removing the half-made node's namespace: %v", err, derr)
			}
			server.WriteError(w, err)
			return
		}
		server.WriteJSON(w, 200, NodeResult{Name: n.Name, Index: api.NodeIndex(n), Took: time.Since(start)})
	})
	mux.HandleFunc("POST /nodes/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		name, action := r.PathValue("name"), r.PathValue("action")
		if action != "stop" && action != "start" && action != "drain" {
			server.WriteError(w, server.Invalid("unknown node action %q: stop, start or drain", action))
			return
		}
		start := time.Now()
		if action == "drain" {
			o, err := d.store.Get(kindNode, "", name)
			if err != nil {
				server.WriteError(w, err)
				return
			}
			evicted, err := d.drainNode(r.Context(), o.(*corev1.Node))
			if err != nil {
				server.WriteError(w, err)
				return
			}
			server.WriteJSON(w, 200, NodeResult{Name: name, Index: api.NodeIndex(o.(*corev1.Node)), Took: time.Since(start), Evicted: evicted})
			return
		}
		stop := action == "stop"
		n, err := d.setNodeStopped(name, stop)
		if err != nil {
			server.WriteError(w, err)
			return
		}
		if n, err = d.waitNode(r.Context(), name, func(n *corev1.Node) bool { return n != nil && api.NodeReady(n) != stop }); err != nil {
			server.WriteError(w, err)
			return
		}
		server.WriteJSON(w, 200, NodeResult{Name: n.Name, Index: api.NodeIndex(n), Took: time.Since(start)})
	})
	mux.HandleFunc("DELETE /nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		res, err := d.deleteNode(r.Context(), r.PathValue("name"), r.URL.Query().Get("force") == "true")
		if err != nil {
			server.WriteError(w, err)
			return
		}
		server.WriteJSON(w, 200, res)
	})
}

// drainNode cordons node n and deletes the pods of every account placed on it (their ReplicaSets replace
// them on other nodes; a stopped node's at once, as a dead host cannot stop them), then waits until they are
// gone. It returns them as account/pod. `kubectl drain` does the same for the account it acts for; this is
// the lab's, for all of them.
func (d *Daemon) drainNode(ctx context.Context, n *corev1.Node) ([]string, error) {
	name := n.Name
	if _, err := d.store.Mutate(kindNode, "", name, func(o metav1.Object) error {
		if o.(*corev1.Node).Spec.Unschedulable {
			return store.ErrUnchanged
		}
		o.(*corev1.Node).Spec.Unschedulable = true
		return nil
	}); err != nil {
		return nil, err
	}
	pods, err := d.registry.NodePods(name)
	if err != nil {
		return nil, err
	}
	var evicted []string
	zero := int64(0)
	for _, p := range pods {
		evicted = append(evicted, api.AccountOf(p)+"/"+p.Name)
		var grace *int64
		if api.NodeStopped(n) {
			grace = &zero // a dead host cannot stop them gracefully
		}
		if err := d.ctrl.DeleteObjectGrace(ctx, api.AccountOf(p), kindPod, p, grace); err != nil && !store.IsNotFound(err) {
			return nil, fmt.Errorf("node %q: delete pod %s/%s: %w", name, api.AccountOf(p), p.Name, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, nodeWait)
	defer cancel()
	for {
		left, err := d.registry.NodePods(name)
		if err != nil {
			return nil, err
		}
		if len(left) == 0 {
			return evicted, nil
		}
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("node %q: %d pod(s) still being deleted after %s; try again", name, len(left), nodeWait)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// setNodeStopped records `pi node stop` (a dead host) or `pi node start` on the node.
func (d *Daemon) setNodeStopped(name string, stop bool) (*corev1.Node, error) {
	o, err := d.store.Mutate(kindNode, "", name, func(o metav1.Object) error {
		n := o.(*corev1.Node)
		if api.NodeIndex(n) == 0 {
			return server.Invalid("node %q is this machine, the one node of a single-node lab: it cannot be stopped; make a multi-node lab (`pi up --nodes 2`) to see a node fail", name)
		}
		if api.NodeStopped(n) == stop {
			return store.ErrUnchanged
		}
		if stop {
			if n.Annotations == nil {
				n.Annotations = map[string]string{}
			}
			n.Annotations[api.NodeStoppedAnnotation] = time.Now().UTC().Format(time.RFC3339)
		} else {
			delete(n.Annotations, api.NodeStoppedAnnotation)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o.(*corev1.Node), nil
}

// deleteNode removes a node: refused while pods are placed on it, unless force, which cordons the node,
// deletes its pods (their ReplicaSets replace them elsewhere) and waits until they are gone. The node's
// namespace goes after its object, and a start collects a namespace a crash left in between.
func (d *Daemon) deleteNode(ctx context.Context, name string, force bool) (*NodeResult, error) {
	start := time.Now()
	o, err := d.store.Get(kindNode, "", name)
	if err != nil {
		return nil, err
	}
	n := o.(*corev1.Node)
	index := api.NodeIndex(n)
	if index == 0 {
		return nil, server.Invalid("node %q is this machine, the one node of a single-node lab: it cannot be deleted", name)
	}
	res := &NodeResult{Name: name, Index: index}
	if force {
		if res.Evicted, err = d.drainNode(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := d.registry.RemoveNode(name); err != nil {
		return nil, err
	}
	if err := d.overlay.DeleteNode(index); err != nil {
		return nil, fmt.Errorf("node %q was removed from the lab but its namespace %s was not: %w (the next daemon start removes it)", name, d.overlay.NodeNetnsName(index), err)
	}
	res.Took = time.Since(start)
	return res, nil
}
