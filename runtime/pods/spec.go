package pods

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
)

// What every container gets, whatever its pod spec says (issue 9, defect
// 12: with no limits a pod had no memory limit, pids.max=max, 14
// capabilities and no seccomp profile).
const (
	// DefaultMemoryLimit is the memory limit of a container that sets no
	// resources.limits.memory: Pi's size S4 (512 MiB), the size
	// lab/billing already bills such a pod at (billing.DefaultSize).
	DefaultMemoryLimit = 512 << 20
	// PidsLimit is every container's pids.max: far above what the lab's
	// images run (nginx or apache2 with their workers are tens of
	// processes and threads, podinfo a Go program's threads), and low
	// enough that a fork bomb stops there instead of taking the machine's
	// pid space (pid_max is 4 million on 64-bit, the lab's daemon and
	// containerd share it).
	PidsLimit = 1024
	// DefaultCPULimitMilli is the CPU limit of a container that sets no
	// resources.limits.cpu: one core, so that one container's busy loops
	// (a learner's fork bomb stopped at PidsLimit is a thousand of them)
	// leave the machine's other cores to everyone else's pods, as a
	// LimitRange's default does in a cluster.
	DefaultCPULimitMilli = 1000
	// pingGroupRange lets every group of the container open unprivileged
	// ICMP echo sockets (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)), which
	// iputils' ping falls back to without CAP_NET_RAW (a non-root user in
	// a container has none, whatever the bounding set). It is a
	// per-netns sysctl (default "1 0": nobody); runc writes it in the pod's
	// netns when it starts a container joining it, and it may do so for a
	// netns joined by path as long as that is not the host's.
	pingGroupRangeSysctl = "net.ipv4.ping_group_range"
	pingGroupRange       = "0 2147483647"
)

// droppedCapabilities are taken out of containerd's default set (14
// capabilities, Docker's). MKNOD makes device nodes; the lab's images use
// none beyond the /dev runc gives them.
//
// NET_RAW stays, though it allows raw and packet sockets (spoofing and
// sniffing on the account's br0): the busybox lab image's ping is
// busybox's applet, which in Debian bookworm's busybox (1.35) only opens a
// raw ICMP socket and fails with "permission denied (are you root?)"
// without NET_RAW; it has no fallback to the unprivileged ICMP socket that
// pingGroupRange allows (TestLabImagesRunHardened runs it). It can go once
// the busybox-based images ship a ping that falls back (iputils-ping does).
var droppedCapabilities = []string{"CAP_MKNOD"}

