package daemon

// GET /x/rules?kind=service|fip|pod&name=NAME: `pi rules` — the nftables rules and the conntrack entries
// that implement one object, read live from the kernel: the account router's Service table (net/lb) and
// its own table (net/network), the lab's edge table on the Internet side for a Floating IP, and the
// router's conntrack table. Rules are rendered by net/trace's renderer (the one `pi trace` uses, close to
// `nft list`), with the comments pilab wrote on them; each chain says why it is part of the answer.

import (
	"encoding/binary"

	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/trace"
)

// RulesView is the answer of GET /x/rules.
type RulesView struct {
	Account string `json:"account"`
	Kind    string `json:"kind"` // service, fip or pod
	Name    string `json:"name"`
	// Addresses are the object's addresses the rules and conntrack entries were picked by.
	Addresses []string `json:"addresses"`
	// Netns is the account's router namespace, where the Service and router tables live.
	Netns  string       `json:"netns"`
	Tables []RulesTable `json:"tables"`
	// Conntrack are the router's conntrack entries of connections to or from the addresses.
	Conntrack []ConntrackView `json:"conntrack"`
	Notes     []string        `json:"notes,omitempty"`
}

// RulesTable is the part of one nftables table that implements the object.
type RulesTable struct {
	Netns  string       `json:"netns"` // "" for the Internet side when it is the machine itself
	Family string       `json:"family"`
	Name   string       `json:"name"`
	Sets   []RulesSet   `json:"sets,omitempty"`
	Chains []RulesChain `json:"chains"`
}

// RulesSet is a set or map, with only the elements about the object.
type RulesSet struct {
	Name     string   `json:"name"`
	Map      bool     `json:"map"`
	Elements []string `json:"elements"`
	Why      string   `json:"why"`
}

// RulesChain is a chain with its rules.
type RulesChain struct {
	Name string `json:"name"`
	// Header is nft's first line of a base chain ("type nat hook prerouting priority -100; policy accept;").
	Header string     `json:"header,omitempty"`
	Why    string     `json:"why"`
	Rules  []RuleView `json:"rules"`
}

// RuleView is one rule.
type RuleView struct {
	Handle  uint64 `json:"handle"`
	Text    string `json:"text"`
	Comment string `json:"comment,omitempty"`
}

// ConntrackView is one conntrack entry.
type ConntrackView struct {
	Proto string `json:"proto"`
	// Orig is the connection as its first packet had it ("10.244.3.7:40000 → 10.96.0.10:80"); Reply as
	// replies are expected, which shows the NAT.
	Orig  string `json:"orig"`
	Reply string `json:"reply"`
	// DNAT and SNAT are the rewrites the entry records ("" when none).
	DNAT    string `json:"dnat,omitempty"`
	SNAT    string `json:"snat,omitempty"`
	State   string `json:"state,omitempty"` // TCP state
	Timeout uint32 `json:"timeout"`         // seconds left
	// Netns is where the entry is when it is not the router: a node's namespace (a multi-node lab, where
	// the client's node DNATs a Service connection).
	Netns string `json:"netns,omitempty"`
}

func (d *Daemon) rulesView(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := d.buildRules(server.Account(r), q.Get("kind"), q.Get("name"))
	if err != nil {
		server.WriteError(w, err)
		return
	}
	server.WriteJSON(w, 200, v)
}

// nftSnap is one table as read from the kernel.
type nftSnap struct {
	netns, family, name string
	chains              map[string]chainSnap
	sets                map[string]setSnap
}

type chainSnap struct {
	header string
	rules  []RuleView
}

type setSnap struct {
	isMap bool
	elems []elemSnap
}

// elemSnap is an element: its key decoded (addr, proto, port for the dispatch map; a number for a pick
// map), and the chain a verdict map element sends to.
type elemSnap struct {
	text  string
	addr  netip.Addr
	chain string
}

// rulesInputs is what the selection works on.
type rulesInputs struct {
	kind, name string
	addrs      []netip.Addr
	svcTable   *nftSnap // net/lb's table in the router
	router     *nftSnap // net/network's router table
	edge       *nftSnap // the lab's edge table on the Internet side (Floating IPs)
	flows      []conntrack.Flow
}

