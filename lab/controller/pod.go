package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/registry"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/runtime/pods"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func metav1UID(s string) types.UID { return types.UID(s) }

// Restart back-off, as the kubelet's: 10 s doubling up to 5 min; the first restart is immediate.
const (
	backoffBase = 10 * time.Second
	backoffMax  = 5 * time.Minute
	// deleteGrace is how long containers get between SIGTERM and SIGKILL unless the pod says otherwise.
	deleteGrace = 5 * time.Second
)

func backoff(restarts int32) time.Duration {
	if restarts <= 0 {
		return 0
	}
	d := backoffBase
	for i := int32(1); i < restarts && d < backoffMax; i++ {
		d *= 2
	}
	return min(d, backoffMax)
}

// PodNetnsName is the named network namespace of a pod: the lab prefix and the pod's UID, unique by
// construction. Account and pod names must not be joined into it: account "x" pod "y-z" and account "x-y"
// pod "z" would share "<lab>-x-y-z", one netns for two pods of two accounts. "-p-" keeps it apart from the
// routers' "<lab>-r<index>".
func PodNetnsName(lab string, uid types.UID) string { return lab + "-p-" + string(uid) }

// oldPodNetnsName is the ambiguous name pods had before PodNetnsName used the UID; garbage collection
// still recognises it so that an upgraded lab removes those of pods that are gone.
func oldPodNetnsName(lab, account, pod string) string { return lab + "-" + account + "-" + pod }

// podID names a pod's links (its router port is a hash of it, its links' aliases carry it): the whole UID,
// so two pods never share one by construction.
func podID(p *corev1.Pod) string { return string(p.UID) }

func (m *Manager) rememberUID(p *corev1.Pod) {
	m.uidMu.Lock()
	m.uidKeys[string(p.UID)] = objKey(api.AccountOf(p), p.Name)
	m.uidMu.Unlock()
}

func (m *Manager) forgetUID(uid types.UID) {
	m.uidMu.Lock()
	delete(m.uidKeys, string(uid))
	m.uidMu.Unlock()
}

func (m *Manager) reconcilePod(ctx context.Context, account, name string) (time.Duration, error) {
	o, err := m.Store.Get(kindPod, account, name)
	if store.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pod := o.(*corev1.Pod)
	m.rememberUID(pod)
	node := m.nodeOf(pod)
	if pod.DeletionTimestamp != nil {
		if node != nil && api.NodeStopped(node) && !forceDeleted(pod) {
			// A dead host cannot stop its containers: the pod stays Terminating until its node is back
			// (the node controller queues it then), unless deleted with --grace-period=0 --force.
			return 0, nil
		}
		return 0, m.finishPodDeletion(ctx, pod, node)
	}
	acctObj, err := m.Store.Get(kindAccount, "", account)
	if err != nil {
		return 0, fmt.Errorf("pod %q: account %q: %w", name, account, err)
	}
	acct := acctObj.(*api.Account)
	if !acct.Status.Ready {
		// The account controller queues the account's pods once its network is up.
		return 5 * time.Second, nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return 0, nil
	}

	if pod.Status.PodIP == "" {
		placed, err := m.Registry.SchedulePod(account, pod.Name)
		var unsched *registry.UnschedulableError
		if errors.As(err, &unsched) {
			m.markUnschedulable(pod, unsched.Msg)
			// Node changes queue Pending pods again; the retry is a safety net.
			return 30 * time.Second, nil
		}
		if err != nil {
			return 0, err
		}
		pod = placed
		if pod.Spec.NodeName != "" {
			m.event(pod, "Pod", corev1.EventTypeNormal, "Scheduled", fmt.Sprintf("Successfully assigned %s/%s to %s", api.Namespace, pod.Name, pod.Spec.NodeName))
		}
		node = m.nodeOf(pod)
	}
	if node != nil && api.NodeStopped(node) {
		// The node is down: nothing runs there until `pi node start` (which queues its pods).
		return 0, nil
	}
	sb, err := m.ensurePodSandbox(pod, acct, node)
	if err != nil {
		m.event(pod, "Pod", corev1.EventTypeWarning, "SandboxFailed", err.Error())
		return 0, err
	}
	return m.syncContainers(ctx, pod, acct, sb)
}