// specOpts turns a Kubernetes container plus its image config into OCI spec
// options, applied on top of containerd's default spec (default
// capabilities, root user unless the image says otherwise), then hardened:
// no MKNOD, containerd's default seccomp profile, a pids limit and
// a memory limit even when the pod sets none. Never privileged.
func specOpts(o ContainerOptions, img containerd.Image, ic ocispec.ImageConfig, ns string) ([]oci.SpecOpts, error) {
	c, pod, sb := o.Container, o.Pod, o.Sandbox
	env, err := containerEnv(pod, c)
	if err != nil {
		return nil, err
	}
	lookup := envLookup(env)
	expandAll := func(ss []string) []string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = expand(s, lookup)
		}
		return out
	}
	// Kubernetes: command replaces the image's Entrypoint (and drops its
	// Cmd), args replace Cmd.
	entrypoint, cmd := ic.Entrypoint, ic.Cmd
	if len(c.Command) > 0 {
		entrypoint, cmd = expandAll(c.Command), nil
	}
	if len(c.Args) > 0 {
		cmd = expandAll(c.Args)
	}
	args := append(append([]string{}, entrypoint...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("image %s has no Entrypoint or Cmd and the container sets no command; set command in the pod spec", c.Image)
	}
	hostname := Hostname(pod)

	// Mounts: the pod's /dev/shm and /etc/hostname unless the caller brings
	// its own; the caller's replace containerd defaults with the same
	// destination.
	mounts := []specs.Mount{{
		Destination: "/dev/shm", Type: "bind", Source: shmDir(sb.Dir),
		Options: []string{"rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"},
	}}
	if !hasMount(o.Mounts, "/etc/hostname") {
		mounts = append(mounts, specs.Mount{
			Destination: "/etc/hostname", Type: "bind", Source: hostnameFile(sb.Dir),
			Options: []string{"rbind", "rprivate", "ro"},
		})
	}
	mounts = append(mounts, o.Mounts...)
	var dests []string
	for _, m := range mounts {
		dests = append(dests, m.Destination)
	}

	opts := []oci.SpecOpts{
		oci.WithImageConfig(img), // env, working dir, user
		oci.WithProcessArgs(args...),
		oci.WithEnv([]string{"HOSTNAME=" + hostname}),
		oci.WithEnv(env),
		oci.WithHostname(hostname),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: sb.NetnsPath}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.UTSNamespace, Path: sb.UTSPath}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: sb.IPCPath}),
		oci.WithoutMounts(dests...),
		oci.WithMounts(mounts),
	}
	if c.WorkingDir != "" {
		opts = append(opts, oci.WithProcessCwd(c.WorkingDir))
	}
	memory := uint64(DefaultMemoryLimit)
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && q.Value() > 0 {
		memory = uint64(q.Value())
	}
	opts = append(opts, oci.WithMemoryLimit(memory))
	const period = 100000 // µs, the kernel default
	cpu := int64(DefaultCPULimitMilli)
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok && q.MilliValue() > 0 {
		cpu = q.MilliValue()
	}
	if a := o.Account; a.UID != "" {
		// Below the account's cgroup. A container's CPU limit above its
		// account's (the machine's CPUs by default) is clamped to it: it
		// could not use more anyway, and cgroup v1 refuses a child's cfs
		// quota above its parent's (EINVAL from runc).
		cpu = min(cpu, a.cpuMilli(runtime.NumCPU()))
		opts = append(opts, oci.WithCgroup(CgroupsPath(ns, a.UID, string(pod.UID), ContainerID(pod, c.Name))))
	}
	opts = append(opts, oci.WithCPUCFS(max(cpu*period/1000, 1000), period))
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok && q.MilliValue() > 0 {
		opts = append(opts, oci.WithCPUShares(uint64(max(q.MilliValue()*1024/1000, 2))))
	}
	opts = append(opts,
		oci.WithDroppedCapabilities(droppedCapabilities),
		withSysctl(pingGroupRangeSysctl, pingGroupRange),
		oci.WithPidsLimit(PidsLimit),
		// Last: the default profile allows some syscalls only when the
		// spec's capabilities include the matching one (as Docker's does).
		seccomp.WithDefaultProfile(),
	)
	return opts, nil
}

// withSysctl sets one sysctl in the container's namespaces.
func withSysctl(key, value string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		s.Linux.Sysctl[key] = value
		return nil
	}
}

func hasMount(ms []specs.Mount, dest string) bool {
	for _, m := range ms {
		if m.Destination == dest {
			return true
		}
	}
	return false
}

// containerEnv resolves a container's env list in order, with Kubernetes'
// $(VAR) expansion against the variables defined before each one, and the
// downward-API fields pilab knows. ConfigMap/Secret references are not
// resolvable here: the caller must turn them into values first.
func containerEnv(pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	if len(c.EnvFrom) > 0 {
		return nil, errors.New("envFrom is not supported by pilab; list the variables under env")
	}
	var env []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
			v = expand(v, envLookup(env))
		case e.ValueFrom.FieldRef != nil:
			var err error
			if v, err = podField(pod, e.ValueFrom.FieldRef.FieldPath); err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
		default:
			return nil, fmt.Errorf("env %s: only value and valueFrom.fieldRef are supported by pilab; set value directly", e.Name)
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// envLookup finds the last definition of a variable in a KEY=VALUE list.
func envLookup(env []string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		for i := len(env) - 1; i >= 0; i-- {
			if k, v, _ := strings.Cut(env[i], "="); k == name {
				return v, true
			}
		}
		return "", false
	}
}

// podField is the downward API: the value of a pod field by its path.
func podField(pod *corev1.Pod, path string) (string, error) {
	if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.podIPs":
		ips := make([]string, len(pod.Status.PodIPs))
		for i, ip := range pod.Status.PodIPs {
			ips[i] = ip.IP
		}
		return strings.Join(ips, ","), nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

// expand implements Kubernetes' $(VAR) syntax: $(NAME) becomes the value of
// NAME when defined and stays as written otherwise; $$ is a literal $.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			ref := s[i : i+3+end]
			if v, ok := lookup(ref[2 : len(ref)-1]); ok {
				b.WriteString(v)
			} else {
				b.WriteString(ref)
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