func (d *Daemon) buildRules(account, kind, name string) (*RulesView, error) {
	if name == "" {
		return nil, server.Invalid("say which object: pi rules service NAME | fip IP | pod NAME")
	}
	acct, err := d.accountFor(account)
	if err != nil {
		return nil, err
	}
	in := rulesInputs{kind: kind, name: name}
	var podUID types.UID
	v := &RulesView{Account: account, Kind: kind, Name: name}
	switch kind {
	case "service":
		o, err := d.store.Get(kindService, account, name)
		if err != nil {
			return nil, notFoundIn(err, "service", name, account, "pi get services")
		}
		s := o.(*corev1.Service)
		if ip, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil {
			in.addrs = append(in.addrs, ip)
		} else {
			v.Notes = append(v.Notes, fmt.Sprintf("service %s has no ClusterIP (%q): the router has no rules for it; the account's DNS answers its name with the pods' addresses", name, s.Spec.ClusterIP))
		}
		if ip, err := netip.ParseAddr(s.Spec.LoadBalancerIP); err == nil && s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			in.addrs = append(in.addrs, ip)
		}
	case "fip":
		o, err := d.store.Get(kindFIP, account, name)
		if err != nil {
			return nil, notFoundIn(err, "fip", name, account, "pi get fips")
		}
		ip, err := netip.ParseAddr(o.GetName())
		if err != nil {
			return nil, fmt.Errorf("fip %q of account %s is not an address: %v", name, account, err)
		}
		in.addrs = []netip.Addr{ip}
		if users := o.(*api.FloatingIP).Status.Services; len(users) == 0 {
			v.Notes = append(v.Notes, fmt.Sprintf("no Service uses %s yet: nothing routes or DNATs it (create a Service of type LoadBalancer with loadBalancerIP: %s)", name, name))
		}
	case "pod":
		o, err := d.store.Get(kindPod, account, name)
		if err != nil {
			return nil, notFoundIn(err, "pod", name, account, "pi get pods")
		}
		p := o.(*corev1.Pod)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			return nil, server.Invalid("pod %s of account %s has no address yet (phase %s); wait until it runs (pi wait --for=condition=Ready pod/%s)", name, account, p.Status.Phase, name)
		}
		in.addrs = []netip.Addr{ip}
		podUID = p.UID
	default:
		return nil, server.Invalid("pi rules: %q is not a kind of object with rules; use service NAME, fip IP or pod NAME", kind)
	}
	for _, a := range in.addrs {
		v.Addresses = append(v.Addresses, a.String())
	}
	if !acct.Status.Ready {
		return nil, server.Invalid("account %s's network is not ready (%s); try again when pi get accounts shows it Ready", account, acct.Status.Message)
	}
	v.Netns = d.network.RouterNetnsName(acct.Status.Index)
	rpath := netns.Path(v.Netns)
	c, closeNS, err := nftIn(rpath)
	if err != nil {
		return nil, fmt.Errorf("rules of %s %s: open the router netns %s: %w", kind, name, v.Netns, err)
	}
	defer closeNS()
	if in.svcTable, err = readNftTable(c, v.Netns, d.svcTable()); err != nil {
		return nil, fmt.Errorf("rules of %s %s: %w", kind, name, err)
	}
	if in.router, err = readNftTable(c, v.Netns, d.routerTable()); err != nil {
		return nil, fmt.Errorf("rules of %s %s: %w", kind, name, err)
	}
	if kind == "fip" || kind == "service" && len(in.addrs) > 1 {
		hc, closeHost, err := nftIn(d.hostNetnsPath())
		if err != nil {
			return nil, fmt.Errorf("rules of %s %s: open the Internet side's netns: %w", kind, name, err)
		}
		defer closeHost()
		if in.edge, err = readNftTable(hc, d.cfg.HostNetns, d.cfg.Lab+"-edge"); err != nil {
			return nil, fmt.Errorf("rules of %s %s: %w", kind, name, err)
		}
	}
	if in.flows, err = dumpConntrack(rpath); err != nil {
		v.Notes = append(v.Notes, fmt.Sprintf("conntrack entries of %s could not be read: %v", v.Netns, err))
	}
	selectRules(in, v)
	if kind != "fip" {
		d.nodeRules(acct.Status.Index, in, v)
	}
	if kind == "pod" {
		// The pod's port on br0: the link whose alias (written by net/network) names the pod's UID.
		if port := podPort(rpath, string(podUID)); port != "" {
			v.Notes = append(v.Notes, fmt.Sprintf("pod %s is attached to the router's br0 by port %s (ip netns exec %s ip -d link show %s)", name, port, v.Netns, port))
		}
	}
	return v, nil
}