// ensurePodSandbox builds what the containers of a pod share: its netns with its link on the account's
// bridge, its UTS and IPC namespaces, and its /etc/hosts and /etc/resolv.conf.
func (m *Manager) ensurePodSandbox(pod *corev1.Pod, acct *api.Account, node *corev1.Node) (pods.Sandbox, error) {
	account := api.AccountOf(pod)
	nsPath, err := netns.EnsureNamed(PodNetnsName(m.Lab, pod.UID))
	if err != nil {
		return pods.Sandbox{}, fmt.Errorf("pod %q: network namespace: %w", pod.Name, err)
	}
	ip := net.ParseIP(pod.Status.PodIP)
	br, err := m.podBridge(acct, node)
	if err != nil {
		return pods.Sandbox{}, fmt.Errorf("pod %q: %w", pod.Name, err)
	}
	if err := m.Network.EnsurePodOn(account, acct.Status.Index, nsPath, ip, podID(pod), br); err != nil {
		return pods.Sandbox{}, fmt.Errorf("pod %q: network: %w", pod.Name, err)
	}
	sb, err := m.Runtime.EnsureSandbox(pod, nsPath)
	if err != nil {
		return pods.Sandbox{}, fmt.Errorf("pod %q: sandbox: %w", pod.Name, err)
	}
	if err := writePodFiles(sb.Dir, pod, acct); err != nil {
		return pods.Sandbox{}, fmt.Errorf("pod %q: %w", pod.Name, err)
	}
	return sb, nil
}

// podBridge says where a pod's port goes: its account's bridge on its node in a multi-node lab (the
// account's segment is stretched there first), the account router's own bridge otherwise.
func (m *Manager) podBridge(acct *api.Account, node *corev1.Node) (network.Bridge, error) {
	index := 0
	if node != nil {
		index = api.NodeIndex(node)
	}
	if index == 0 || m.Overlay == nil {
		return network.Bridge{}, nil
	}
	if err := m.ensureSegment(acct); err != nil {
		return network.Bridge{}, err
	}
	path, br := m.Overlay.NodeBridge(index, acct.Status.Index)
	return network.Bridge{Netns: path, Name: br}, nil
}

// forceDeleted: deleted with --grace-period=0 --force, which does not wait for the node.
func forceDeleted(p *corev1.Pod) bool {
	return p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == 0
}

// markUnschedulable records why no node takes the pod, as kube-scheduler does: PodScheduled False with
// reason Unschedulable, and a FailedScheduling event.
func (m *Manager) markUnschedulable(pod *corev1.Pod, msg string) {
	m.Store.Mutate(kindPod, api.AccountOf(pod), pod.Name, func(o metav1.Object) error {
		p := o.(*corev1.Pod)
		if p.UID != pod.UID || p.Status.PodIP != "" {
			return store.ErrUnchanged
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message == msg {
				return store.ErrUnchanged
			}
		}
		setCondition(&p.Status, corev1.PodScheduled, false, msg)
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodScheduled {
				p.Status.Conditions[i].Reason = corev1.PodReasonUnschedulable
			}
		}
		return nil
	})
	m.event(pod, "Pod", corev1.EventTypeWarning, "FailedScheduling", msg)
}

func writePodFiles(dir string, pod *corev1.Pod, acct *api.Account) error {
	hosts := fmt.Sprintf("# Kubernetes-managed hosts file (written by pi).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n%s\t%s\n",
		pod.Status.PodIP, pod.Name)
	dns := acct.Status.DNSIP
	if dns == "" {
		dns = "10.244.0.2"
	}
	resolv := fmt.Sprintf("search %s.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\noptions ndots:5\n", api.Namespace, dns)
	for name, content := range map[string]string{"hosts": hosts, "resolv.conf": resolv} {
		if err := writeFileIfChanged(filepath.Join(dir, name), content); err != nil {
			return err
		}
	}
	return nil
}

