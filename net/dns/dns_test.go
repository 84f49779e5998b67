package dns

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

const dnsAddr = "10.244.0.2:53"

// accountNetns stands in for an account router: a throwaway netns with the
// DNS address 10.244.0.2/16 on a bridge br0 (like net/network puts it).
func accountNetns(t testing.TB, name string) string {
	t.Helper()
	path, err := netns.EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	h, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatalf("add bridge in %s: %v", name, err)
	}
	l, err := h.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 244, 0, 2), Mask: net.CIDRMask(16, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return path
}

func startServer(t testing.TB, nsPath string, o Options, rs ...Record) *Server {
	t.Helper()
	s := NewServer(o)
	s.SetRecords(rs)
	if err := s.ListenIn(nsPath, dnsAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// query asks the server at addr from inside nsPath, like a pod would.
func query(t testing.TB, nsPath, network, addr, name string, qtype uint16) (*dns.Msg, time.Duration) {
	t.Helper()
	var c net.Conn
	if err := netns.Do(nsPath, func() (err error) {
		c, err = net.Dial(network, addr)
		return err
	}); err != nil {
		t.Fatalf("dial %s in %s: %v", addr, nsPath, err)
	}
	conn := &dns.Conn{Conn: c}
	defer conn.Close()
	m := new(dns.Msg).SetQuestion(name, qtype)
	client := &dns.Client{Net: network, Timeout: 5 * time.Second}
	resp, rtt, err := client.ExchangeWithConn(m, conn)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return resp, rtt
}

func answerIPs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	sort.Strings(out)
	return out
}

var (
	webRec = Record{Name: "web", IPs: []net.IP{net.IPv4(10, 96, 0, 10)}}
	dbRec  = Record{Name: "db", IPs: []net.IP{net.IPv4(10, 244, 1, 11), net.IPv4(10, 244, 1, 12), net.IPv4(10, 244, 1, 13)}}
)

func TestAnswersNameForms(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	ns := accountNetns(t, netnstest.Lab()+"-dns")
	startServer(t, ns, Options{}, webRec, dbRec)

	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"web.", "web.default.", "web.default.svc.", "web.default.svc.cluster.local.", "WEB.Default.SVC.cluster.LOCAL."} {
			m, _ := query(t, ns, network, dnsAddr, name, dns.TypeA)
			if m.Rcode != dns.RcodeSuccess || !m.Authoritative {
				t.Errorf("%s %s: rcode %s aa=%v, want authoritative NOERROR", network, name, dns.RcodeToString[m.Rcode], m.Authoritative)
			}
			if got := answerIPs(m); !reflect.DeepEqual(got, []string{"10.96.0.10"}) {
				t.Errorf("%s %s: answers %v, want [10.96.0.10]", network, name, got)
			}
			for _, rr := range m.Answer {
				if rr.Header().Ttl != TTL || rr.Header().Name != name {
					t.Errorf("%s: answer %v, want TTL %d and the question's name", name, rr, TTL)
				}
			}
		}
	}
	// Headless: every pod IP.
	m, _ := query(t, ns, "udp", dnsAddr, "db.default.svc.cluster.local.", dns.TypeA)
	if got := answerIPs(m); !reflect.DeepEqual(got, []string{"10.244.1.11", "10.244.1.12", "10.244.1.13"}) {
		t.Errorf("headless db: %v", got)
	}
	// Other types of a known name: NODATA with the SOA.
	m, _ = query(t, ns, "udp", dnsAddr, "web.default.svc.cluster.local.", dns.TypeAAAA)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || len(m.Ns) != 1 {
		t.Errorf("AAAA web: rcode %s answers %v ns %v, want NODATA + SOA", dns.RcodeToString[m.Rcode], m.Answer, m.Ns)
	}
	// A pod's resolver: the resolv.conf the lead writes, search list walked
	// like glibc does (ndots:5, so every short form tries the list first).
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 10.244.0.2\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"), 0o644)
	cfg, err := dns.ClientConfigFromFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, short := range []string{"web", "web.default", "web.default.svc", "web.default.svc.cluster.local"} {
		var got []string
		for _, cand := range cfg.NameList(short) {
			m, _ := query(t, ns, "udp", dnsAddr, cand, dns.TypeA)
			if m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0 {
				got = answerIPs(m)
				break
			}
		}
		if !reflect.DeepEqual(got, []string{"10.96.0.10"}) {
			t.Errorf("pod resolving %q through the search list: %v, want [10.96.0.10]", short, got)
		}
	}
	// A big headless answer: truncated over UDP (the client retries over
	// TCP), complete over TCP.
	var many []net.IP
	for i := 0; i < 100; i++ {
		many = append(many, net.IPv4(10, 244, 3, byte(i+1)))
	}
	s2 := NewServer(Options{})
	s2.SetRecords([]Record{{Name: "big", IPs: many}})
	ns2 := accountNetns(t, netnstest.Lab()+"-dns2")
	if err := s2.ListenIn(ns2, dnsAddr); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if m, _ := query(t, ns2, "udp", dnsAddr, "big.", dns.TypeA); !m.Truncated || len(m.Answer) >= 100 {
		t.Errorf("100 A records over UDP: tc=%v answers=%d, want truncated", m.Truncated, len(m.Answer))
	}
	if m, _ := query(t, ns2, "tcp", dnsAddr, "big.", dns.TypeA); m.Truncated || len(m.Answer) != 100 {
		t.Errorf("100 A records over TCP: tc=%v answers=%d, want all", m.Truncated, len(m.Answer))
	}
	// Reverse lookup of the ClusterIP.
	m, _ = query(t, ns, "udp", dnsAddr, "10.0.96.10.in-addr.arpa.", dns.TypePTR)
	if len(m.Answer) != 1 || m.Answer[0].(*dns.PTR).Ptr != "web.default.svc.cluster.local." {
		t.Errorf("PTR 10.96.0.10: %v", m.Answer)
	}
}