// nodeRules adds, in a multi-node lab, the account's Service table on each node and the node's conntrack
// entries of the account's zone: there its pods' connections to a Service are DNAT'd (net/lb
// WithNodeBridge). A node whose table cannot be read gets a note, not an error: the router's part stands.
func (d *Daemon) nodeRules(index int, in rulesInputs, v *RulesView) {
	if d.overlay == nil {
		return
	}
	objs, err := d.store.List(kindNode, "")
	if err != nil {
		return
	}
	for _, o := range objs {
		i := api.NodeIndex(o.(*corev1.Node))
		if i == 0 {
			continue
		}
		name := d.overlay.NodeNetnsName(i)
		path := netns.Path(name)
		c, closeNS, err := nftIn(path)
		if err != nil {
			v.Notes = append(v.Notes, fmt.Sprintf("node %s (netns %s): %v", o.GetName(), name, err))
			continue
		}
		snap, err := readNftTable(c, name, controller.NodeServiceTable(d.cfg.Lab, index))
		closeNS()
		if err != nil || snap == nil {
			if err != nil {
				v.Notes = append(v.Notes, fmt.Sprintf("node %s: %v", o.GetName(), err))
			}
			continue
		}
		nin := rulesInputs{kind: in.kind, name: in.name, addrs: in.addrs, svcTable: snap}
		flows, err := dumpConntrack(path)
		for _, f := range flows {
			if f.Zone == uint16(index) {
				nin.flows = append(nin.flows, f)
			}
		}
		if err != nil {
			v.Notes = append(v.Notes, fmt.Sprintf("conntrack entries of %s could not be read: %v", name, err))
		}
		nv := &RulesView{}
		selectRules(nin, nv)
		v.Tables = append(v.Tables, nv.Tables...)
		for _, c := range nv.Conntrack {
			c.Netns = name
			v.Conntrack = append(v.Conntrack, c)
		}
	}
}

// dumpConntrack reads the conntrack table of the namespace at path.
func dumpConntrack(path string) ([]conntrack.Flow, error) {
	var flows []conntrack.Flow
	err := netns.Do(path, func() error {
		ct, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer ct.Close()
		flows, err = ct.Dump(nil)
		return err
	})
	return flows, err
}

// podPort is the name of the router link whose alias ("<ip> <uid>") names the pod; "" if none.
func podPort(routerPath, uid string) string {
	h, err := netns.NewHandle(routerPath)
	if err != nil {
		return ""
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return ""
	}
	for _, l := range links {
		if _, id, ok := strings.Cut(l.Attrs().Alias, " "); ok && id == uid && uid != "" {
			return l.Attrs().Name
		}
	}
	return ""
}

// notFoundIn says which object of which account is missing, and where to look; other errors pass.
func notFoundIn(err error, kind, name, account, list string) error {
	if store.IsNotFound(err) {
		return fmt.Errorf("%s %q not found in account %s (%s lists them): %w", kind, name, account, list, store.ErrNotFound)
	}
	return err
}

// readNftTable reads one ip table: chains with their rules, sets with their elements. A missing table is
// nil, not an error: an account without Services yet may have no Service table.
func readNftTable(c *nftables.Conn, ns, name string) (*nftSnap, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables in %s: %w", nsLabel(ns), err)
	}
	var t *nftables.Table
	for _, x := range tables {
		if x.Name == name {
			t = x
		}
	}
	if t == nil {
		return nil, nil
	}
	s := &nftSnap{netns: ns, family: "ip", name: name, chains: map[string]chainSnap{}, sets: map[string]setSnap{}}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list chains of table ip %s in %s: %w", name, nsLabel(ns), err)
	}
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of ip %s/%s in %s: %w", name, ch.Name, nsLabel(ns), err)
		}
		cs := chainSnap{header: chainHeader(ch)}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			cs.rules = append(cs.rules, RuleView{Handle: r.Handle, Text: trace.RenderRule(r), Comment: comment})
		}
		s.chains[ch.Name] = cs
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets of table ip %s in %s: %w", name, nsLabel(ns), err)
	}
	for _, set := range sets {
		elems, err := c.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("read set ip %s/%s in %s: %w", name, set.Name, nsLabel(ns), err)
		}
		ss := setSnap{isMap: set.IsMap}
		for _, e := range elems {
			if e.IntervalEnd {
				continue
			}
			ss.elems = append(ss.elems, decodeElem(set, e))
		}
		s.sets[set.Name] = ss
	}
	return s, nil
}

