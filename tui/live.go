package tui

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/printers"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Watcher is what the live pane needs of the lab: *client.Client is one.
type Watcher interface {
	Watch(ctx context.Context, k api.Kind, o client.ListOptions) (<-chan api.WatchEvent, error)
}

// Kinds the live pane shows.
var liveKinds = []string{"pods", "services"}

// watchMsg is one change the lab reported.
type watchMsg struct {
	kind string
	ev   api.WatchEvent
	ch   <-chan api.WatchEvent
}

// watchEndedMsg says a watch stream ended (daemon restarted, connection lost); the pane watches again.
type watchEndedMsg struct {
	kind string
	err  error
}

// rewatchMsg asks for a new watch after a pause.
type rewatchMsg struct{ kind string }

// live is the pane with the account's pods and services, kept current by watches.
type live struct {
	common
	src  Watcher
	objs map[string]map[string]metav1.Object // kind plural -> name -> object
	err  map[string]error
}

func newLive(c common, src Watcher) *live {
	return &live{common: c, src: src, objs: map[string]map[string]metav1.Object{}, err: map[string]error{}}
}

func (l *live) Init() tea.Cmd {
	var cmds []tea.Cmd
	for _, k := range liveKinds {
		cmds = append(cmds, l.watch(k))
	}
	return tea.Batch(cmds...)
}

// watch opens a watch; its events come back one message at a time through nextWatch.
func (l *live) watch(kind string) tea.Cmd {
	if l.src == nil {
		return nil
	}
	src, ctx := l.src, l.ctx
	return func() tea.Msg {
		k, _ := api.LookupKind(kind)
		ch, err := src.Watch(ctx, k, client.ListOptions{})
		if err != nil {
			return watchEndedMsg{kind: kind, err: err}
		}
		return watchStartedMsg{kind: kind, ch: ch}
	}
}

// watchStartedMsg says a watch is open: the lab answers again, even when it has nothing to list.
type watchStartedMsg struct {
	kind string
	ch   <-chan api.WatchEvent
}

func nextWatch(kind string, ch <-chan api.WatchEvent) tea.Cmd {
	return func() tea.Msg {
		ev, ok := <-ch
		if !ok {
			return watchEndedMsg{kind: kind, err: fmt.Errorf("watch of %s ended", kind)}
		}
		return watchMsg{kind: kind, ev: ev, ch: ch}
	}
}

func (l *live) Update(msg tea.Msg) (*live, tea.Cmd) {
	switch msg := msg.(type) {
	case watchMsg:
		l.apply(msg.kind, msg.ev)
		var next tea.Cmd
		if msg.ch != nil {
			next = nextWatch(msg.kind, msg.ch)
		}
		return l, next
	case watchStartedMsg:
		delete(l.err, msg.kind)
		return l, nextWatch(msg.kind, msg.ch)
	case watchEndedMsg:
		if l.ctx != nil && l.ctx.Err() != nil {
			return l, nil
		}
		l.err[msg.kind] = msg.err
		// What was listed may be gone by the time the watch is back; the new watch lists it all again.
		delete(l.objs, msg.kind)
		kind := msg.kind
		return l, tea.Tick(2*time.Second, func(time.Time) tea.Msg { return rewatchMsg{kind} })
	case rewatchMsg:
		return l, l.watch(msg.kind)
	}
	return l, nil
}

func (l *live) apply(kind string, ev api.WatchEvent) {
	k, ok := api.LookupKind(kind)
	if !ok {
		return
	}
	obj, err := api.Decode(k, ev.Object)
	if err != nil {
		l.err[kind] = err
		return
	}
	delete(l.err, kind)
	m := l.objs[kind]
	if m == nil {
		m = map[string]metav1.Object{}
		l.objs[kind] = m
	}
	if ev.Type == api.Deleted {
		delete(m, obj.GetName())
		return
	}
	m[obj.GetName()] = obj
}