// countingUpstream is a DNS server that answers every A query with
// 192.0.2.1 and counts what it saw.
func countingUpstream(t testing.TB, nsPath, addr string) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg).SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: net.IPv4(192, 0, 2, 1)})
		w.WriteMsg(m)
	})
	var pc net.PacketConn
	var ln net.Listener
	if err := netns.Do(nsPath, func() (err error) {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("upstream listen %s: %v", addr, err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return &n
}

func TestNXDOMAINStaysLocal(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	prefix := netnstest.Lab()
	ns := accountNetns(t, prefix+"-dns")
	up := accountNetns(t, prefix+"-up")
	seen := countingUpstream(t, up, "127.0.0.1:5353")
	startServer(t, ns, Options{Upstream: []string{"127.0.0.1:5353"}, UpstreamNetns: up}, webRec)
	for _, name := range []string{"nope.default.svc.cluster.local.", "nope.default.svc.", "nope.default.",
		"nope.svc.cluster.local.", "a.b.cluster.local.", "9.9.9.10.in-addr.arpa."} {
		m, _ := query(t, ns, "udp", dnsAddr, name, dns.TypeA)
		if m.Rcode != dns.RcodeNameError || len(m.Ns) != 1 {
			t.Errorf("%s: rcode %s ns %v, want NXDOMAIN with SOA", name, dns.RcodeToString[m.Rcode], m.Ns)
		}
	}
	// Names above the services exist (NODATA): an NXDOMAIN there would let
	// a caching resolver deny every service name below it.
	for _, name := range []string{"cluster.local.", "svc.cluster.local.", "default.svc.cluster.local.", "default.svc.", "default."} {
		m, _ := query(t, ns, "udp", dnsAddr, name, dns.TypeA)
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
			t.Errorf("%s: rcode %s answers %v, want NODATA", name, dns.RcodeToString[m.Rcode], m.Answer)
		}
	}
	if m, _ := query(t, ns, "udp", dnsAddr, "cluster.local.", dns.TypeSOA); len(m.Answer) != 1 {
		t.Errorf("SOA of the zone: %v", m.Answer)
	}
	if n := seen.Load(); n != 0 {
		t.Errorf("%d cluster-zone queries leaked to the upstream", n)
	}
}

func TestForwardsToUpstreamInItsNetns(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	prefix := netnstest.Lab()
	ns := accountNetns(t, prefix+"-dns")
	// The upstream listens on loopback inside its own netns: only a query
	// really sent from UpstreamNetns can reach it.
	up := accountNetns(t, prefix+"-up")
	seen := countingUpstream(t, up, "127.0.0.1:5353")
	startServer(t, ns, Options{Upstream: []string{"127.0.0.1:5353"}, UpstreamNetns: up}, webRec)
	for _, network := range []string{"udp", "tcp"} {
		m, _ := query(t, ns, network, dnsAddr, "example.org.", dns.TypeA)
		if m.Rcode != dns.RcodeSuccess || !reflect.DeepEqual(answerIPs(m), []string{"192.0.2.1"}) {
			t.Errorf("forwarded over %s: rcode %s answers %v, want 192.0.2.1 from the upstream", network, dns.RcodeToString[m.Rcode], m.Answer)
		}
	}
	if n := seen.Load(); n != 2 {
		t.Errorf("upstream saw %d queries, want 2", n)
	}
	// The first upstream is dead (nothing listens): the next one answers.
	s2 := NewServer(Options{Upstream: []string{"127.0.0.1:5354", "127.0.0.1:5353"}, UpstreamNetns: up})
	ns2 := accountNetns(t, prefix+"-dns2")
	if err := s2.ListenIn(ns2, dnsAddr); err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m, _ := query(t, ns2, "udp", dnsAddr, "example.org.", dns.TypeA)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Errorf("second upstream: rcode %s, want an answer", dns.RcodeToString[m.Rcode])
	}
}

