package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/images/podinfo"
	"github.com/rogpeppe/go-internal/testscript"
	"github.com/vishvananda/netlink"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"pi":      func() { os.Exit(run(os.Args[1:])) },
		"podinfo": func() { os.Exit(podinfo.Main(os.Args[1:])) },
	})
}

// requirePrivileged stops the test (failing in CI, see netnstest.Missing) when the lab cannot run here.
func requirePrivileged(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2", "mmdebstrap"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		netnstest.Missing(t, fmt.Sprintf("end-to-end tests need %s (run `make deps` as root)", strings.Join(missing, ", ")))
	}
}

// TestScripts plays the CLI scripts in testdata/script. Each gets its own lab (a random --lab name) hung
// below a network namespace the test makes to play "the Internet" (--host-netns), and `pi reset` after.
func TestScripts(t *testing.T) {
	requirePrivileged(t)
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup:               setupLab,
		Cmds:                scriptCmds,
		Deadline:            time.Now().Add(30 * time.Minute),
	})
}

func setupLab(env *testscript.Env) error {
	lab := netnstest.Lab()
	hostNS := "inet-" + lab
	if _, err := netns.EnsureNamed(hostNS); err != nil {
		return fmt.Errorf("make the Internet namespace: %w", err)
	}
	if err := startInternet(env, hostNS); err != nil {
		netns.DeleteNamed(hostNS)
		return err
	}
	env.Setenv("PI_LAB", lab)
	env.Setenv("LAB", lab)
	env.Setenv("HOSTNS", hostNS)
	env.Setenv("PI_ACCOUNT", "")
	env.Setenv("HOME", env.WorkDir)
	env.Defer(func() {
		cmd := exec.Command(os.Args[0], "reset", "--lab", lab, "--host-netns", hostNS)
		cmd.Args[0] = "pi"
		cmd.Path = piPath(env)
		out, err := cmd.CombinedOutput()
		if err != nil {
			env.T().Log(fmt.Sprintf("pi reset: %v\n%s", err, out))
		}
		netns.DeleteNamed(hostNS)
	})
	return nil
}

// piPath finds the pi command testscript put on the PATH.
func piPath(env *testscript.Env) string {
	for _, dir := range strings.Split(env.Getenv("PATH"), ":") {
		if p := dir + "/pi"; fileExists(p) {
			return p
		}
	}
	return os.Args[0]
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	// inet-get URL: an HTTP GET from "the Internet" (the lab's --host-netns); prints the body.
	"inet-get": func(ts *testscript.TestScript, neg bool, args []string) { inetGet(ts, neg, args) },
	// inet-dial HOST:PORT: a TCP connection from "the Internet"; fails unless it is accepted.
	"inet-dial": func(ts *testscript.TestScript, neg bool, args []string) { inetDial(ts, neg, args) },
	// inet-get-file FILE: inet-get of the URL written in FILE (scripts cannot put stdout in a variable).
	"inet-get-file": func(ts *testscript.TestScript, neg bool, args []string) {
		inetGet(ts, neg, []string{strings.TrimSpace(ts.ReadFile(args[0]))})
	},
	// inet-dial-file FILE PORT: inet-dial of the address in FILE.
	"inet-dial-file": func(ts *testscript.TestScript, neg bool, args []string) {
		inetDial(ts, neg, []string{net.JoinHostPort(strings.TrimSpace(ts.ReadFile(args[0])), args[1])})
	},
	// inet-udp-file FILE PORT MSG: sends MSG in one UDP datagram from "the Internet" to the address in FILE
	// and prints the answer; fails if none comes within 2 s.
	"inet-udp-file": func(ts *testscript.TestScript, neg bool, args []string) {
		inetUDP(ts, neg, net.JoinHostPort(strings.TrimSpace(ts.ReadFile(args[0])), args[1]), args[2])
	},
	// containers: lists the containers in the lab's containerd namespace, one ID a line.
	"containers": func(ts *testscript.TestScript, neg bool, args []string) {
		lab := ts.Getenv("LAB")
		cl, err := containerd.New("/run/pilab/"+lab+"/containerd/containerd.sock", containerd.WithTimeout(5*time.Second))
		ts.Check(err)
		defer cl.Close()
		ctx := namespaces.WithNamespace(context.Background(), lab)
		cs, err := cl.Containers(ctx)
		ts.Check(err)
		var buf bytes.Buffer
		fmt.Fprintln(&buf, "# containers")
		for _, c := range cs {
			fmt.Fprintln(&buf, c.ID())
		}
		ts.Stdout().Write(buf.Bytes())
	},
	// netns-list: the lab's named network namespaces.
	"netns-list": func(ts *testscript.TestScript, neg bool, args []string) {
		names, err := netns.ListNamed(ts.Getenv("LAB") + "-")
		ts.Check(err)
		// A header line always, so that a check after it never reads the previous command's output.
		fmt.Fprintln(ts.Stdout(), "# netns")
		for _, n := range names {
			fmt.Fprintln(ts.Stdout(), n)
		}
	},
	// sleep DURATION: give a controller time for what the script checks next (back-off, restarts).
	"sleep": func(ts *testscript.TestScript, neg bool, args []string) {
		d, err := time.ParseDuration(args[0])
		ts.Check(err)
		time.Sleep(d)
	},
	// nft-tables NETNS: the nftables tables in a namespace.
	"nft-tables": func(ts *testscript.TestScript, neg bool, args []string) {
		f, err := netns.Open(netns.Path(args[0]))
		ts.Check(err)
		defer f.Close()
		c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
		ts.Check(err)
		tables, err := c.ListTables()
		ts.Check(err)
		fmt.Fprintln(ts.Stdout(), "# nft tables")
		for _, t := range tables {
			fmt.Fprintln(ts.Stdout(), t.Name)
		}
	},
	// links-in NETNS: the names of the links in a namespace.
	"links-in": func(ts *testscript.TestScript, neg bool, args []string) {
		h, err := netns.NewHandle(netns.Path(args[0]))
		ts.Check(err)
		defer h.Close()
		links, err := h.LinkList()
		ts.Check(err)
		fmt.Fprintln(ts.Stdout(), "# links")
		for _, l := range links {
			fmt.Fprintln(ts.Stdout(), l.Attrs().Name)
		}
	},
}