func writeFileIfChanged(path, content string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func podMounts(sb pods.Sandbox) []specs.Mount {
	var out []specs.Mount
	for _, f := range []string{"hosts", "resolv.conf"} {
		out = append(out, specs.Mount{Destination: "/etc/" + f, Type: "bind", Source: filepath.Join(sb.Dir, f), Options: []string{"rbind", "rw"}})
	}
	return out
}

// syncContainers starts, restarts and reports the pod's containers.
func (m *Manager) syncContainers(ctx context.Context, pod *corev1.Pod, acct *api.Account, sb pods.Sandbox) (time.Duration, error) {
	prev := map[string]corev1.ContainerStatus{}
	for _, cs := range pod.Status.ContainerStatuses {
		prev[cs.Name] = cs
	}
	var statuses []corev1.ContainerStatus
	var requeue time.Duration
	var firstErr error
	policy := pod.Spec.RestartPolicy
	now := time.Now()
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		old, had := prev[c.Name]
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, RestartCount: old.RestartCount, LastTerminationState: old.LastTerminationState}
		st, err := m.Runtime.State(ctx, string(pod.UID), c.Name)
		if err != nil {
			return 0, fmt.Errorf("pod %q container %q: %w", pod.Name, c.Name, err)
		}
		start := false
		switch {
		case st.Exists && st.Running:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt)}
			cs.Ready = m.containerReady(pod, c)
			cs.Started = ptr(true)
			cs.ImageID = st.ImageRef
			cs.ContainerID = "containerd://" + st.ID
			if !had || old.State.Running == nil {
				m.event(pod, "Pod", corev1.EventTypeNormal, "Started", fmt.Sprintf("Started container %s", c.Name))
			}
		case st.Exists:
			term := &corev1.ContainerStateTerminated{ExitCode: int32(st.ExitCode), Reason: st.Reason,
				StartedAt: metav1.NewTime(st.StartedAt), FinishedAt: metav1.NewTime(st.FinishedAt), ContainerID: "containerd://" + st.ID}
			cs.ContainerID = term.ContainerID
			restart := policy == corev1.RestartPolicyAlways || policy == "" || (policy == corev1.RestartPolicyOnFailure && st.ExitCode != 0)
			if !restart {
				cs.State.Terminated = term
				break
			}
			wait := backoff(cs.RestartCount) - now.Sub(st.FinishedAt)
			if wait > 0 {
				cs.LastTerminationState = corev1.ContainerState{Terminated: term}
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
					Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff(cs.RestartCount).Round(time.Second), c.Name, pod.Name)}
				if requeue == 0 || wait < requeue {
					requeue = wait
				}
				break
			}
			cs.LastTerminationState = corev1.ContainerState{Terminated: term}
			cs.RestartCount++
			start = true
		default:
			start = true
		}
		if start {
			if _, err := m.Images.Resolve(ctx, c.Image); err != nil {
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: err.Error()}}
				if !had || old.State.Waiting == nil || old.State.Waiting.Reason != "ErrImageNeverPull" {
					m.event(pod, "Pod", corev1.EventTypeWarning, "Failed", err.Error())
				}
				requeue = 10 * time.Second
				statuses = append(statuses, cs)
				continue
			}
			// A container that failed to start waits out its back-off before the next try, however often
			// the pod is synced meanwhile (as the kubelet's per-container back-off).
			bkey := string(pod.UID) + "/" + c.Name
			if m.startBackoff.IsInBackOffSinceUpdate(bkey, now) && had && old.State.Waiting != nil && old.State.Waiting.Reason == "CreateContainerError" {
				cs.State = old.State
				if wait := m.startBackoff.Get(bkey); requeue == 0 || wait < requeue {
					requeue = wait
				}
				statuses = append(statuses, cs)
				continue
			}
			// Under the account's cgroup with its CPU and memory ceilings (issue 11, a fair share).
			cpu, mem, err := api.AccountCeilings(acct.Spec)
			if err == nil {
				err = m.Runtime.StartContainer(ctx, pods.ContainerOptions{
					Pod: pod, Container: c, Sandbox: sb, Attempt: int(cs.RestartCount), Mounts: podMounts(sb),
					Labels:  map[string]string{"pilab.dev/account": api.AccountOf(pod)},
					Account: pods.AccountCgroup{UID: string(acct.UID), CPUMilli: cpu, MemoryBytes: mem},
				})
			} else {
				err = fmt.Errorf("account %q: %w", acct.Name, err)
			}
			if err != nil {
				m.startBackoff.Next(bkey, now)
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: err.Error()}}
				m.event(pod, "Pod", corev1.EventTypeWarning, "Failed", fmt.Sprintf("Error: %v", err))
				if firstErr == nil {
					firstErr = fmt.Errorf("pod %q container %q: %w (next try in %s)", pod.Name, c.Name, err, m.startBackoff.Get(bkey).Round(time.Second))
				}
				if wait := m.startBackoff.Get(bkey); requeue == 0 || wait < requeue {
					requeue = wait
				}
				statuses = append(statuses, cs)
				continue
			}
			m.startBackoff.Reset(bkey)
			st, _ = m.Runtime.State(ctx, string(pod.UID), c.Name)
			if st.Running {
				cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt)}}
				cs.Ready = m.containerReady(pod, c)
				cs.Started = ptr(true)
				cs.ContainerID = "containerd://" + st.ID
				cs.ImageID = st.ImageRef
				m.event(pod, "Pod", corev1.EventTypeNormal, "Started", fmt.Sprintf("Started container %s", c.Name))
			} else {
				// It exited already; the exit event brings us back.
				cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
				requeue = time.Second
			}
		}
		statuses = append(statuses, cs)
	}
	m.updatePodStatus(pod, statuses)
	return requeue, firstErr
}

func ptr[T any](v T) *T { return &v }

