package lb

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

// Issue 9, "Also": a rule or map element removed by hand from an account's table is back within the full
// sync period (kube-proxy's FullSyncPeriod), though no Sync comes in; live ClientIP affinity survives it.
func TestPeriodicFullResyncRepairs(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	const period = 2 * time.Second
	prefix := netnstest.Lab()
	a := newAccount(t, prefix, "a", 4, WithFullSyncPeriod(period))
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: prefix + "-lb"}
	web := tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2))
	sticky := tcpSvc("sticky", clusterIP2, 80, a.podEP(1), a.podEP(2), a.podEP(3))
	sticky.SessionAffinity = true
	a.sync(t, web, sticky)
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 20); len(got) != 2 {
		t.Fatalf("before: %v, want both endpoints", got)
	}
	stuckTo := count(t, a.pods[0].path, clusterIP2.String()+":80", 5)
	if len(stuckTo) != 1 {
		t.Fatalf("affinity: %v, want one endpoint", stuckTo)
	}

	// By hand: the dispatch map loses web's element, the services chain its rule.
	f, err := netns.Open(a.router)
	must(t, err, "open router")
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	must(t, err, "nft conn")
	m, err := c.GetSetByName(table, mapServiceIPs)
	must(t, err, "get "+mapServiceIPs)
	elems, err := c.GetSetElements(m)
	must(t, err, "elements of "+mapServiceIPs)
	var del []nftables.SetElement
	for _, e := range elems {
		if strings.HasPrefix(string(e.Key), string(clusterIP.To4())) {
			del = append(del, nftables.SetElement{Key: e.Key})
		}
	}
	if len(del) != 1 {
		t.Fatalf("%d elements of %s for %s, want 1", len(del), mapServiceIPs, clusterIP)
	}
	must(t, c.SetDeleteElements(m, del), "delete element")
	must(t, c.Flush(), "delete element")
	if _, err := ask(a.pods[0].path, "10.96.0.10:80", 500*time.Millisecond); err == nil {
		t.Fatal("web still answers without its dispatch element: the test removed nothing")
	}
	rules, err := c.GetRules(table, &nftables.Chain{Table: table, Name: chainServices})
	must(t, err, "rules of "+chainServices)
	for _, r := range rules {
		must(t, c.DelRule(r), "delete rule")
	}
	must(t, c.Flush(), "delete rules")
	if _, err := ask(a.pods[0].path, clusterIP2.String()+":80", 500*time.Millisecond); err == nil {
		t.Fatal("sticky still answers without the dispatch rule: the test removed nothing")
	}

	// No Sync from here on: the period alone must put it back.
	deadline := time.Now().Add(3 * period)
	for {
		if _, err := ask(a.pods[0].path, "10.96.0.10:80", 200*time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			n, err := a.lb.FullSyncs()
			t.Fatalf("web not back %s after the rules were removed (full sync period %s; %d periodic resyncs, last error %v)", 3*period, period, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, err := a.lb.FullSyncs()
	if n < 1 || err != nil {
		t.Fatalf("periodic resyncs: %d, last error %v", n, err)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 20); len(got) != 2 {
		t.Fatalf("after the resync: %v, want both endpoints", got)
	}
	if got := count(t, a.pods[0].path, clusterIP2.String()+":80", 5); len(got) != 1 || got[who1(stuckTo)] != 5 {
		t.Fatalf("affinity after the resync: %v, want all on %v (the live entry carried over)", got, stuckTo)
	}
	a.sync(t, web, sticky)
}

var clusterIP2 = net.IPv4(10, 96, 0, 11)

// who1 is the one key of m.
func who1(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}
