package tui

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/scenarios"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// golden compares a screen with testdata/NAME.golden; go test ./tui -run Golden -update rewrites them. The
// screen must fit w x h cells.
func golden(t *testing.T, name string, w, h int, got string) {
	t.Helper()
	for i, l := range strings.Split(got, "\n") {
		if lw := lipgloss.Width(l); lw > w {
			t.Errorf("%s: line %d is %d wide, more than the %d columns of the screen", name, i+1, lw, w)
		}
	}
	if n := strings.Count(got, "\n") + 1; n > h {
		t.Errorf("%s: %d lines, more than the %d of the screen", name, n, h)
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./tui -run Golden -update writes it)", err)
	}
	if string(want) != got {
		t.Errorf("%s screen differs from %s (go test ./tui -run Golden -update rewrites it after a wanted change):\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// labPods fills the live pane as pod-networking leaves the account: names as long as a deployment's, no
// ages or times (the screen is the same on every run).
func labPods(h *harness) {
	t := h.t
	for _, p := range []struct{ name, phase, ip string }{
		{"nginx", "Running", "10.244.9.3"},
		{"httpd", "Running", "10.244.18.162"},
		{"podinfo-7c59df8884-x7qh7", "Running", "10.244.9.4"},
		{"podinfo-7c59df8884-2m9bt", "Running", "10.244.131.20"},
		{"podinfo-7c59df8884-lq5wz", "Pending", ""},
	} {
		h.send(podEvent(t, api.Added, p.name, p.phase, p.ip))
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "podinfo"}, Spec: corev1.ServiceSpec{
		ClusterIP: "10.96.0.12", Ports: []corev1.ServicePort{{Port: 9898, Protocol: corev1.ProtocolTCP}}}}
	data, err := json.Marshal(svc)
	if err != nil {
		t.Fatal(err)
	}
	h.send(watchMsg{kind: "services", ev: api.WatchEvent{Type: api.Added, Kind: "Service", Object: data}})
}

// runStep runs the step on screen as enter would, to its end.
func (h *harness) runStep() {
	h.t.Helper()
	cmd := h.key("enter")
	if cmd == nil {
		h.t.Fatalf("enter on step %d started nothing (notice %q)", h.app.walk.cur+1, h.app.walk.notice)
	}
	cmd()
	h.drain()
}

var podIPs = []string{"10.244.9.3", "10.244.18.162", "10.244.9.4", "10.244.131.20"}

func TestGoldenScreens(t *testing.T) {
	for _, size := range []struct{ w, h int }{{80, 24}, {120, 35}} {
		suffix := "-" + itoa(size.w) + "x" + itoa(size.h)
		h := newHarnessSize(t, size.w, size.h)
		labPods(h)
		golden(t, "list"+suffix, size.w, size.h, h.app.View())

		// pod-networking, step 3 after steps 1 and 2: the IPs in the live pane, the captured IP in the command.
		h.open(0)
		h.key("enter")
		h.runStep()
		h.key("n")
		h.runStep()
		h.key("n")
		screen := h.app.View()
		golden(t, "step"+suffix, size.w, size.h, screen)
		for _, ip := range podIPs {
			if !strings.Contains(screen, ip+" ") {
				t.Errorf("%dx%d: Pod IP %s is not on the screen", size.w, size.h, ip)
			}
		}
		if !strings.Contains(h.app.walk.stepText(), "pi exec nginx -- curl -s 10.244.18.162") {
			t.Errorf("%dx%d: the command does not show the captured HTTPD_IP", size.w, size.h)
		}
	}
}

// TestGoldenIntro: expose-nginx's intro, its headings set apart without "###", its text overflowing with a
// mark that says so.
func TestGoldenIntro(t *testing.T) {
	h := newHarnessSize(t, 80, 24)
	h.open(2)
	v := h.app.View()
	golden(t, "intro-80x24", 80, 24, v)
	if strings.Contains(v, "#") || !strings.Contains(v, "PRIVATE NETWORK") || !strings.Contains(v, "↓ more (j)") {
		t.Errorf("intro:\n%s", v)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestPodIPsAt80Columns: every pod's IP shows whole, however long its name; the name gives way.
func TestPodIPsAt80Columns(t *testing.T) {
	h := newHarnessSize(t, 80, 24)
	labPods(h)
	v := h.app.live.View()
	for _, ip := range podIPs {
		if !regexp.MustCompile(`│` + regexp.QuoteMeta(ip) + ` +\S`).MatchString(v) {
			t.Errorf("IP %s is not first on its line:\n%s", ip, v)
		}
	}
	// Replicas stay apart: the name is cut in its middle, its hash suffix kept.
	for _, suffix := range []string{"x7qh7", "2m9bt", "lq5wz"} {
		if !strings.Contains(v, suffix) {
			t.Errorf("replica %s cannot be told apart:\n%s", suffix, v)
		}
	}
	if !regexp.MustCompile(`- +podi\S*lq5wz +Pending`).MatchString(v) {
		t.Errorf("a pod without an IP yet shows -, its name and Pending:\n%s", v)
	}
}

func TestDaemonDown(t *testing.T) {
	h := newHarnessSize(t, 80, 24)
	down := &client.DaemonDownError{Socket: "/run/pilab/default/pi.sock"}
	h.send(watchEndedMsg{kind: "pods", err: down})
	h.send(watchEndedMsg{kind: "services", err: down})
	v := h.app.View()
	golden(t, "daemon-down-80x24", 80, 24, v)
	if !strings.Contains(v, "pi up") || !strings.Contains(v, "not running") {
		t.Errorf("the live pane does not say what to run:\n%s", v)
	}
	if strings.Contains(v, "…") {
		t.Errorf("the daemon-down message is cut:\n%s", v)
	}
	// Back: the next watch lists the pods again and the message goes.
	h.send(podEvent(t, api.Added, "nginx", "Running", "10.244.9.3"))
	h.send(watchMsg{kind: "services", ev: api.WatchEvent{Type: api.Added, Kind: "Service", Object: []byte(`{"metadata":{"name":"s"},"spec":{"clusterIP":"10.96.0.9"}}`)}})
	if v := h.app.live.View(); strings.Contains(v, "not running") || !strings.Contains(v, "10.244.9.3") {
		t.Errorf("after the daemon is back:\n%s", v)
	}
	// Any other error wraps rather than being cut off.
	h.send(watchEndedMsg{kind: "pods", err: errString("watch of pods ended: the daemon closed the stream while restarting its controller")})
	if v := h.app.live.View(); !strings.Contains(v, "restarting its") || !strings.Contains(v, "controller") {
		t.Errorf("a long watch error is cut:\n%s", v)
	}
}

// TestNextStepStartsAtTop: the text pane of a new step shows its first line, whatever the last one's
// scroll; a text that does not fit says so.
func TestNextStepStartsAtTop(t *testing.T) {
	h := newHarnessSize(t, 80, 24)
	h.open(0)
	w := h.app.walk
	h.key("enter")
	h.runStep() // its verdict sends the text pane to the bottom
	if w.text.AtTop() {
		t.Fatal("the test needs step 1's text to overflow the pane at 80x24")
	}
	if !strings.Contains(h.app.View(), "↑ top (k)") {
		t.Errorf("at the bottom of a long text, no mark says there is more above:\n%s", h.app.View())
	}
	h.key("n")
	if !w.text.AtTop() {
		t.Fatalf("step 2 opens scrolled to line %d", w.text.YOffset)
	}
	if !strings.Contains(h.app.View(), "Find the Pod IPs") || !strings.Contains(h.app.View(), "First, we need to find out") {
		t.Errorf("step 2's first lines are not on the screen:\n%s", h.app.View())
	}
	h.key("p")
	if !w.text.AtTop() {
		t.Fatal("going back opens step 1 scrolled")
	}
	if !strings.Contains(h.app.View(), "↓ more (j)") {
		t.Errorf("a text that overflows has no scroll mark:\n%s", h.app.View())
	}
	h.key("j")
	if w.text.YOffset != 1 {
		t.Errorf("j scrolled to %d, want 1", w.text.YOffset)
	}
}

// TestMarkdown: headings without their ###, blockquotes joined into paragraphs that wrap at the pane.
func TestMarkdown(t *testing.T) {
	md := "# Understand Networking\n\n### Private Network\n\nSome text.\n\n" +
		"> **Note**: The CIDR of the network is set to `10.244.0.0/16`. We reserve a few addresses of your private\n" +
		"> network for the platform's own usage.\n\n" +
		"> **Note**\n> - You cannot attach multiple floating IPs to a _service_, but you can associate multiple services\n" +
		">   with one single floating IP (as long as no port conflicts among different services).\n> - Second item.\n" +
		"\nFloating IPs are independent.\n\n> **A note on FIP billing**: Resources in _Pi_ are billed per-second, apart from FIPs which cost $1 per\n" +
		"> month from the point of allocation. This is to prevent abuse.\n"
	for _, style := range []string{"ascii", "dark", "light"} {
		for _, width := range []int{30, 46, 78} {
			out, err := renderMarkdown(md, style, width, 0 /* termenv.TrueColor */)
			if err != nil {
				t.Fatal(err)
			}
			plain := stripANSI(out)
			if strings.Contains(plain, "#") || strings.Contains(plain, "**") {
				t.Errorf("%s at %d: a heading shows its markdown:\n%s", style, width, plain)
			}
			lines := strings.Split(plain, "\n")
			// Every line of a quote has its bar (glamour's own wrap left "FIPs" alone on a bare line).
			inQuote := false
			for _, l := range lines {
				barred := strings.HasPrefix(l, "|") || strings.HasPrefix(l, "│")
				if inQuote && !barred && strings.TrimSpace(l) != "" {
					t.Errorf("%s at %d: line %q inside a quote has no bar:\n%s", style, width, l, plain)
				}
				inQuote = barred
			}
			for _, l := range lines {
				if lipgloss.Width(l) > width {
					t.Errorf("%s at %d: line %q is %d wide", style, width, l, lipgloss.Width(l))
				}
			}
			// A quote's lines are full up to the last of each paragraph: no short line before a long one.
			for i := 0; i+1 < len(lines); i++ {
				a, b := strings.TrimSpace(lines[i]), strings.TrimSpace(lines[i+1])
				if strings.HasPrefix(a, "|") || strings.HasPrefix(a, "│") {
					if words := strings.Fields(b); len(words) > 1 && !strings.HasPrefix(words[1], "•") && words[1] != "" &&
						lipgloss.Width(lines[i])+1+lipgloss.Width(words[1]) <= width && lipgloss.Width(strings.TrimSpace(strings.TrimLeft(a, "|│"))) > 0 {
						t.Errorf("%s at %d: quote line %q ends early; %q would have fit:\n%s", style, width, lines[i], words[1], plain)
					}
				}
			}
		}
	}
	out, _ := renderMarkdown(md, "ascii", 78, 0)
	if !strings.Contains(out, "PRIVATE NETWORK") {
		t.Errorf("without colors a heading is not set apart:\n%s", out)
	}
}

var ansiSeq = regexp.MustCompile("\x1b\\[[0-9;]*m")

func stripANSI(s string) string { return ansiSeq.ReplaceAllString(s, "") }

// TestFooterKeysDoWhatTheySay: every key the footer (and ?) offers, pressed in that view, does something;
// keys the view does not answer are not offered.
func TestFooterKeysDoWhatTheySay(t *testing.T) {
	// The list, on its middle entry so that up and down both move.
	list := func() *harness {
		h := newHarnessSize(t, 80, 24)
		h.key("j")
		return h
	}
	// A step in the middle of pod-networking, its output and text overflowing, on a small screen.
	step := func() *harness {
		h := newHarnessSize(t, 80, 24)
		h.open(0)
		h.key("enter")
		h.runStep()
		h.key("n")
		h.runStep()
		h.key("n")
		h.runStep()
		h.app.walk.text.GotoTop()
		h.app.walk.output.GotoTop()
		h.app.walk.output.LineDown(1)
		return h
	}
	for name, mk := range map[string]func() *harness{"list": list, "step": step} {
		h := mk()
		footer := h.app.footer()
		h.key("?")
		full := h.app.footer()
		var offered []string
		keys := h.app.list.bindings()
		if h.app.walk != nil {
			keys = h.app.walk.bindings()
		}
		keys = h.app.withPane(keys)
		if !strings.Contains(footer, "tab map") {
			t.Errorf("%s: the footer does not offer the network pane: %s", name, footer)
		}
		for _, col := range keys.FullHelp() {
			for _, b := range col {
				if b.Enabled() {
					offered = append(offered, b.Keys()[0])
					if !strings.Contains(full, b.Help().Desc) {
						t.Errorf("%s: full help lacks %q:\n%s", name, b.Help().Desc, full)
					}
				}
			}
		}
		if name == "list" && (strings.Contains(footer, "scroll") || strings.Contains(footer, "step")) {
			t.Errorf("the list's footer offers a walkthrough's keys: %s", footer)
		}
		if name == "step" && (!strings.Contains(footer, "esc") || !strings.Contains(footer, "shell in nginx")) {
			t.Errorf("the step's footer lacks esc or the shell: %s", footer)
		}
		for _, k := range offered {
			h := mk()
			before := h.app.View()
			cmd := h.key(k)
			if cmd == nil && h.app.View() == before {
				t.Errorf("%s: %q is offered but does nothing", name, k)
			}
		}
	}
	// n on the last step and p on the intro do nothing, and are not offered there.
	h := newHarnessSize(t, 80, 24)
	h.open(0)
	if strings.Contains(h.app.footer(), "previous") {
		t.Errorf("the intro offers p: %s", h.app.footer())
	}
}

// TestCheckTemplatesFilled: a check names the value its variable captured, not {{.NAME}}.
func TestCheckTemplatesFilled(t *testing.T) {
	h := newHarnessSize(t, 100, 40)
	h.open(2) // expose-nginx
	w := h.app.walk
	h.key("enter")
	last := len(w.sc.Steps) - 1
	for w.cur < last {
		h.key("n")
	}
	if txt := w.stepText(); strings.Contains(txt, "{{") || !strings.Contains(txt, `fip "<FIP>" deleted`) || !strings.Contains(txt, "pi delete fip <FIP>") {
		t.Errorf("before the FIP is captured the check reads:\n%s", txt)
	}
	for w.cur > 0 {
		h.key("p")
	}
	for i := 0; i <= last; i++ {
		h.runStep()
		h.key("n")
	}
	txt := w.stepText()
	if strings.Contains(txt, "{{") || !strings.Contains(txt, `fip "198.18.0.7" deleted`) {
		t.Errorf("the release step's checks:\n%s", txt)
	}
	if !strings.Contains(txt, "pi delete fip 198.18.0.7") {
		t.Errorf("the release step's commands:\n%s", txt)
	}
}

// TestEnterTwiceRunsOnce: the step "Allocate a Floating IP" runs once however often enter is pressed while
// it runs; once it passed, enter runs it again (the runner keeps its FIP: scenarios.TestStepRerunKeepsItsFIP).
func TestEnterTwiceRunsOnce(t *testing.T) {
	h := newHarnessSize(t, 100, 30)
	h.open(2)
	w := h.app.walk
	h.key("enter")
	if w.sc.Steps[0].Title != "Allocate a Floating IP" {
		t.Fatalf("step 1 is %q", w.sc.Steps[0].Title)
	}
	cmd := h.key("enter")
	if cmd == nil {
		t.Fatal("enter did not start the step")
	}
	for range 3 {
		if h.key("enter") != nil {
			t.Fatal("enter while the step runs started it again")
		}
	}
	if !strings.Contains(w.notice, "a step is running") {
		t.Errorf("notice %q", w.notice)
	}
	cmd()
	h.drain()
	if got := h.runners[0].ran; len(got) != 1 {
		t.Fatalf("the runner ran steps %v, want [0]", got)
	}
	if w.notice != "" {
		t.Errorf("after the step ended the notice still says %q", w.notice)
	}
	if !strings.Contains(h.app.footer(), "enter rerun") {
		t.Errorf("after the step passed the footer says %q", h.app.footer())
	}
}

// TestShell: s on a step that works in a pod hands the terminal to pi exec -it POD -- sh and comes back.
func TestShell(t *testing.T) {
	h := newHarnessSize(t, 100, 30)
	h.app.opts.Runner.Socket, h.app.opts.Runner.Account, h.app.opts.Runner.Exe = "/tmp/pi.sock", "alice", "/usr/local/bin/pi"
	h.open(0)
	w := h.app.walk
	h.key("enter")
	if h.key("s") != nil || len(h.execs) != 0 {
		t.Fatal("s opened a shell on a step that names no pod")
	}
	h.runStep()
	h.key("n")
	h.runStep()
	h.key("n") // Reach httpd from nginx: pi exec nginx -- curl ...
	cmd := h.key("s")
	if cmd == nil {
		t.Fatalf("s on %q gave no command; footer %q", w.sc.Steps[w.cur].Title, h.app.footer())
	}
	if !strings.Contains(w.stepText(), "s opens a shell in nginx (pi exec -it nginx -- sh)") {
		t.Errorf("the step does not say s opens a shell:\n%s", w.stepText())
	}
	h.send(cmd())
	if len(h.execs) != 1 {
		t.Fatalf("%d shells opened", len(h.execs))
	}
	c := h.execs[0]
	if c.Path != "/usr/local/bin/pi" || strings.Join(c.Args, " ") != "pi exec -it nginx -- sh" {
		t.Errorf("shell command %s %q", c.Path, c.Args)
	}
	env := strings.Join(c.Env, "\n")
	if !strings.Contains(env, "PI_SOCKET=/tmp/pi.sock") || !strings.Contains(env, "PI_ACCOUNT=alice") {
		t.Error("the shell does not get the scenario's lab and account")
	}
	if w.notice != "" || h.app.walk != w {
		t.Errorf("back from the shell: notice %q", w.notice)
	}
	// A shell that fails (the pod is gone) says so.
	h.shellErr = errString("exit status 1")
	h.send(h.key("s")())
	if !strings.Contains(w.notice, "the shell in nginx ended: exit status 1") {
		t.Errorf("notice %q", w.notice)
	}
	_ = context.Background
}

// flakyWatcher is a lab whose daemon is down for the first `down` watches, then up with nothing in it.
type flakyWatcher struct{ down int }

func (f *flakyWatcher) Watch(ctx context.Context, k api.Kind, o client.ListOptions) (<-chan api.WatchEvent, error) {
	if f.down > 0 {
		f.down--
		return nil, &client.DaemonDownError{Socket: "/run/pilab/t/pi.sock"}
	}
	return make(chan api.WatchEvent), nil // open, and the account is empty
}

// TestLiveReconnects: once the daemon is up again the pane drops its message, even with nothing to list
// (the message stayed: only an event cleared it, and an empty account sends none).
func TestLiveReconnects(t *testing.T) {
	l := newLive(common{ctx: context.Background(), styles: defaultStyles(), keys: defaultKeys()}, &flakyWatcher{down: 1})
	l.SetSize(34, 20)
	msg := l.watch("pods")()
	l, cmd := l.Update(msg)
	if !strings.Contains(l.View(), "pi up") || cmd == nil {
		t.Fatalf("daemon down: the pane says\n%s", l.View())
	}
	// The rewatch tick, then the new watch.
	l, _ = l.Update(rewatchMsg{kind: "pods"})
	l, cmd = l.Update(l.watch("pods")())
	if v := l.View(); strings.Contains(v, "not running") || !strings.Contains(v, "no pods") {
		t.Errorf("the daemon is back, the pane says\n%s", v)
	}
	if cmd == nil {
		t.Error("the pane does not read the new watch")
	}
}

// TestShellPod: the pod a step works in, from its sh: command or its pi exec line.
func TestShellPod(t *testing.T) {
	for _, tc := range []struct{ cmd, want string }{
		{"- pi exec nginx -- curl -s 10.244.0.2", "nginx"},
		{"- pi exec -it -c web box -- sh", "box"},
		{"- pi exec --container web box -- ls", "box"},
		{"- {sh: 'wget -qO- podinfo:9898', pod: client}", "client"},
		{"- pi get pods", ""},
	} {
		sc, err := scenarios.Parse([]byte("title: t\nsteps:\n  - title: s\n    commands:\n      "+tc.cmd+"\n"), "t.yaml", nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.cmd, err)
		}
		w := newWalk(common{ctx: context.Background(), styles: defaultStyles(), keys: defaultKeys()}, sc, &fakeRunner{sc: sc}, newPipe())
		w.cur = 0
		if got := w.shellPod(); got != tc.want {
			t.Errorf("%s: shell in %q, want %q", tc.cmd, got, tc.want)
		}
	}
}