func nsLabel(ns string) string {
	if ns == "" {
		return "the host namespace"
	}
	return "netns " + ns
}

// decodeElem renders an element's key (and a map's verdict) by what pilab stores in the set.
func decodeElem(set *nftables.Set, e nftables.SetElement) elemSnap {
	var el elemSnap
	k := e.Key
	switch {
	case set.Name == svcDispatchMap || len(k) == 12 && set.Concatenation:
		if ip, proto, port, ok := dispatchKeyParts(k); ok {
			el.addr = ip
			el.text = fmt.Sprintf("%s . %s . %d", ip, proto, port)
		}
	case strings.HasPrefix(set.Name, "pick-") && len(k) == 4:
		el.text = fmt.Sprint(binary.NativeEndian.Uint32(k))
	case set.KeyType.Name == nftables.TypeIFName.Name:
		el.text = fmt.Sprintf("%q", strings.TrimRight(string(k), "\x00"))
	case len(k) == 4:
		el.addr = netip.AddrFrom4([4]byte(k))
		el.text = el.addr.String()
	default:
		el.text = fmt.Sprintf("0x%x", k)
	}
	if v := elemVerdict(e); v != nil {
		el.chain = v.Chain
		el.text += " : " + trace.Verdict{Code: int32(v.Kind), Chain: v.Chain}.String()
	}
	if e.Expires > 0 {
		el.text += fmt.Sprintf(" expires %s", e.Expires.Round(1e9))
	}
	return el
}

// elemVerdict is a verdict map element's verdict. google/nftables does not decode it when it reads
// elements: Val holds the NFTA_DATA_VERDICT attribute's nested NFTA_VERDICT_CODE and NFTA_VERDICT_CHAIN.
func elemVerdict(e nftables.SetElement) *expr.Verdict {
	if e.VerdictData != nil {
		return e.VerdictData
	}
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil || len(e.Val) == 0 {
		return nil
	}
	ad.ByteOrder = binary.BigEndian
	var v expr.Verdict
	found := false
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.Kind, found = expr.VerdictKind(int32(ad.Uint32())), true
		case unix.NFTA_VERDICT_CHAIN:
			v.Chain = ad.String()
		}
	}
	if ad.Err() != nil || !found {
		return nil
	}
	return &v
}

var hookNames = map[nftables.ChainHook]string{0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}

// chainHeader is nft's first line of a base chain; "" for a regular chain.
func chainHeader(ch *nftables.Chain) string {
	if ch.Hooknum == nil {
		return ""
	}
	s := fmt.Sprintf("type %s hook %s", ch.Type, hookNames[*ch.Hooknum])
	if ch.Priority != nil {
		s += fmt.Sprintf(" priority %d", *ch.Priority)
	}
	s += ";"
	if ch.Policy != nil {
		p := "accept"
		if *ch.Policy == nftables.ChainPolicyDrop {
			p = "drop"
		}
		s += " policy " + p + ";"
	}
	return s
}

