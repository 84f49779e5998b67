package lb

import (
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/net/iperf"
	"github.com/pilab/pi/net/netns/netnstest"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pilab/pi/net/netns"
)

// fillerServices are n services with eps endpoints each on addresses of the
// pod network nobody uses: they only make the table big.
func fillerServices(n, eps int) []Service {
	out := make([]Service, 0, n)
	for i := 0; i < n; i++ {
		s := Service{Name: fmt.Sprintf("filler%d", i), ClusterIP: net.IPv4(10, 97, byte(i>>8), byte(i))}
		p := Port{Name: "http", Protocol: "TCP", Port: 80}
		for j := 0; j < eps; j++ {
			k := i*eps + j
			p.Endpoints = append(p.Endpoints, ep(net.IPv4(10, 244, byte(100+k>>8), byte(k)), 8080))
		}
		s.Ports = []Port{p}
		out = append(out, s)
	}
	return out
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(p*float64(len(s)-1) + 0.5)
	return s[idx]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// arrivals records when the first packet of a probe reached a new endpoint.
type arrivals struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (a *arrivals) mark(name string) {
	a.mu.Lock()
	if _, ok := a.seen[name]; !ok {
		a.seen[name] = time.Now()
	}
	a.mu.Unlock()
}

func (a *arrivals) get(name string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.seen[name]
	return t, ok
}

func (a *arrivals) reset() {
	a.mu.Lock()
	a.seen = map[string]time.Time{}
	a.mu.Unlock()
}

// BenchmarkSyncLatency: 1,000 services x 10 endpoints; each change moves
// one endpoint of the probed service (10 endpoints) to a new backend and
// measures from the start of Sync until the first packet of a new flow
// reaches the new backend. Probe flows are fired from fresh sockets (one
// packet each, so each is a new conntrack entry and a new numgen pick) in
// the client pod right after Sync returns.
func BenchmarkSyncLatency(b *testing.B) {
	netnstest.RequireRoot(b, "network namespaces and nftables")
	for _, proto := range []string{"TCP", "UDP"} {
		b.Run(proto, func(b *testing.B) { benchSyncLatency(b, proto) })
	}
}

func benchSyncLatency(b *testing.B, proto string) {
	prefix := netnstest.Lab()
	tp := newTopo(b, prefix, "a", 3)
	s, err := New(tp.router, prefix+"-lb")
	must(b, err, "New")
	b.Cleanup(func() { s.Delete() })

	arr := &arrivals{seen: map[string]time.Time{}}
	newPorts := []uint16{9100, 9101}
	for _, port := range newPorts {
		name := fmt.Sprintf("new-%d", port)
		addr := fmt.Sprintf(":%d", port)
		if proto == "TCP" {
			var ln net.Listener
			must(b, netns.Do(tp.pods[2].path, func() (err error) { ln, err = net.Listen("tcp4", addr); return err }), "listen")
			b.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					arr.mark(name)
					c.Close()
				}
			}()
		} else {
			var pc net.PacketConn
			must(b, netns.Do(tp.pods[2].path, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }), "listen")
			b.Cleanup(func() { pc.Close() })
			go func() {
				buf := make([]byte, 64)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
					arr.mark(name)
				}
			}()
		}
	}
	// Nine old endpoints on pod 1 ports nobody listens on: probes that pick
	// them get a reset / port unreachable, which is all they need.
	probe := func(newPort uint16) Service {
		p := Port{Name: "p", Protocol: proto, Port: 80}
		for j := 0; j < 9; j++ {
			p.Endpoints = append(p.Endpoints, ep(tp.pods[1].ip, uint16(9000+j)))
		}
		p.Endpoints = append(p.Endpoints, ep(tp.pods[2].ip, newPort))
		return Service{Name: "probe", ClusterIP: clusterIP, Ports: []Port{p}}
	}
	filler := fillerServices(999, 10)
	start := time.Now()
	st, err := s.Sync(append(filler, probe(newPorts[0])))
	must(b, err, "full Sync")
	full := time.Since(start)

	rf, err := netns.Open(tp.router)
	must(b, err, "open router")
	defer rf.Close()
	ct, err := netlink.NewHandleAt(vnetns.NsHandle(rf.Fd()), unix.NETLINK_NETFILTER)
	must(b, err, "conntrack handle")
	defer ct.Close()

	sockType := unix.SOCK_STREAM
	if proto == "UDP" {
		sockType = unix.SOCK_DGRAM
	}
	const pool = 64
	newSockets := func() []int {
		fds := make([]int, 0, pool)
		must(b, netns.Do(tp.pods[0].path, func() error {
			for i := 0; i < pool; i++ {
				fd, err := unix.Socket(unix.AF_INET, sockType|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				fds = append(fds, fd)
			}
			return nil
		}), "probe sockets")
		return fds
	}
	vip := &unix.SockaddrInet4{Port: 80, Addr: [4]byte{10, 96, 0, 10}}
	fire := func(fd int) {
		if proto == "TCP" {
			unix.Connect(fd, vip) // EINPROGRESS: the SYN is on its way
		} else {
			unix.Sendto(fd, []byte("x"), 0, vip)
		}
	}

	// 200 changes per iteration: `make bench` runs one iteration, and a p99 needs a hundred samples or more.
	const changes = 200
	var lat, syncs []time.Duration
	var incOps []int
	b.ResetTimer()
	for i := 0; i < b.N*changes; i++ {
		b.StopTimer()
		ct.ConntrackTableFlush(netlink.ConntrackTable) // fresh picks for every probe flow
		arr.reset()
		fds := newSockets()
		target := newPorts[(i+1)%2]
		name := fmt.Sprintf("new-%d", target)
		svcs := append(filler, probe(target))
		b.StartTimer()

		t0 := time.Now()
		st, err := s.Sync(svcs)
		if err != nil {
			b.Fatalf("Sync: %v", err)
		}
		syncs = append(syncs, time.Since(t0))
		incOps = append(incOps, st.Ops)
		var got time.Time
		for j := 0; ; j++ {
			if j == len(fds) {
				// 0.9^64: rarely every probe picks an old endpoint.
				b.StopTimer()
				for _, fd := range fds {
					unix.Close(fd)
				}
				fds = append(fds[:0], newSockets()...)
				j = 0
				b.StartTimer()
			}
			fire(fds[j])
			if t, ok := arr.get(name); ok {
				got = t
				break
			}
		}
		lat = append(lat, got.Sub(t0))
		b.StopTimer()
		for _, fd := range fds {
			unix.Close(fd)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(syncs, 0.5)), "sync-p50-ms")
	b.ReportMetric(ms(percentile(syncs, 0.99)), "sync-p99-ms")
	b.ReportMetric(float64(incOps[len(incOps)-1]), "ops/change")
	b.ReportMetric(ms(full), "full-sync-ms")
	b.ReportMetric(float64(st.Ops), "full-ops")
}

