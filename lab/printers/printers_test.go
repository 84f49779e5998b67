package printers

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// columnStarts returns where each column of a table line starts: after a run of 2 or more spaces (cells
// hold at most single spaces, "1 (5m ago)", and columns are 3 spaces apart).
func columnStarts(line string) []int {
	starts := []int{0}
	for i := 1; i < len(line); i++ {
		if line[i] != ' ' && i >= 2 && line[i-1] == ' ' && line[i-2] == ' ' {
			starts = append(starts, i)
		}
	}
	return starts
}

func testPod(name, status string, restarts int32, age time.Duration) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(Now().Add(-age))}}
	p.Spec.Containers = []corev1.Container{{Name: "c"}}
	p.Status.Phase = corev1.PodPhase(status)
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", RestartCount: restarts}}
	return p
}

// get -w prints the list with its header in one batch, then one row per change, each flushed at once.
// Every later row must start its columns where the header's do (kubectl's watch output does), unless a
// cell is wider than any before it, which widens that column from then on.
func TestTableWatchRowsLineUpWithHeader(t *testing.T) {
	podKind, _ := api.LookupKind("Pod")
	var out bytes.Buffer
	tb := NewTable(&out)
	WriteTable(tb, podKind, []metav1.Object{testPod("podinfo-7c9f8d6b5-x2x4q", "Running", 0, 3*time.Minute)}, Context{})
	first := strings.Count(out.String(), "\n")
	// Shorter cells than the first batch's in every column: text/tabwriter alone would print them
	// "a   1/1   Pending   0   0s", out of line with the header.
	for _, p := range []*corev1.Pod{testPod("a", "Pending", 0, 0), testPod("web", "Running", 0, 2*time.Second)} {
		tb.Row(Row(p, Context{})...)
		tb.Flush()
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if first != 2 || len(lines) != 4 {
		t.Fatalf("want a header, a row, then 2 watched rows; got:\n%s", out.String())
	}
	header := columnStarts(lines[0])
	for _, l := range lines[1:] {
		if got := columnStarts(l); fmt.Sprint(got) != fmt.Sprint(header) {
			t.Errorf("row %q has columns at %v, the header at %v:\n%s", l, got, header, out.String())
		}
	}

	// A wider cell widens its column for itself and every row after it, never narrowing again.
	tb.Row(Row(testPod("a-much-longer-pod-name-than-the-first-one", "ContainerCreating", 0, time.Second), Context{})...)
	tb.Flush()
	tb.Row(Row(testPod("b", "Running", 0, time.Second), Context{})...)
	tb.Flush()
	lines = strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	wide, after := columnStarts(lines[4]), columnStarts(lines[5])
	if fmt.Sprint(wide) != fmt.Sprint(after) || wide[1] <= header[1] || wide[3] <= header[3] {
		t.Errorf("after a wider row, columns at %v then %v (header %v):\n%s", wide, after, header, out.String())
	}
}

// A table printed in one Flush is exactly what text/tabwriter prints: the remembered widths only matter
// across Flushes. Cells of several lengths, an empty cell and a multi-byte one.
func TestTableOneBatchIsTabwriter(t *testing.T) {
	rows := [][]string{
		{"NAME", "READY", "STATUS", "RESTARTS", "AGE"},
		{"nginx", "1/1", "Running", "0", "5m"},
		{"a-longer-name", "0/2", "", "12 (3m ago)", "40d"},
		{"café", "1/1", "CrashLoopBackOff", "1", "1s"},
	}
	var got, want bytes.Buffer
	tb := NewTable(&got)
	tw := tabwriter.NewWriter(&want, 0, 8, 3, ' ', 0)
	for _, r := range rows {
		tb.Row(r...)
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tb.Flush()
	tw.Flush()
	if got.String() != want.String() {
		t.Errorf("Table printed\n%s\ntext/tabwriter printed\n%s", got.String(), want.String())
	}
}

// Node rows are kubectl's (pkg/printers/internalversion printNode): STATUS from the Ready condition alone
// (any status but True is NotReady, no condition is Unknown) with ",SchedulingDisabled" when cordoned;
// ROLES from node-role.kubernetes.io/ROLE and kubernetes.io/role labels; <unknown> for missing node info.
func TestNodeRow(t *testing.T) {
	ready := func(s corev1.ConditionStatus) []corev1.NodeCondition {
		return []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: s}}
	}
	for _, c := range []struct {
		name          string
		conditions    []corev1.NodeCondition
		unschedulable bool
		labels        map[string]string
		want          string
	}{
		{"ready", ready(corev1.ConditionTrue), false, map[string]string{"node-role.kubernetes.io/worker": ""}, "ready|Ready|worker"},
		{"down", ready(corev1.ConditionFalse), false, nil, "down|NotReady|<none>"},
		{"lost", ready(corev1.ConditionUnknown), false, nil, "lost|NotReady|<none>"},
		{"new", nil, false, nil, "new|Unknown|<none>"},
		{"cordoned", ready(corev1.ConditionTrue), true, nil, "cordoned|Ready,SchedulingDisabled|<none>"},
		{"down-cordoned", ready(corev1.ConditionFalse), true, nil, "down-cordoned|NotReady,SchedulingDisabled|<none>"},
		{"roles", ready(corev1.ConditionTrue), false, map[string]string{"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/control-plane": "",
			"node-role.kubernetes.io/": "x", "kubernetes.io/role": "worker", "kubernetes.io/hostname": "roles"}, "roles|Ready|control-plane,worker"},
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.name, Labels: c.labels, CreationTimestamp: metav1.NewTime(Now().Add(-90 * time.Minute))},
			Spec: corev1.NodeSpec{Unschedulable: c.unschedulable}, Status: corev1.NodeStatus{Conditions: c.conditions}}
		r := Row(n, Context{Wide: true})
		if got := strings.Join(r[:3], "|"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		if r[3] != "90m" || r[4] != "" || strings.Join(r[5:], "|") != "<none>|<none>|<unknown>|<unknown>|<unknown>" {
			t.Errorf("%s: age, version and wide cells %q", c.name, r[3:])
		}
	}
	nodeKind, _ := api.LookupKind("Node")
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker2", CreationTimestamp: metav1.NewTime(Now().Add(-3 * time.Hour))},
		Status: corev1.NodeStatus{Conditions: ready(corev1.ConditionTrue),
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "worker2"}, {Type: corev1.NodeInternalIP, Address: "169.254.1.2"}},
			NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "v1.35.4-pilab", OSImage: "Debian GNU/Linux 12 (bookworm)", KernelVersion: "6.1.0", ContainerRuntimeVersion: "containerd://1.7.24"}}}
	var b bytes.Buffer
	if err := Print(&b, nodeKind, []metav1.Object{n}, "wide", Context{AllAccounts: true}); err != nil {
		t.Fatal(err)
	}
	want := "NAME      STATUS   ROLES    AGE   VERSION         INTERNAL-IP   EXTERNAL-IP   OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME\n" +
		"worker2   Ready    <none>   3h    v1.35.4-pilab   169.254.1.2   <none>        Debian GNU/Linux 12 (bookworm)   6.1.0            containerd://1.7.24\n"
	if b.String() != want {
		t.Errorf("pi get nodes -o wide -A:\n%s\nwant:\n%s", b.String(), want)
	}
}