// selectRules picks, from the tables read, what implements the object, in the order a packet meets it,
// and its conntrack entries. It is pure.
func selectRules(in rulesInputs, v *RulesView) {
	has := func(a netip.Addr) bool {
		for _, x := range in.addrs {
			if x == a {
				return true
			}
		}
		return false
	}
	v.Tables = []RulesTable{}
	add := func(s *nftSnap, sets []RulesSet, chains []RulesChain) {
		if s == nil || len(sets) == 0 && len(chains) == 0 {
			return
		}
		v.Tables = append(v.Tables, RulesTable{Netns: s.netns, Family: s.family, Name: s.name, Sets: sets, Chains: chains})
	}
	chain := func(s *nftSnap, name, why string) []RulesChain {
		if s == nil {
			return nil
		}
		c, ok := s.chains[name]
		if !ok {
			return nil
		}
		return []RulesChain{{Name: name, Header: c.header, Why: why, Rules: append([]RuleView{}, c.rules...)}}
	}
	// rulesWhere is a chain with only the rules keep says are about the object.
	rulesWhere := func(s *nftSnap, name, why string, keep func(RuleView) bool) []RulesChain {
		out := chain(s, name, why)
		if out == nil {
			return nil
		}
		var rules []RuleView
		for _, r := range out[0].Rules {
			if keep(r) {
				rules = append(rules, r)
			}
		}
		if len(rules) == 0 {
			return nil
		}
		out[0].Rules = rules
		return out
	}

	// The Service table: dispatch entries for the addresses → Service chains → endpoint chains; for a
	// pod, the endpoint chains that DNAT to it.
	if st := in.svcTable; st != nil {
		var sets []RulesSet
		var chains []RulesChain
		svcChains := map[string]bool{}
		var svcOrder []string
		if d, ok := st.sets[svcDispatchMap]; ok && in.kind != "pod" {
			var els []string
			for _, e := range d.elems {
				if has(e.addr) {
					els = append(els, e.text)
					if e.chain != "" && !svcChains[e.chain] {
						svcChains[e.chain] = true
						svcOrder = append(svcOrder, e.chain)
					}
				}
			}
			if len(els) > 0 {
				sets = append(sets, RulesSet{Name: svcDispatchMap, Map: true, Elements: els,
					Why: "the dispatch map: address . protocol . port → the Service port's chain"})
			}
		}
		epOf := map[string]bool{} // endpoint chains to show
		var epOrder []string
		addEP := func(c string) {
			if !epOf[c] {
				epOf[c] = true
				epOrder = append(epOrder, c)
			}
		}
		if in.kind == "pod" {
			var names []string
			for name := range st.chains {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				if !strings.HasPrefix(name, "ep-") {
					continue
				}
				for _, r := range st.chains[name].rules {
					for _, a := range in.addrs {
						if strings.Contains(r.Text, "dnat to "+a.String()+":") {
							addEP(name)
						}
					}
				}
			}
			// The pick map elements that choose those chains, and the Service chains that own the maps.
			for _, ep := range epOrder {
				for setName, s := range st.sets {
					for _, e := range s.elems {
						if e.chain == ep {
							sets = append(sets, RulesSet{Name: setName, Map: s.isMap, Elements: []string{e.text},
								Why: "the endpoint pick of " + chainNote(st.name, "svc-"+strings.TrimPrefix(setName, "pick-"))})
						}
					}
				}
			}
			sort.Slice(sets, func(i, j int) bool { return sets[i].Name < sets[j].Name })
		} else if len(svcChains) > 0 {
			if nodeServiceTable.MatchString(st.name) {
				// A node's table: the account's packets get their zone, then the Service map.
				chains = append(chains, chain(st, "zone", chainNote(st.name, "zone"))...)
				chains = append(chains, chain(st, "nat-prerouting", chainNote(st.name, "nat-prerouting"))...)
			} else {
				chains = append(chains, chain(st, "nat-prerouting", "every new connection entering the router goes through the Service map")...)
			}
			chains = append(chains, chain(st, "services", chainNote(st.name, "services"))...)
		}
		for _, sc := range svcOrder {
			chains = append(chains, chain(st, sc, chainNote(st.name, sc))...)
			pick := "pick-" + strings.TrimPrefix(sc, "svc-")
			if m, ok := st.sets[pick]; ok {
				// In numgen's order (the kernel lists a hash map's elements in hash order).
				picks := append([]elemSnap(nil), m.elems...)
				sort.SliceStable(picks, func(i, j int) bool { return pickIndex(picks[i].text) < pickIndex(picks[j].text) })
				var els []string
				for _, e := range picks {
					els = append(els, e.text)
					if e.chain != "" {
						addEP(e.chain)
					}
				}
				sets = append(sets, RulesSet{Name: pick, Map: m.isMap, Elements: els, Why: "numgen's pick → endpoint chain, for " + sc})
			}
			// Affinity rules jump to endpoint chains directly.
			for _, r := range st.chains[sc].rules {
				if _, after, ok := strings.Cut(r.Text, "goto ep-"); ok {
					addEP("ep-" + strings.Fields(after)[0])
				}
			}
		}
		for _, ep := range epOrder {
			chains = append(chains, chain(st, ep, chainNote(st.name, ep))...)
		}
		if len(svcChains) > 0 || len(epOrder) > 0 {
			chains = append(chains, chain(st, "nat-postrouting", chainNote(st.name, "nat-postrouting"))...)
		}
		if in.kind != "pod" {
			if s, ok := st.sets["service-addrs"]; ok {
				var els []string
				for _, e := range s.elems {
					if has(e.addr) {
						els = append(els, e.text)
					}
				}
				if len(els) > 0 {
					sets = append(sets, RulesSet{Name: "service-addrs", Elements: els,
						Why: "Service addresses: a packet still addressed to one after DNAT found no endpoint and is refused"})
				}
			}
			if len(in.addrs) > 0 {
				chains = append(chains, chain(st, "filter-prerouting", chainNote(st.name, "filter-prerouting"))...)
				chains = append(chains, chain(st, "reject-service", chainNote(st.name, "reject-service"))...)
			}
			if len(svcChains) == 0 && len(in.addrs) > 0 {
				v.Notes = append(v.Notes, "the dispatch map has no entry for "+strings.Join(v.Addresses, ", ")+
					": no ready endpoint, so connections to it are refused by reject-service")
			}
		}
		add(st, sets, chains)
	}

	// The router's own table.
	if rt := in.router; rt != nil {
		var chains []RulesChain
		switch in.kind {
		case "pod":
			aboutPods := func(r RuleView) bool { return strings.Contains(r.Comment, "pod") }
			why := "the router's rules for every pod of the account (they match br0 or the pod network, so this pod's address too)"
			chains = append(chains, rulesWhere(rt, "input", why, aboutPods)...)
			chains = append(chains, rulesWhere(rt, "forward", why, aboutPods)...)
			chains = append(chains, rulesWhere(rt, "postrouting", why, aboutPods)...)
		case "fip", "service":
			if in.kind == "fip" || len(in.addrs) > 1 {
				fwd := func(r RuleView) bool {
					return strings.Contains(r.Text, "fip-forward") || r.Comment == "replies"
				}
				chains = append(chains, rulesWhere(rt, "forward", "traffic from the Internet side reaches the pods only through fip-forward", fwd)...)
				chains = append(chains, chain(rt, "fip-forward", "lets in what a Floating IP's DNAT rewrote")...)
			}
		}
		add(rt, nil, chains)
	}

	// The edge table on the Internet side: which Floating IPs may enter a transit link.
	if et := in.edge; et != nil {
		var sets []RulesSet
		if s, ok := et.sets["fips"]; ok {
			var els []string
			for _, e := range s.elems {
				if has(e.addr) {
					els = append(els, e.text)
				}
			}
			if len(els) > 0 {
				sets = append(sets, RulesSet{Name: "fips", Elements: els, Why: "Floating IPs allowed into the routers' transit links"})
			}
		}
		chains := chain(et, "forward", "the Internet side lets new connections into a router only to a Floating IP")
		add(et, sets, chains)
	}

	// Conntrack entries to or from the addresses, in the router.
	v.Conntrack = []ConntrackView{}
	for _, f := range in.flows {
		o, r := f.TupleOrig, f.TupleReply
		match := has(o.IP.DestinationAddress.Unmap())
		if in.kind == "pod" {
			match = match || has(o.IP.SourceAddress.Unmap()) || has(r.IP.SourceAddress.Unmap()) || has(r.IP.DestinationAddress.Unmap())
		}
		if match {
			v.Conntrack = append(v.Conntrack, conntrackView(f))
		}
	}
	sort.Slice(v.Conntrack, func(i, j int) bool { return v.Conntrack[i].Orig < v.Conntrack[j].Orig })
}

