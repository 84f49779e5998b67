package tui

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/daemon"
)

// NetworkSource is what the network pane needs of the lab: the account's map, as GET /x/network answers it
// (what pi network draws).
type NetworkSource interface {
	Network(ctx context.Context) (*daemon.NetworkView, error)
}

// labNetwork asks the daemon for the account's map.
type labNetwork struct{ cl *client.Client }

func (n labNetwork) Network(ctx context.Context) (*daemon.NetworkView, error) {
	var v daemon.NetworkView
	if err := n.cl.Do(ctx, "GET", "/x/network", url.Values{"account": {n.cl.Account}}, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// networkMsg is the account's map as the daemon answered it (or why it did not).
type networkMsg struct {
	v   *daemon.NetworkView
	err error
}

// network is the pane beside the walkthrough that shows the account's network: the path of the last trace
// a step ran, hop by hop, over the map (router, pods with their IPs, Services → endpoints, Floating IPs).
// The live pane shows what exists; this one shows how it is wired and where the last request went.
type network struct {
	common
	src   NetworkSource
	view  *daemon.NetworkView
	err   error
	trace *daemon.TraceResult
	// loading: a fetch is on its way (one at a time; a step's end asks again).
	loading bool
	// stale: the lab changed while a fetch was on its way, so its answer may be older than the change.
	stale bool
}

func newNetwork(c common, src NetworkSource) *network { return &network{common: c, src: src} }

// fetch asks for the map again; nil while an answer is still awaited.
func (n *network) fetch() tea.Cmd {
	if n.src == nil || n.loading {
		return nil
	}
	n.loading = true
	src, ctx := n.src, n.ctx
	return func() tea.Msg {
		v, err := src.Network(ctx)
		return networkMsg{v, err}
	}
}

// changed is called when the lab changed (a pod or Service watch event): the map is asked for again, so
// the pane follows the lab as the live pane does, whoever made the change (a step, or kubectl in another
// terminal). A burst of events (a Deployment's pods, a watch's first list) costs at most two fetches: one
// now and one after it, not one per event.
func (n *network) changed() tea.Cmd {
	if n.loading {
		n.stale = true
		return nil
	}
	return n.fetch()
}

// update takes the daemon's answer; a change seen while it was on its way asks again.
func (n *network) update(msg networkMsg) tea.Cmd {
	n.loading = false
	n.err = msg.err
	if msg.err == nil {
		n.view = msg.v
	}
	if n.stale {
		n.stale = false
		return n.fetch()
	}
	return nil
}

func (n *network) View() string {
	w := n.width - 2
	if w < 10 || n.height < 3 {
		return ""
	}
	var b strings.Builder
	st := n.styles
	line := func(s string) { b.WriteString(truncate(s, w) + "\n") }
	// wrapped: a line that is worth reading whole, continued under its first text.
	wrapped := func(prefix, s string) {
		ind := strings.Repeat(" ", ansi.StringWidth(prefix))
		for i, l := range strings.Split(ansi.Wrap(s, max(w-len(ind), 8), ""), "\n") {
			if i == 0 {
				b.WriteString(prefix + l + "\n")
			} else {
				b.WriteString(ind + l + "\n")
			}
		}
	}
	if t := n.trace; t != nil {
		b.WriteString(st.PaneTitle.Render("LAST TRACE") + "\n")
		wrapped("", st.Command.Render(traceCommand(t)))
		if d := t.DNS; d != nil {
			wrapped("DNS ", d.Name+" → "+d.Answer)
		}
		ns := ""
		for i, h := range t.Hops {
			if h.Netns != ns {
				if ns != "" {
					line(st.Dim.Render(" ↓"))
				}
				ns = h.Netns
				line(st.Title.Render("● " + ns))
			}
			wrapped(fmt.Sprintf(" %d ", i+1), hopShort(h))
		}
		res := st.Passed
		if t.Error != "" {
			res = st.Failed
		}
		wrapped("", res.Render(t.Summary))
		b.WriteString("\n")
	}
	b.WriteString(st.PaneTitle.Render("NETWORK") + "\n")
	v := n.view
	switch {
	case n.err != nil:
		wrapped("", st.Error.Render("pi network: "+n.err.Error()))
		if v == nil {
			return pane(st, w, n.height-2, b.String())
		}
	case v == nil:
		line(st.Dim.Render("reading the account's network…"))
		return pane(st, w, n.height-2, b.String())
	}
	br := v.Router.Bridge
	line("router " + v.Router.Netns)
	line(st.Dim.Render(" " + br.Name + " " + strings.Join(br.Addresses, " ")))
	if v.Transit.WANAddress != "" {
		line(st.Dim.Render(" wan " + v.Transit.WANAddress))
	}
	line(st.Title.Render("pods"))
	if len(v.Pods) == 0 {
		line(st.Dim.Render(" none"))
	}
	podLine := func(ind string, p daemon.PodView) {
		// The address first, as in the live pane: the name gives way.
		ip := orDash(p.IP)
		line(ind + ip + " " + cutMiddle(p.Name, max(w-len(ip)-len(ind)-1, 6)))
	}
	if len(v.Nodes) == 0 {
		for _, p := range v.Pods {
			podLine(" ", p)
		}
	}
	// A multi-node lab: the pods under their nodes, each node's end of the account's VXLAN segment.
	for _, nd := range v.Nodes {
		seg := ""
		if nd.VXLAN != nil {
			seg = fmt.Sprintf(" %s VNI %d", nd.VXLAN.Name, nd.VXLAN.VNI)
		}
		// Narrow: the node's underlay address and its VXLAN device; pi network has the rest.
		ul, _, _ := strings.Cut(nd.Underlay, "/")
		line(" node " + nd.Name + st.Dim.Render(" "+orDash(ul)+seg))
		for _, p := range v.Pods {
			if p.Node == nd.Name {
				podLine("  ", p)
			}
		}
	}
	if len(v.Nodes) > 0 {
		for _, p := range v.Pods {
			if p.Node == "" {
				podLine(" no node ", p)
			}
		}
	}
	line(st.Title.Render("services → endpoints"))
	if len(v.Services) == 0 {
		line(st.Dim.Render(" none"))
	}
	for _, s := range v.Services {
		for _, p := range s.Ports {
			line(fmt.Sprintf(" %s %s:%d", s.Name, orDash(s.ClusterIP), p.Port))
			var eps []string
			for _, e := range p.Endpoints {
				if e.Ready {
					eps = append(eps, fmt.Sprintf("%s:%d", e.IP, e.Port))
				}
			}
			if len(eps) == 0 {
				line(st.Dim.Render("  → no ready endpoint"))
				continue
			}
			wrapped("  → ", strings.Join(eps, " "))
		}
	}
	if len(v.FIPs) > 0 {
		line(st.Title.Render("floating IPs"))
		for _, f := range v.FIPs {
			to := strings.Join(f.Services, ", ")
			if to == "" {
				to = "no service"
			}
			line(" " + f.IP + " → " + to)
		}
	}
	for _, warn := range v.Warnings {
		wrapped("! ", st.Error.Render(warn))
	}
	return pane(st, w, n.height-2, b.String())
}

// traceCommand is the pi trace line that gives the same path.
func traceCommand(t *daemon.TraceResult) string {
	if t.From == "internet" || t.From == "router" {
		return "pi trace --from " + t.From + " " + t.Target
	}
	return "pi trace " + t.From + " " + t.Target
}

// hopShort is a hop in a few words for a narrow pane: a rule as chain → verdict and pilab's comment on
// it, anything else as the daemon wrote it (the step's output has every hop whole).
func hopShort(h daemon.TraceHop) string {
	var s string
	switch h.Kind {
	case "rule", "policy":
		s = h.Chain + " → " + h.Verdict
		if h.Comment != "" {
			s += " (" + h.Comment + ")"
		}
		if h.Direction == "reply" {
			s = "reply: " + s
		}
	default:
		s = strings.Join(strings.Fields(h.Text), " ")
		if h.Inferred && !strings.Contains(s, "inferred") {
			s += " (inferred)"
		}
	}
	return s
}