// BenchmarkThroughput compares one TCP stream from a pod to another pod directly and through a ClusterIP
// (DNAT + masquerade in the router), measured with iperf3 (Debian's; `make bench` installs it) in 15
// alternating pairs of 2 s streams, so drift (CPU frequency, other load) falls on both alike.
func BenchmarkThroughput(b *testing.B) {
	netnstest.RequireRoot(b, "network namespaces and nftables")
	prefix := netnstest.Lab()
	tp := newTopo(b, prefix, "a", 2)
	s, err := New(tp.router, prefix+"-lb")
	must(b, err, "New")
	b.Cleanup(func() { s.Delete() })
	_, err = s.Sync([]Service{tcpSvc("sink", clusterIP, 80, ep(tp.pods[1].ip, 5201))})
	must(b, err, "Sync")

	const pairs = 15
	b.ResetTimer()
	md, mv, err := iperf.Compare(pairs*b.N, func() (float64, error) {
		return iperf.Stream(b.Context(), tp.pods[1].path, tp.pods[0].path, tp.pods[1].ip.String(), 5201, 5201, 2*time.Second)
	}, func() (float64, error) {
		return iperf.Stream(b.Context(), tp.pods[1].path, tp.pods[0].path, clusterIP.String(), 80, 5201, 2*time.Second)
	})
	b.StopTimer()
	must(b, err, "direct vs Service IP streams")
	b.ReportMetric(md, "direct-MB/s")
	b.ReportMetric(mv, "clusterip-MB/s")
	b.ReportMetric(mv/md, "throughput-ratio")
}