// containerReady: a running container is ready unless its readinessProbe says otherwise (or has not passed yet).
func (m *Manager) containerReady(pod *corev1.Pod, c *corev1.Container) bool {
	if c.ReadinessProbe == nil {
		return true
	}
	ready, _ := m.probeReady(string(pod.UID), c.Name)
	return ready
}

// updatePodStatus derives phase and conditions from container statuses and stores them if they changed.
func (m *Manager) updatePodStatus(pod *corev1.Pod, statuses []corev1.ContainerStatus) {
	running, terminated, failed := 0, 0, 0
	for _, cs := range statuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			terminated++
			if cs.State.Terminated.ExitCode != 0 {
				failed++
			}
		}
	}
	phase := corev1.PodPending
	switch {
	case terminated == len(statuses) && failed == 0:
		phase = corev1.PodSucceeded
	case terminated == len(statuses):
		phase = corev1.PodFailed
	case running > 0 || terminated > 0:
		phase = corev1.PodRunning
	}
	for _, cs := range statuses {
		// A container in back-off still counts toward Running, as the kubelet reports it.
		if cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
			phase = corev1.PodRunning
		}
	}
	ready := 0
	for _, cs := range statuses {
		if cs.Ready {
			ready++
		}
	}
	allReady := ready == len(statuses)
	m.Store.Mutate(kindPod, api.AccountOf(pod), pod.Name, func(o metav1.Object) error {
		p := o.(*corev1.Pod)
		if p.UID != pod.UID || p.DeletionTimestamp != nil {
			return store.ErrUnchanged
		}
		before, _ := json.Marshal(p.Status)
		p.Status.Phase = phase
		p.Status.ContainerStatuses = statuses
		if p.Status.StartTime == nil {
			t := metav1.Now()
			p.Status.StartTime = &t
		}
		setCondition(&p.Status, corev1.PodScheduled, true, "")
		setCondition(&p.Status, corev1.PodInitialized, true, "")
		setCondition(&p.Status, corev1.ContainersReady, allReady, "")
		setCondition(&p.Status, corev1.PodReady, allReady, "")
		after, _ := json.Marshal(p.Status)
		if string(before) == string(after) {
			return store.ErrUnchanged
		}
		return nil
	})
	m.meterPod(pod, phase == corev1.PodRunning)
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, msg string) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			if st.Conditions[i].Status != status {
				st.Conditions[i].Status = status
				st.Conditions[i].LastTransitionTime = metav1.Now()
			}
			st.Conditions[i].Message = msg
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: status, LastTransitionTime: metav1.Now(), Message: msg})
}

// finishPodDeletion stops the pod's containers and removes everything of it, then the object itself.
func (m *Manager) finishPodDeletion(ctx context.Context, pod *corev1.Pod, node *corev1.Node) error {
	account := api.AccountOf(pod)
	grace := deleteGrace
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if pod.DeletionGracePeriodSeconds != nil {
		// The delete request's own grace period (kubectl delete --grace-period) wins.
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	for _, c := range pod.Spec.Containers {
		if err := m.Runtime.StopContainer(ctx, string(pod.UID), c.Name, grace); err != nil {
			m.Log.Warn("stop container", "pod", pod.Name, "container", c.Name, "err", err)
		}
	}
	var errs []error
	if err := m.Runtime.RemovePod(ctx, string(pod.UID)); err != nil {
		errs = append(errs, fmt.Errorf("remove containers: %w", err))
	}
	if err := m.Runtime.RemoveSandbox(string(pod.UID)); err != nil {
		errs = append(errs, fmt.Errorf("remove sandbox: %w", err))
	}
	if acctObj, err := m.Store.Get(kindAccount, "", account); err == nil {
		var br network.Bridge
		if i := nodeIndexOf(node); i > 0 && m.Overlay != nil {
			path, name := m.Overlay.NodeBridge(i, acctObj.(*api.Account).Status.Index)
			br = network.Bridge{Netns: path, Name: name}
		}
		if err := m.Network.DeletePodOn(account, acctObj.(*api.Account).Status.Index, podID(pod), br); err != nil {
			errs = append(errs, fmt.Errorf("remove network: %w", err))
		}
	}
	if err := netns.DeleteNamed(PodNetnsName(m.Lab, pod.UID)); err != nil {
		errs = append(errs, fmt.Errorf("remove netns: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete pod %q: %w", pod.Name, err)
	}
	m.meterPod(pod, false)
	m.forgetUID(pod.UID)
	m.deleteEvents(account, string(pod.UID))
	err := m.Store.Delete(kindPod, account, pod.Name)
	if store.IsNotFound(err) {
		return nil
	}
	return err
}

func nodeIndexOf(n *corev1.Node) int {
	if n == nil {
		return 0
	}
	return api.NodeIndex(n)
}
