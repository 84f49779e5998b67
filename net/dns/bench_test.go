package dns

import (
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

// BenchmarkDNSQPS measures answered queries per second with the whole
// process (server and the load-generating clients) held to one core, so the
// server's own share is at least the reported rate.
func BenchmarkDNSQPS(b *testing.B) {
	netnstest.RequireRoot(b, "network namespaces")
	ns := accountNetns(b, netnstest.Lab()+"-dns")
	rs := make([]Record, 0, 1000)
	for i := 0; i < 1000; i++ {
		rs = append(rs, Record{Name: "svc" + strconv.Itoa(i), IPs: []net.IP{net.IPv4(10, 96, byte(i>>8), byte(i))}})
	}
	startServer(b, ns, Options{}, rs...)
	q, err := new(dns.Msg).SetQuestion("svc500.default.svc.cluster.local.", dns.TypeA).Pack()
	if err != nil {
		b.Fatal(err)
	}

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	// 200,000 queries per iteration from 32 clients (enough outstanding queries to keep the core busy):
	// `make bench` runs one iteration, and a rate needs more than one query.
	const clients, perIteration = 32, 200000
	var conns []net.Conn
	for i := 0; i < clients; i++ {
		var c net.Conn
		if err := netns.Do(ns, func() (err error) { c, err = net.Dial("udp", dnsAddr); return err }); err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var left atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for n := 0; n < b.N; n++ {
		left.Store(perIteration)
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 512)
				for left.Add(-1) >= 0 {
					c.SetDeadline(time.Now().Add(2 * time.Second))
					if _, err := c.Write(q); err != nil {
						b.Error(err)
						return
					}
					n, err := c.Read(buf)
					if err != nil {
						b.Error(err)
						return
					}
					// Rcode NOERROR and one answer, without a full unpack.
					if n < 12 || buf[3]&0x0f != 0 || buf[7] != 1 {
						b.Errorf("bad answer header %x", buf[:12])
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perIteration)/time.Since(start).Seconds(), "queries/s")
}