func TestServfail(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	prefix := netnstest.Lab()
	ns := accountNetns(t, prefix+"-dns")
	startServer(t, ns, Options{}, webRec)
	m, rtt := query(t, ns, "udp", dnsAddr, "example.org.", dns.TypeA)
	if m.Rcode != dns.RcodeServerFailure || rtt > 200*time.Millisecond {
		t.Errorf("no upstream: rcode %s after %v, want SERVFAIL at once", dns.RcodeToString[m.Rcode], rtt)
	}

	// An upstream that swallows queries: SERVFAIL after about UpstreamTimeout.
	up := accountNetns(t, prefix+"-up")
	var hole net.PacketConn
	if err := netns.Do(up, func() (err error) { hole, err = net.ListenPacket("udp", "127.0.0.1:5353"); return err }); err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := hole.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	ns2 := accountNetns(t, prefix+"-dns2")
	startServer(t, ns2, Options{Upstream: []string{"127.0.0.1:5353"}, UpstreamNetns: up})
	m, rtt = query(t, ns2, "udp", dnsAddr, "example.org.", dns.TypeA)
	if m.Rcode != dns.RcodeServerFailure || rtt < UpstreamTimeout*3/4 || rtt > UpstreamTimeout+time.Second {
		t.Errorf("silent upstream: rcode %s after %v, want SERVFAIL after ~%v", dns.RcodeToString[m.Rcode], rtt, UpstreamTimeout)
	}
}

func TestTwoAccountsIsolated(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	prefix := netnstest.Lab()
	nsA := accountNetns(t, prefix+"-a")
	nsB := accountNetns(t, prefix+"-b")
	a := startServer(t, nsA, Options{}, webRec)
	startServer(t, nsB, Options{}, Record{Name: "web", IPs: []net.IP{net.IPv4(10, 96, 0, 99)}}, Record{Name: "only-b", IPs: []net.IP{net.IPv4(10, 96, 0, 98)}})

	for ns, want := range map[string][]string{nsA: {"10.96.0.10"}, nsB: {"10.96.0.99"}} {
		m, _ := query(t, ns, "udp", dnsAddr, "web.default.svc.cluster.local.", dns.TypeA)
		if got := answerIPs(m); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: web = %v, want %v", ns, got, want)
		}
	}
	if m, _ := query(t, nsA, "udp", dnsAddr, "only-b.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("account A resolves B's only-b: %v", m.Answer)
	}
	// Closing A leaves B serving.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if m, _ := query(t, nsB, "udp", dnsAddr, "only-b.", dns.TypeA); len(m.Answer) != 1 {
		t.Errorf("B after A closed: %v", m)
	}
	if err := a.ListenIn(nsA, dnsAddr); err == nil {
		t.Error("ListenIn on a closed server succeeded")
	}
}

func TestListenInErrors(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	ns := accountNetns(t, netnstest.Lab()+"-dns")
	s := NewServer(Options{})
	defer s.Close()
	err := s.ListenIn(ns, "10.244.0.3:53") // not configured in the netns
	if err == nil || !strings.Contains(err.Error(), "10.244.0.3:53") {
		t.Errorf("listen on a missing address: %v, want an error naming it", err)
	}
	if err := s.ListenIn("/nonexistent/netns", dnsAddr); err == nil {
		t.Error("listen in a missing netns succeeded")
	}
}

func TestSetRecordsAtomic(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces")
	ns := accountNetns(t, netnstest.Lab()+"-dns")
	setA := []Record{{Name: "db", IPs: []net.IP{net.IPv4(10, 244, 1, 1), net.IPv4(10, 244, 1, 2)}}}
	setB := []Record{{Name: "db", IPs: []net.IP{net.IPv4(10, 244, 2, 1), net.IPv4(10, 244, 2, 2), net.IPv4(10, 244, 2, 3)}}}
	s := startServer(t, ns, Options{}, setA...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.SetRecords(setB)
			} else {
				s.SetRecords(setA)
			}
		}
	}()
	for i := 0; i < 200; i++ {
		m, _ := query(t, ns, "udp", dnsAddr, "db.", dns.TypeA)
		got := strings.Join(answerIPs(m), ",")
		if got != "10.244.1.1,10.244.1.2" && got != "10.244.2.1,10.244.2.2,10.244.2.3" {
			t.Fatalf("answer mixes record sets: %s", got)
		}
	}
	close(stop)
	wg.Wait()
}

func TestUpstreamFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.org\noptions ndots:5\n"), 0o644)
	if got, want := UpstreamFromResolvConf(p), []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !reflect.DeepEqual(got, want) {
		t.Errorf("UpstreamFromResolvConf = %v, want %v", got, want)
	}
	if got := UpstreamFromResolvConf(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Errorf("missing file: %v, want nil", got)
	}
}
