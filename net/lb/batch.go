package lb

import (
	"maps"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// batch queues one nftables transaction and counts what it sends.
type batch struct {
	s   *Syncer
	c   *nftables.Conn
	ops int
	err error
	// affKept are live ClientIP affinity entries full puts back into the
	// recreated sets, by set name.
	affKept map[string][]nftables.SetElement
}

func (b *batch) setErr(err error) {
	if b.err == nil && err != nil {
		b.err = err
	}
}

func (b *batch) chain(name string) *nftables.Chain {
	return &nftables.Chain{Table: b.s.table, Name: name}
}

func (b *batch) addChain(c *nftables.Chain) {
	b.c.AddChain(c)
	b.ops++
}

func (b *batch) addRules(chain string, rules ...[]expr.Any) {
	c := b.chain(chain)
	for _, r := range rules {
		b.c.AddRule(&nftables.Rule{Table: b.s.table, Chain: c, Exprs: r})
		b.ops++
	}
}

// elemChunk bounds the elements per netlink message: the element list is one
// attribute whose 16-bit length overflows past ~64 KiB (about 700 dispatch
// elements), which the kernel then misparses.
const elemChunk = 256

func (b *batch) addElems(set *nftables.Set, elems []nftables.SetElement) {
	for len(elems) > 0 {
		n := min(len(elems), elemChunk)
		b.setErr(b.c.SetAddElements(set, elems[:n]))
		elems = elems[n:]
	}
}

func (b *batch) delElems(set *nftables.Set, elems []nftables.SetElement) {
	for len(elems) > 0 {
		n := min(len(elems), elemChunk)
		b.setErr(b.c.SetDeleteElements(set, elems[:n]))
		elems = elems[n:]
	}
}

func (b *batch) serviceIPs() *nftables.Set {
	return &nftables.Set{Table: b.s.table, Name: mapServiceIPs, IsMap: true, Concatenation: true,
		KeyType: keyServiceIPs, DataType: nftables.TypeVerdict, ID: b.s.setID()}
}

func (b *batch) serviceAddrs() *nftables.Set {
	return &nftables.Set{Table: b.s.table, Name: setServiceAddrs, KeyType: nftables.TypeIPAddr, ID: b.s.setID()}
}

func (s *Syncer) setID() uint32 {
	s.nextSetID++
	return s.nextSetID
}

func (b *batch) addAffinitySet(name string) {
	kept := b.affKept[name]
	b.setErr(b.c.AddSet(&nftables.Set{Table: b.s.table, Name: name, KeyType: nftables.TypeIPAddr,
		HasTimeout: true, Timeout: AffinityTimeout, Dynamic: true, ID: b.s.setID()}, kept))
	b.ops += 1 + len(kept)
}

func (b *batch) delSet(name string) {
	b.c.DelSet(&nftables.Set{Table: b.s.table, Name: name})
	b.ops++
}

func (b *batch) addEndpointChain(e epChain) {
	b.addChain(b.chain(e.name))
	b.addRules(e.name, b.s.endpointRules(e)...)
}

// pickMap is the named vmap `numgen random mod N` indexes. A named map (not
// an anonymous one) so that `nft list` shows its host-endian keys as 0, 1, 2
// (its key type prints as "type 0": nft has no name for a bare integer).
func (b *batch) pickMap(c svcChain) *nftables.Set {
	return &nftables.Set{Table: b.s.table, Name: c.pickMap(), ID: b.s.setID(), IsMap: true,
		KeyType: nftables.TypeInteger, DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

// writeServiceChain creates a service chain and its pick map, or (existing)
// flushes and refills both.
func (b *batch) writeServiceChain(c svcChain, existing bool) {
	pick := b.pickMap(c)
	if existing {
		b.c.FlushChain(b.chain(c.name))
		b.c.FlushSet(pick)
	} else {
		b.setErr(b.c.AddSet(pick, nil))
		b.c.AddChain(b.chain(c.name))
	}
	b.ops += 2
	elems := make([]nftables.SetElement, len(c.endpoints))
	for i, e := range c.endpoints {
		elems[i] = nftables.SetElement{
			// numgen writes a host-endian u32 into the register.
			Key:         nativeU32(uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.name},
		}
	}
	b.addElems(pick, elems)
	b.ops += len(elems)

	if b.s.nodeBridge == "" {
		b.addRules(c.name, markForMasquerade(b.s.podNet))
	}
	if b.s.selfPicks {
		for _, e := range c.endpoints {
			b.addRules(c.name, selfPick(e))
		}
	}
	for _, e := range c.endpoints {
		if e.affSet != "" {
			b.addRules(c.name, affinityLookup(e.affSet, e.name))
		}
	}
	b.addRules(c.name, numgenDispatch(len(c.endpoints), pick.Name))
}

func dispatchElems(m map[dispatchKey]string, keys []dispatchKey) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(keys))
	for _, k := range keys {
		out = append(out, dispatchElement(k, m[k]))
	}
	return out
}

func addrElems(addrs []ip4) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: append([]byte(nil), a[:]...)})
	}
	return out
}

