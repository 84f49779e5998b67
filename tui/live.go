package tui

import (
	"context"
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
		return nextWatch(kind, ch)()
	}
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
	b.WriteString(l.styles.PaneTitle.Render("PODS") + "\n")
	rows := [][]string{}
	for _, o := range l.sorted("pods") {
		p := o.(*corev1.Pod)
		rows = append(rows, []string{p.Name, printers.PodStatus(p), orDash(p.Status.PodIP)})
	}
	b.WriteString(l.table(rows, "no pods", l.err["pods"]))
	b.WriteString("\n" + l.styles.PaneTitle.Render("SERVICES") + "\n")
	rows = rows[:0]
	for _, o := range l.sorted("services") {
		s := o.(*corev1.Service)
		addr := s.Spec.ClusterIP
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerIP != "" {
			addr = s.Spec.LoadBalancerIP
		}
		rows = append(rows, []string{s.Name, orDash(addr), printers.ServicePorts(s)})
	}
	b.WriteString(l.table(rows, "no services", l.err["services"]))
	return pane(l.styles, w, l.height-2, b.String())
}

// table lines up rows in columns, cutting the text to the pane.
func (l *live) table(rows [][]string, empty string, err error) string {
	if err != nil {
		return l.styles.Error.Render(truncate(err.Error(), l.width-2)) + "\n"
	}
	if len(rows) == 0 {
		return l.styles.Dim.Render(empty) + "\n"
	}
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], lipgloss.Width(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		var cells []string
		for i, c := range r {
			cells = append(cells, c+strings.Repeat(" ", widths[i]-lipgloss.Width(c)))
		}
		b.WriteString(truncate(strings.TrimRight(strings.Join(cells, " "), " "), l.width-2) + "\n")
	}
	return b.String()
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
