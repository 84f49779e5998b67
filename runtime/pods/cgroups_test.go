package pods

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The planner's directories and writes for given ceilings, on both cgroup
// interfaces.
func TestPlanCgroups(t *testing.T) {
	acct := AccountCgroup{UID: "A1", CPUMilli: 1500, MemoryBytes: 2 << 30}
	for _, tc := range []struct {
		name   string
		mode   cgroupMode
		a      AccountCgroup
		cpus   int
		want   cgroupPlan
		errHas string
	}{{
		name: "v1", mode: cgroupV1, a: acct, cpus: 2,
		want: cgroupPlan{
			Dirs: []string{"cpu/lab/a-A1/p-P1", "memory/lab/a-A1/p-P1", "pids/lab/a-A1/p-P1"},
			Writes: []cgroupWrite{
				{File: "memory/lab/a-A1/memory.limit_in_bytes", Value: "2147483648"},
				{File: "memory/lab/a-A1/memory.memsw.limit_in_bytes", Value: "2147483648", IfExists: true},
				{File: "cpu/lab/a-A1/cpu.cfs_period_us", Value: "100000"},
				{File: "cpu/lab/a-A1/cpu.cfs_quota_us", Value: "150000"},
				{File: "pids/lab/a-A1/p-P1/pids.max", Value: "1024"},
			},
		},
	}, {
		name: "v1 default CPU is the machine's", mode: cgroupV1, a: AccountCgroup{UID: "A1", MemoryBytes: 4 << 30}, cpus: 8,
		want: cgroupPlan{
			Dirs: []string{"cpu/lab/a-A1/p-P1", "memory/lab/a-A1/p-P1", "pids/lab/a-A1/p-P1"},
			Writes: []cgroupWrite{
				{File: "memory/lab/a-A1/memory.limit_in_bytes", Value: "4294967296"},
				{File: "memory/lab/a-A1/memory.memsw.limit_in_bytes", Value: "4294967296", IfExists: true},
				{File: "cpu/lab/a-A1/cpu.cfs_period_us", Value: "100000"},
				{File: "cpu/lab/a-A1/cpu.cfs_quota_us", Value: "800000"},
				{File: "pids/lab/a-A1/p-P1/pids.max", Value: "1024"},
			},
		},
	}, {
		name: "v2", mode: cgroupV2, a: AccountCgroup{UID: "A1", CPUMilli: 500, MemoryBytes: 96 << 20}, cpus: 2,
		want: cgroupPlan{
			Dirs: []string{"lab/a-A1/p-P1"},
			Writes: []cgroupWrite{
				{File: "cgroup.subtree_control", Value: "+cpu +memory +pids", Enable: true},
				{File: "lab/cgroup.subtree_control", Value: "+cpu +memory +pids", Enable: true},
				{File: "lab/a-A1/cgroup.subtree_control", Value: "+cpu +memory +pids", Enable: true},
				{File: "lab/a-A1/p-P1/cgroup.subtree_control", Value: "+cpu +memory +pids", Enable: true},
				{File: "lab/a-A1/memory.max", Value: "100663296"},
				{File: "lab/a-A1/memory.swap.max", Value: "0", IfExists: true},
				{File: "lab/a-A1/cpu.max", Value: "50000 100000"},
				{File: "lab/a-A1/p-P1/pids.max", Value: "1024"},
			},
		},
	}, {
		name: "no memory ceiling", mode: cgroupV1, a: AccountCgroup{UID: "A1", CPUMilli: 1000}, cpus: 2,
		errHas: "needs spec.memoryQuota",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planCgroups(tc.mode, "lab", tc.a, "P1", tc.cpus)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want one saying %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if got := CgroupsPath("lab", "A1", "P1", "web-12345678-nginx"); got != "/lab/a-A1/p-P1/web-12345678-nginx" {
		t.Errorf("CgroupsPath = %s", got)
	}
}

// A plan applied to a plain directory tree: parents made, enabled
// controllers not written again, optional files skipped when absent.
func TestApplyCgroupPlan(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("cpu memory\n"), 0o644)
	p, err := planCgroups(cgroupV2, "lab", AccountCgroup{UID: "A1", CPUMilli: 500, MemoryBytes: 96 << 20}, "P1", 2)
	if err != nil {
		t.Fatal(err)
	}
	// What the kernel would provide in a new cgroup.
	for _, d := range []string{"lab", "lab/a-A1", "lab/a-A1/p-P1"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
		os.WriteFile(filepath.Join(root, d, "cgroup.subtree_control"), nil, 0o644)
	}
	if err := p.apply(root); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"cgroup.subtree_control":               "+pids",
		"lab/cgroup.subtree_control":           "+cpu +memory +pids",
		"lab/a-A1/memory.max":                  "100663296",
		"lab/a-A1/cpu.max":                     "50000 100000",
		"lab/a-A1/p-P1/pids.max":               "1024",
		"lab/a-A1/p-P1/cgroup.subtree_control": "+cpu +memory +pids",
	} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q (%v), want %q", f, b, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "lab/a-A1/memory.swap.max")); err == nil {
		t.Errorf("memory.swap.max written though absent (no swap accounting)")
	}
}