func (l *live) sorted(kind string) []metav1.Object {
	var out []metav1.Object
	for _, o := range l.objs[kind] {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func (l *live) View() string {
	w := l.width - 2
	if w < 10 || l.height < 3 {
		return ""
	}
	var b strings.Builder
	if msg := l.daemonDown(); msg != "" {
		// Both watches fail the same way: say it once, whole, with what to run.
		b.WriteString(msg)
		return pane(l.styles, w, l.height-2, b.String())
	}
	// The address comes first: it is what the lessons are about, and a narrow pane cuts the name instead.
	b.WriteString(l.styles.PaneTitle.Render("PODS") + "\n")
	rows := [][]string{}
	for _, o := range l.sorted("pods") {
		p := o.(*corev1.Pod)
		rows = append(rows, []string{orDash(p.Status.PodIP), p.Name, printers.PodStatus(p)})
	}
	b.WriteString(l.table([]string{"IP", "NAME", "STATUS"}, rows, "no pods", l.err["pods"]))
	b.WriteString("\n" + l.styles.PaneTitle.Render("SERVICES") + "\n")
	rows = rows[:0]
	for _, o := range l.sorted("services") {
		s := o.(*corev1.Service)
		addr := s.Spec.ClusterIP
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerIP != "" {
			addr = s.Spec.LoadBalancerIP
		}
		rows = append(rows, []string{orDash(addr), s.Name, printers.ServicePorts(s)})
	}
	b.WriteString(l.table([]string{"IP", "NAME", "PORTS"}, rows, "no services", l.err["services"]))
	return pane(l.styles, w, l.height-2, b.String())
}

// daemonDown is the pane's whole text when the daemon does not answer: what is wrong and what to run.
func (l *live) daemonDown() string {
	var dd *client.DaemonDownError
	for _, k := range liveKinds {
		if errors.As(l.err[k], &dd) {
			break
		}
	}
	if dd == nil {
		return ""
	}
	w := l.width - 2
	return l.styles.Error.Render(ansi.Wrap("The pi daemon is not running.", w, "")) + "\n\n" +
		ansi.Wrap("Start it in another terminal:", w, "") + "\n" +
		l.styles.Command.Render("  pi up") + "\n\n" +
		l.styles.Dim.Render(ansi.Wrap("This pane reconnects by itself. No answer on "+dd.Socket+".", w, ""))
}

// table lines up rows in columns under a header. The first column (the address) is never cut: when a row
// is too wide, the name column gives up its middle (a replica's hash suffix stays), then the last column is
// cut at the pane's edge.
func (l *live) table(header []string, rows [][]string, empty string, err error) string {
	w := l.width - 2
	if err != nil {
		// A watch that ended is retried; the error wraps so that it is read whole.
		return l.styles.Error.Render(ansi.Wrap(err.Error(), w, "")) + "\n" + l.styles.Dim.Render("retrying…") + "\n"
	}
	if len(rows) == 0 {
		return l.styles.Dim.Render(empty) + "\n"
	}
	widths := make([]int, len(header))
	for _, r := range append([][]string{header}, rows...) {
		for i, c := range r {
			widths[i] = max(widths[i], lipgloss.Width(c))
		}
	}
	// Columns 0 and 2 whole, column 1 what is left (at least 6 cells: "pod…xyz").
	if over := widths[0] + widths[1] + widths[2] + 2 - w; over > 0 {
		widths[1] = max(widths[1]-over, min(widths[1], 6))
	}
	var b strings.Builder
	line := func(r []string, style lipgloss.Style) {
		cells := []string{r[0], cutMiddle(r[1], widths[1]), r[2]}
		for i := range 2 {
			cells[i] += strings.Repeat(" ", max(widths[i]-lipgloss.Width(cells[i]), 0))
		}
		b.WriteString(style.Render(truncate(strings.TrimRight(strings.Join(cells, " "), " "), w)) + "\n")
	}
	line(header, l.styles.Dim)
	for _, r := range rows {
		line(r, lipgloss.NewStyle())
	}
	return b.String()
}

// cutMiddle shortens s to w cells by its middle: podinfo-7c59df8884-x7qh7 → podi…x7qh7. The last five
// characters (a replica's own suffix) stay when there is room for a head of two, so replicas stay apart.
func cutMiddle(s string, w int) string {
	rs := []rune(s)
	if len(rs) <= w || w < 3 {
		return s
	}
	tail := (w - 1) / 2
	if w-1-5 >= 2 {
		tail = max(tail, 5)
	}
	head := w - 1 - tail
	return string(rs[:head]) + "…" + string(rs[len(rs)-tail:])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// truncate cuts s to w cells, keeping its escape sequences whole.
func truncate(s string, w int) string {
	if w <= 1 || lipgloss.Width(s) <= w {
		return s
	}
	return ansi.Truncate(s, w, "…")
}

// pane draws content in a bordered box of inner size w x h, cutting what does not fit.
func pane(st *Styles, w, h int, content string) string {
	lines := strings.Split(strings.TrimRight(content, "\n"), "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		lines[i] = truncate(l, w)
	}
	return st.Pane.Width(w).Height(h).Render(strings.Join(lines, "\n"))
}