// pickIndex is the number a pick map element starts with.
func pickIndex(text string) int {
	n, err := strconv.Atoi(strings.Fields(text + " x")[0])
	if err != nil {
		return 1 << 30
	}
	return n
}

func ctTuple(t conntrack.Tuple) trace.Tuple {
	out := trace.Tuple{Proto: t.Proto.Protocol, Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap()}
	if out.Proto == 6 || out.Proto == 17 {
		out.SrcPort, out.DstPort = t.Proto.SourcePort, t.Proto.DestinationPort
	}
	return out
}

var ctTCPStates = []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func conntrackView(f conntrack.Flow) ConntrackView {
	c := trace.Conntrack{Orig: ctTuple(f.TupleOrig), Reply: ctTuple(f.TupleReply)}
	proto := trace.ProtoName(c.Orig.Proto)
	v := ConntrackView{Proto: proto, Orig: strings.TrimPrefix(c.Orig.String(), proto+" "),
		Reply: strings.TrimPrefix(c.Reply.String(), proto+" "), Timeout: f.Timeout}
	if to, ok := c.DNAT(); ok {
		v.DNAT = to.String()
	}
	if from, ok := c.SNAT(); ok {
		v.SNAT = from.String()
	}
	if tcp := f.ProtoInfo.TCP; tcp != nil && int(tcp.State) < len(ctTCPStates) {
		v.State = ctTCPStates[tcp.State]
	}
	return v
}