// full replaces the table whole: add (so the delete cannot fail), delete,
// then create everything, all in one transaction, so traffic never sees a
// half-built table.
func (b *batch) full(want *state) {
	t := b.s.table
	b.c.AddTable(t)
	b.c.DelTable(t)
	b.c.AddTable(t)
	b.ops += 3

	addrs := make([]ip4, 0, len(want.addrRefs))
	for a := range want.addrRefs {
		addrs = append(addrs, a)
	}
	sortAddrs(addrs)
	// A node's table rejects nothing (WithNodeBridge): no address set, no reject chain.
	rejects := b.s.nodeBridge == ""
	if rejects {
		sa := b.serviceAddrs()
		b.setErr(b.c.AddSet(sa, nil))
		b.addElems(sa, addrElems(addrs))
		b.ops += 1 + len(addrs)
	}
	b.setErr(b.c.AddSet(b.serviceIPs(), nil))
	b.ops++
	b.addChain(b.chain(chainServices))
	if rejects {
		b.addChain(b.chain(chainReject))
	}

	dispatch := map[dispatchKey]string{}
	for _, name := range slices.Sorted(maps.Keys(want.parts)) {
		p := want.parts[name]
		for _, set := range p.affSets {
			b.addAffinitySet(set)
		}
		for _, ec := range slices.Sorted(maps.Keys(p.epChains)) {
			b.addEndpointChain(p.epChains[ec])
		}
		for _, sc := range slices.Sorted(maps.Keys(p.svcChains)) {
			b.writeServiceChain(p.svcChains[sc], false)
		}
		for k, v := range p.dispatch {
			dispatch[k] = v
		}
	}
	if keys := sortedDispatch(dispatch); len(keys) > 0 {
		b.addElems(b.serviceIPs(), dispatchElems(dispatch, keys))
		b.ops += len(keys)
	}
	b.addRules(chainServices, serviceDispatchRule())
	if rejects {
		b.addRules(chainReject, rejectRules()...)
	}
	for _, bc := range b.s.baseChains() {
		b.addChain(&nftables.Chain{Table: t, Name: bc.name, Type: bc.typ, Hooknum: bc.hook,
			Priority: nftables.ChainPriorityRef(bc.priority)})
		b.addRules(bc.name, bc.rules(b.s)...)
	}
}

// change is one service whose part differs between the applied and the
// wanted state (nil: absent on that side).
type change struct {
	name       string
	have, want *svcPart
}

var emptyPart = &svcPart{}

