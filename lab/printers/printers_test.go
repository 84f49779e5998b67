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