// readCgroup reads a v1 control file of a cgroup below /sys/fs/cgroup.
func readCgroup(t *testing.T, controller, cg, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cgroupRoot, controller, cg, file))
	if err != nil {
		t.Fatalf("read the cgroup file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// Issue 11: two pods of one account, each within its own container limit,
// together past the account's memory ceiling: one is OOM-killed. Two CPU
// spinners of the account together get at most its CPU ceiling. The
// levels are where the layout says, and go with the pods and the account.
func TestAccountCgroupCeilings(t *testing.T) {
	mode, err := detectCgroupMode()
	if err != nil {
		t.Fatal(err)
	}
	if mode != cgroupV1 {
		t.Skip("this test reads cgroup v1 files; the planner's v2 writes are covered by TestPlanCgroups")
	}
	e := newEnv(t)
	acct := AccountCgroup{UID: "acct-" + e.ns, CPUMilli: 500, MemoryBytes: 96 << 20}
	hog := func(name string) corev1.Container {
		c := ctr(name, "alloc", "64")
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
		return c
	}
	start := func(pod *corev1.Pod, sb Sandbox, name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for i := range pod.Spec.Containers {
			if c := &pod.Spec.Containers[i]; c.Name == name {
				if err := e.rt.StartContainer(ctx, ContainerOptions{Pod: pod, Container: c, Sandbox: sb, Account: acct}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	pod1, sb1 := e.newPod(t, "one", hog("hog"), ctr("spin", "spin"))
	pod2, sb2 := e.newPod(t, "two", hog("hog"), ctr("spin", "spin"))
	acg := accountCgroup(e.ns, acct.UID)

	// Memory: the first pod's 64 MiB fits, the second's does not beside it.
	start(pod1, sb1, "hog")
	waitFor(t, 30*time.Second, "the first hog to allocate", func() bool {
		return strings.Contains(e.logs(t, pod1, "hog", LogOptions{Tail: -1}), "allocated 64 MiB")
	})
	cg1 := strings.TrimPrefix(CgroupsPath(e.ns, acct.UID, string(pod1.UID), ContainerID(pod1, "hog")), "/")
	if got := readCgroup(t, "memory", cg1, "memory.limit_in_bytes"); got != strconv.Itoa(128<<20) {
		t.Errorf("the container keeps its own limit: memory.limit_in_bytes = %s, want %d", got, 128<<20)
	}
	if got := readCgroup(t, "memory", acg, "memory.limit_in_bytes"); got != strconv.Itoa(96<<20) {
		t.Errorf("account memory.limit_in_bytes = %s, want %d", got, 96<<20)
	}
	if got := readCgroup(t, "pids", podCgroup(e.ns, acct.UID, string(pod1.UID)), "pids.max"); got != strconv.Itoa(PodPidsLimit) {
		t.Errorf("pod pids.max = %s, want %d", got, PodPidsLimit)
	}
	start(pod2, sb2, "hog")
	killed := 0
	waitFor(t, 30*time.Second, "a hog of the account to be OOM-killed", func() bool {
		killed = 0
		for _, p := range []*corev1.Pod{pod1, pod2} {
			if st := e.state(t, p, "hog"); st.Exists && !st.Running && st.Reason == ReasonOOMKilled && st.ExitCode == 137 {
				killed++
			}
		}
		return killed > 0
	})
	// The kernel may charge a batch of pages (64) past the limit before it
	// reclaims or kills; a page or so over the ceiling is it holding.
	if got, _ := strconv.Atoi(readCgroup(t, "memory", acg, "memory.max_usage_in_bytes")); got > 96<<20+64*4096 || got < 64<<20 {
		t.Errorf("account memory.max_usage_in_bytes = %d, want at its ceiling %d", got, 96<<20)
	}
	for _, p := range []*corev1.Pod{pod1, pod2} {
		if err := e.rt.StopContainer(context.Background(), string(p.UID), "hog", time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// CPU: two spinners, each with the default 1-CPU container limit
	// (clamped to the account's 500m), share the account's half CPU.
	start(pod1, sb1, "spin")
	start(pod2, sb2, "spin")
	cgs := strings.TrimPrefix(CgroupsPath(e.ns, acct.UID, string(pod2.UID), ContainerID(pod2, "spin")), "/")
	if got := readCgroup(t, "cpu", cgs, "cpu.cfs_quota_us"); got != "50000" {
		t.Errorf("container cpu.cfs_quota_us = %s, want 50000 (its 1 CPU clamped to the account's 500m)", got)
	}
	if got := readCgroup(t, "cpu", acg, "cpu.cfs_quota_us"); got != "50000" {
		t.Errorf("account cpu.cfs_quota_us = %s, want 50000", got)
	}
	usage := func() time.Duration {
		n, _ := strconv.ParseInt(readCgroup(t, "cpuacct", acg, "cpuacct.usage"), 10, 64)
		return time.Duration(n)
	}
	time.Sleep(300 * time.Millisecond) // both running
	u0, t0 := usage(), time.Now()
	time.Sleep(2 * time.Second)
	used, wall := usage()-u0, time.Since(t0)
	// Half a CPU of wall time, plus a period's slack at each end.
	if limit := wall/2 + 200*time.Millisecond; used > limit {
		t.Errorf("the account's pods used %s of CPU in %s; its ceiling allows %s", used, wall.Round(time.Millisecond), wall/2)
	}
	if used < 100*time.Millisecond {
		t.Errorf("the account's spinners used only %s of CPU in %s: did they run in its cgroup?", used, wall.Round(time.Millisecond))
	}
	t.Logf("account CPU: %s in %s (ceiling 500m)", used, wall.Round(time.Millisecond))

	// The account's level cannot go while a pod runs in it, and says why.
	if err := e.rt.RemoveAccountCgroups(acct.UID); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Errorf("RemoveAccountCgroups with running pods: err = %v, want one naming the processes", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range []*corev1.Pod{pod1, pod2} {
		if err := e.rt.RemovePod(ctx, string(p.UID)); err != nil {
			t.Fatal(err)
		}
		if left, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", e.ns, "a-*", "p-"+string(p.UID))); len(left) > 0 {
			t.Errorf("pod %s removed, its cgroups remain: %v", p.Name, left)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(cgroupRoot, "memory", acg)); len(left) != 1 {
		t.Errorf("the account's cgroup went with its pods (%v); it stays until the account goes", left)
	}
	if err := e.rt.RemoveAccountCgroups(acct.UID); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", acg)); len(left) > 0 {
		t.Errorf("account removed, its cgroups remain: %v", left)
	}

	// An account with the default CPU ceiling (the machine's CPUs) runs a
	// container asking for more than the machine has: its limit is
	// lowered to the account's, which cgroup v1 requires.
	big := ctr("big", "sleep")
	big.Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64")}
	pod3, sb3 := e.newPod(t, "three", big)
	acct = AccountCgroup{UID: "acct2-" + e.ns, MemoryBytes: 64 << 20}
	start(pod3, sb3, "big")
	want := strconv.Itoa(runtime.NumCPU() * cfsPeriod)
	cg3 := strings.TrimPrefix(CgroupsPath(e.ns, acct.UID, string(pod3.UID), ContainerID(pod3, "big")), "/")
	if got := readCgroup(t, "cpu", cg3, "cpu.cfs_quota_us"); got != want {
		t.Errorf("a 64-CPU container under the default ceiling: cpu.cfs_quota_us = %s, want %s (the machine's)", got, want)
	}
}