// WriteRulesText prints the rules the way `nft -a list` does (tables, chains, rules with their comments
// and handles), each chain and set with a line saying why it is shown, then the conntrack entries.
func WriteRulesText(w io.Writer, v *RulesView) {
	fmt.Fprintf(w, "# %s %s of account %s (%s); router netns %s\n", v.Kind, v.Name, v.Account, strings.Join(v.Addresses, ", "), v.Netns)
	for _, t := range v.Tables {
		where := "in netns " + t.Netns
		if t.Netns == "" {
			where = "on the Internet side (this machine's namespace)"
		}
		fmt.Fprintf(w, "table %s %s {   # %s\n", t.Family, t.Name, where)
		for _, s := range t.Sets {
			kind := "set"
			if s.Map {
				kind = "map"
			}
			fmt.Fprintf(w, "\t%s %s {   # %s\n", kind, s.Name, s.Why)
			fmt.Fprintf(w, "\t\telements = { %s }\n", strings.Join(s.Elements, ",\n\t\t\t     "))
			fmt.Fprintln(w, "\t}")
		}
		for _, c := range t.Chains {
			fmt.Fprintf(w, "\tchain %s {   # %s\n", c.Name, c.Why)
			if c.Header != "" {
				fmt.Fprintf(w, "\t\t%s\n", c.Header)
			}
			for _, r := range c.Rules {
				line := r.Text
				if r.Comment != "" {
					line += fmt.Sprintf(" comment %q", r.Comment)
				}
				fmt.Fprintf(w, "\t\t%s # handle %d\n", line, r.Handle)
			}
			fmt.Fprintln(w, "\t}")
		}
		fmt.Fprintln(w, "}")
	}
	if len(v.Tables) == 0 {
		fmt.Fprintln(w, "# no nftables rule names it")
	}
	// The router's entries, then each node's (a multi-node lab), each under its namespace.
	groups, count := []string{v.Netns}, map[string]int{}
	for _, c := range v.Conntrack {
		ns := c.Netns
		if ns == "" {
			ns = v.Netns
		}
		if count[ns] == 0 && ns != v.Netns {
			groups = append(groups, ns)
		}
		count[ns]++
	}
	for _, ns := range groups {
		fmt.Fprintf(w, "# conntrack entries in netns %s: %d\n", ns, count[ns])
		for _, c := range v.Conntrack {
			if c.Netns == ns || c.Netns == "" && ns == v.Netns {
				writeConntrackLine(w, c)
			}
		}
	}
	for _, n := range v.Notes {
		fmt.Fprintf(w, "# note: %s\n", n)
	}
}

// writeConntrackLine prints one conntrack entry as `pi rules` lists it.
func writeConntrackLine(w io.Writer, c ConntrackView) {
	nat := ""
	if c.DNAT != "" {
		nat += " dnat→" + c.DNAT
	}
	if c.SNAT != "" {
		nat += " snat→" + c.SNAT
	}
	state := ""
	if c.State != "" {
		state = " " + c.State
	}
	fmt.Fprintf(w, "%s %s%s  reply %s%s  (%ds left)\n", c.Proto, c.Orig, state, c.Reply, nat, c.Timeout)
}
