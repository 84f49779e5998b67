package dns

import (
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pilab/pi/net/netns"
)

// BenchmarkDNSQPS measures answered queries per second with the whole
// process (server and the load-generating clients) held to one core, so the
// server's own share is at least the reported rate.
func BenchmarkDNSQPS(b *testing.B) {
	requireRoot(b)
	ns := accountNetns(b, labPrefix(b)+"-dns")
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
	b.SetParallelism(32) // enough outstanding queries to keep the core busy
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var c net.Conn
		if err := netns.Do(ns, func() (err error) { c, err = net.Dial("udp", dnsAddr); return err }); err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		for pb.Next() {
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
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}