// startInternet gives the lab's "Internet" namespace a host, 203.0.113.10 (TEST-NET-3, only inside this
// namespace), with a web server that answers with the address it sees the client as.
func startInternet(env *testscript.Env, hostNS string) error {
	var l net.Listener
	err := netns.Do(netns.Path(hostNS), func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		// On loopback: the host is this namespace itself, as a laptop is.
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(203, 0, 113, 10), Mask: net.CIDRMask(32, 32)}}); err != nil {
			return err
		}
		l, err = net.Listen("tcp", "203.0.113.10:80")
		return err
	})
	if err != nil {
		return fmt.Errorf("make the Internet's web server: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "internet sees you as %s\n", host)
	})}
	go srv.Serve(l)
	env.Defer(func() { srv.Close() })
	env.Setenv("INET_IP", "203.0.113.10")
	return startInternetDNS(env, hostNS)
}

// startInternetDNS gives the Internet namespace a resolver, as a laptop has one: a DNS server on
// 203.0.113.10:53 that knows www.internet.test (the web server above) and nothing else, named in
// /etc/netns/NS/resolv.conf, where the lab looks for the resolver of its --host-netns.
func startInternetDNS(env *testscript.Env, hostNS string) error {
	var pc net.PacketConn
	if err := netns.Do(netns.Path(hostNS), func() (err error) { pc, err = net.ListenPacket("udp4", "203.0.113.10:53"); return err }); err != nil {
		return fmt.Errorf("make the Internet's DNS server: %w", err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Name == "www.internet.test." && q.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("www.internet.test. 60 IN A 203.0.113.10")
			m.Answer = append(m.Answer, rr)
		} else if len(q.Question) == 1 && q.Question[0].Name != "www.internet.test." {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	env.Defer(func() { srv.Shutdown() })
	dir := "/etc/netns/" + hostNS
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	env.Defer(func() {
		os.RemoveAll(dir)
		os.Remove("/etc/netns") // only if no other namespace has a file there
	})
	return os.WriteFile(dir+"/resolv.conf", []byte("nameserver 203.0.113.10\n"), 0o644)
}

// inetGet is an HTTP GET from "the Internet" (the lab's --host-netns); it prints the body.
func inetGet(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: inet-get URL")
	}
	// The transport dials on goroutines of its own: each socket must be made inside the namespace, or the
	// request would leave from this process's namespace, the real machine's.
	dial := netns.DialContext(netns.Path(ts.Getenv("HOSTNS")))
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial, Proxy: nil}}
	resp, err := c.Get(args[0])
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if neg {
		if err == nil {
			ts.Fatalf("inet-get %s: got an answer, want none", args[0])
		}
		return
	}
	ts.Check(err)
	ts.Stdout().Write(body)
}

// inetDial opens a TCP connection from "the Internet"; it fails unless the connection is accepted.
func inetDial(ts *testscript.TestScript, neg bool, args []string) {
	err := netns.Do(netns.Path(ts.Getenv("HOSTNS")), func() error {
		c, err := net.DialTimeout("tcp", args[0], 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if neg != (err != nil) {
		ts.Fatalf("inet-dial %s: err=%v, negated=%v", args[0], err, neg)
	}
}

// inetUDP sends one datagram from "the Internet" (the lab's --host-netns) and prints the one answer. A FIP's
// route and edge entry follow its Service's creation by a sync, so a wanted answer is asked for again for a
// few seconds; an unwanted one is asked for once.
func inetUDP(ts *testscript.TestScript, neg bool, addr, msg string) {
	answer, err := inetUDPOnce(ts, addr, msg)
	for deadline := time.Now().Add(5 * time.Second); !neg && err != nil && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		answer, err = inetUDPOnce(ts, addr, msg)
	}
	if neg {
		if err == nil {
			ts.Fatalf("inet-udp %s: got the answer %q, want none", addr, answer)
		}
		return
	}
	ts.Check(err)
	ts.Stdout().Write(answer)
}

func inetUDPOnce(ts *testscript.TestScript, addr, msg string) ([]byte, error) {
	var answer []byte
	err := netns.Do(netns.Path(ts.Getenv("HOSTNS")), func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		answer = buf[:n]
		return err
	})
	return answer, err
}