// changes lists the services whose parts are not pointer-equal: unchanged
// services reuse their part, so this is O(services) with no deep compare.
func changes(have, want *state) []change {
	var out []change
	for name, w := range want.parts {
		if h := have.parts[name]; h != w {
			if h == nil {
				h = emptyPart
			}
			out = append(out, change{name, h, w})
		}
	}
	for name, h := range have.parts {
		if _, ok := want.parts[name]; !ok {
			out = append(out, change{name, h, emptyPart})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// incremental sends only what changed. Order matters inside the transaction:
// objects are created before anything refers to them and deleted after the
// last reference is gone.
func (b *batch) incremental(have, want *state) {
	cs := changes(have, want)
	// 1. new affinity sets and endpoint chains
	for _, c := range cs {
		for _, set := range c.want.affSets {
			if !slices.Contains(c.have.affSets, set) {
				b.addAffinitySet(set)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(c.want.epChains)) {
			if _, ok := c.have.epChains[name]; !ok {
				b.addEndpointChain(c.want.epChains[name])
			}
		}
	}
	// 2. new and changed service chains
	for _, c := range cs {
		for _, name := range slices.Sorted(maps.Keys(c.want.svcChains)) {
			wc := c.want.svcChains[name]
			hc, ok := c.have.svcChains[name]
			switch {
			case !ok:
				b.writeServiceChain(wc, false)
			case hc.fingerprint != wc.fingerprint:
				b.writeServiceChain(wc, true)
			}
		}
	}
	// 3. dispatch map: all deletions first, so a key can move between
	// services in one Sync
	var del, add []nftables.SetElement
	for _, c := range cs {
		for _, k := range sortedDispatch(c.have.dispatch) {
			if w, ok := c.want.dispatch[k]; !ok || w != c.have.dispatch[k] {
				del = append(del, dispatchElement(k, c.have.dispatch[k]))
			}
		}
		for _, k := range sortedDispatch(c.want.dispatch) {
			if h, ok := c.have.dispatch[k]; !ok || h != c.want.dispatch[k] {
				add = append(add, dispatchElement(k, c.want.dispatch[k]))
			}
		}
	}
	b.delElems(b.serviceIPs(), del)
	b.addElems(b.serviceIPs(), add)
	b.ops += len(del) + len(add)
	// 4. service addresses (reject set); several services may share one
	var delA, addA []ip4
	seen := map[ip4]bool{}
	for _, c := range cs {
		for _, list := range [][]ip4{c.have.addrs, c.want.addrs} {
			for _, a := range list {
				if seen[a] {
					continue
				}
				seen[a] = true
				h, w := have.addrRefs[a] > 0, want.addrRefs[a] > 0
				if h && !w {
					delA = append(delA, a)
				} else if w && !h {
					addA = append(addA, a)
				}
			}
		}
	}
	sortAddrs(delA)
	sortAddrs(addA)
	if b.s.nodeBridge == "" {
		b.delElems(b.serviceAddrs(), addrElems(delA))
		b.addElems(b.serviceAddrs(), addrElems(addA))
		b.ops += len(delA) + len(addA)
	}
	// 5. unreferenced objects: service chains + pick maps, endpoint chains,
	// affinity sets
	for _, c := range cs {
		for _, name := range slices.Sorted(maps.Keys(c.have.svcChains)) {
			if _, ok := c.want.svcChains[name]; !ok {
				b.c.DelChain(b.chain(name))
				b.ops++
				b.delSet(c.have.svcChains[name].pickMap())
			}
		}
	}
	for _, c := range cs {
		for _, name := range slices.Sorted(maps.Keys(c.have.epChains)) {
			if _, ok := c.want.epChains[name]; !ok {
				b.c.DelChain(b.chain(name))
				b.ops++
			}
		}
		for _, set := range c.have.affSets {
			if !slices.Contains(c.want.affSets, set) {
				b.delSet(set)
			}
		}
	}
}

func sortAddrs(a []ip4) {
	sort.Slice(a, func(i, j int) bool { return string(a[i][:]) < string(a[j][:]) })
}

func sortedDispatch(m map[dispatchKey]string) []dispatchKey {
	out := make([]dispatchKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.addr != b.addr {
			return string(a.addr[:]) < string(b.addr[:])
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.port < b.port
	})
	return out
}
