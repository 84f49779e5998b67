package lb

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ip4 is an IPv4 address usable as a map key.
type ip4 [4]byte

func (a ip4) String() string { return net.IP(a[:]).String() }
func (a ip4) IP() net.IP     { return net.IPv4(a[0], a[1], a[2], a[3]) }

func toIP4(ip net.IP) (ip4, bool) {
	v4 := ip.To4()
	if v4 == nil {
		return ip4{}, false
	}
	var a ip4
	copy(a[:], v4)
	return a, true
}

// dispatchKey is one element key of the service-ips verdict map:
// ip daddr . meta l4proto . th dport.
type dispatchKey struct {
	addr  ip4
	proto uint8
	port  uint16
}

func (k dispatchKey) String() string {
	return fmt.Sprintf("%s %s/%d", k.addr, protoName(k.proto), k.port)
}

type ip4port struct {
	addr ip4
	port uint16
}

// epChain is an endpoint chain. Its name encodes everything its rules depend
// on, so an endpoint chain is only ever created or deleted, never rewritten.
type epChain struct {
	name   string
	addr   ip4
	port   uint16
	affSet string // "" without ClientIP affinity
}

// svcChain is a service-port chain (optional affinity lookups, then numgen
// over its pick map) with the endpoint chains it picks from.
type svcChain struct {
	name        string
	endpoints   []epChain
	fingerprint string // identifies the rules; a changed one is flushed and rewritten
}

// pickMap names the vmap numgen indexes; "svc-" and "pick-" share the suffix.
func (c svcChain) pickMap() string { return "pick-" + c.name[len("svc-"):] }

// svcPart is everything one service puts into the table. Parts are immutable
// once built, so an unchanged service reuses its part (pointer-equal) and the
// incremental diff skips it without looking inside.
type svcPart struct {
	svc       Service // deep copy of the input, to recognise it next time
	addrs     []ip4   // ClusterIP + ExternalIPs
	claims    []dispatchKey
	dispatch  map[dispatchKey]string // ports with endpoints -> service chain
	svcChains map[string]svcChain
	epChains  map[string]epChain
	affSets   []string
	udp       map[dispatchKey]map[ip4port]bool // UDP ports with endpoints
}

// state is the desired (or last applied) content of the table.
type state struct {
	parts    map[string]*svcPart // by service name
	addrRefs map[ip4]int         // service address -> number of services using it
}

func protoNumber(p string) (uint8, error) {
	switch strings.ToUpper(p) {
	case "", "TCP":
		return unix.IPPROTO_TCP, nil
	case "UDP":
		return unix.IPPROTO_UDP, nil
	case "SCTP":
		return unix.IPPROTO_SCTP, nil
	}
	return 0, fmt.Errorf("protocol %q is not supported (use TCP, UDP or SCTP)", p)
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// chainPart keeps names readable for `nft list` while guaranteeing they only
// contain characters that are safe in nft chain names.
func chainPart(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// maxNameLen keeps chain and set names well below the kernel limit
// (NFT_NAME_MAXLEN 256) whatever the service name.
const maxNameLen = 200

// build turns the services into the desired table content, reusing the parts
// of prev for services that did not change. A service that cannot be
// programmed is left out (the others still are) and reported in the returned
// error, which names the service and what to fix.
func build(services []Service, prev *state) (*state, error) {
	st := &state{parts: make(map[string]*svcPart, len(services)), addrRefs: map[ip4]int{}}
	owner := map[dispatchKey]string{}
	var errs []error
	for i := range services {
		svc := &services[i]
		if _, dup := st.parts[svc.Name]; dup {
			errs = append(errs, fmt.Errorf("lb: service %q is listed twice; pass each service once", svc.Name))
			continue
		}
		var part *svcPart
		if prev != nil {
			if p := prev.parts[svc.Name]; p != nil && equalService(&p.svc, svc) {
				part = p
			}
		}
		if part == nil {
			var err error
			if part, err = buildService(svc); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := claim(owner, svc.Name, part.claims); err != nil {
			errs = append(errs, err)
			continue
		}
		st.parts[svc.Name] = part
		for _, a := range part.addrs {
			st.addrRefs[a]++
		}
	}
	return st, errors.Join(errs...)
}

// claim registers a service's address/port claims unless one is taken.
func claim(owner map[dispatchKey]string, name string, keys []dispatchKey) error {
	for _, k := range keys {
		if o, dup := owner[k]; dup {
			return fmt.Errorf("lb: services %q and %q both claim %s; give one of them another IP or port", o, name, k)
		}
	}
	for _, k := range keys {
		owner[k] = name
	}
	return nil
}

// buildService computes the table content of one service.
func buildService(in *Service) (*svcPart, error) {
	svc := copyService(in)
	part := &svcPart{svc: svc, dispatch: map[dispatchKey]string{}, svcChains: map[string]svcChain{},
		epChains: map[string]epChain{}, udp: map[dispatchKey]map[ip4port]bool{}}
	if svc.Name == "" {
		return nil, fmt.Errorf("lb: a service has an empty name; every service needs a unique name")
	}
	if len(svc.Name) > 63 {
		return nil, fmt.Errorf("lb: service %q: name longer than 63 characters; use a DNS label", svc.Name)
	}
	if svc.ClusterIP == nil {
		return part, nil // headless: DNS only, no rules
	}
	cip, ok := toIP4(svc.ClusterIP)
	if !ok {
		return nil, fmt.Errorf("lb: service %q: ClusterIP %s is not an IPv4 address", svc.Name, svc.ClusterIP)
	}
	part.addrs = append(part.addrs, cip)
	for _, e := range svc.ExternalIPs {
		a, ok := toIP4(e)
		if !ok {
			return nil, fmt.Errorf("lb: service %q: external IP %s is not an IPv4 address", svc.Name, e)
		}
		if !containsIP4(part.addrs, a) {
			part.addrs = append(part.addrs, a)
		}
	}
	seen := map[dispatchKey]bool{}
	for _, p := range svc.Ports {
		proto, err := protoNumber(p.Protocol)
		if err != nil {
			return nil, fmt.Errorf("lb: service %q port %d: %w", svc.Name, p.Port, err)
		}
		if p.Port == 0 {
			return nil, fmt.Errorf("lb: service %q: port %q has port number 0", svc.Name, p.Name)
		}
		for _, a := range part.addrs {
			k := dispatchKey{a, proto, p.Port}
			if seen[k] {
				return nil, fmt.Errorf("lb: service %q declares %s twice", svc.Name, k)
			}
			seen[k] = true
			part.claims = append(part.claims, k)
		}
		eps, err := uniqueEndpoints(svc.Name, p)
		if err != nil {
			return nil, err
		}
		if len(eps) == 0 {
			// No dispatch element: the packet stays addressed to the
			// service IP and the reject chain answers it at once.
			continue
		}
		base := chainPart(svc.Name) + "-" + protoName(proto) + "-" + strconv.Itoa(int(p.Port))
		sc := svcChain{name: "svc-" + base}
		var fp strings.Builder
		for _, ep := range eps {
			suffix := base + "-" + ep.addr.String() + "-" + strconv.Itoa(int(ep.port))
			ec := epChain{name: "ep-" + suffix, addr: ep.addr, port: ep.port}
			if svc.SessionAffinity {
				// Affinity changes the endpoint chain's rules, so it is part
				// of the name: toggling it replaces the chain and its set.
				ec.name += "-a"
				ec.affSet = "aff-" + suffix
				part.affSets = append(part.affSets, ec.affSet)
			}
			if len(ec.name) > maxNameLen {
				return nil, fmt.Errorf("lb: service %q: generated chain name %q too long", svc.Name, ec.name)
			}
			sc.endpoints = append(sc.endpoints, ec)
			part.epChains[ec.name] = ec
			fp.WriteString(ec.name)
			fp.WriteByte(',')
		}
		sc.fingerprint = fp.String()
		part.svcChains[sc.name] = sc
		for _, a := range part.addrs {
			part.dispatch[dispatchKey{a, proto, p.Port}] = sc.name
		}
		if proto == unix.IPPROTO_UDP {
			set := map[ip4port]bool{}
			for _, ep := range eps {
				set[ep] = true
			}
			for _, a := range part.addrs {
				part.udp[dispatchKey{a, proto, p.Port}] = set
			}
		}
	}
	return part, nil
}

func containsIP4(list []ip4, a ip4) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// uniqueEndpoints validates and de-duplicates endpoints, sorted so that the
// chain fingerprint does not depend on the caller's ordering.
func uniqueEndpoints(svc string, p Port) ([]ip4port, error) {
	seen := map[ip4port]bool{}
	var out []ip4port
	for _, e := range p.Endpoints {
		a, ok := toIP4(e.IP)
		if !ok {
			return nil, fmt.Errorf("lb: service %q port %d: endpoint %s is not an IPv4 address", svc, p.Port, e.IP)
		}
		if e.Port == 0 {
			return nil, fmt.Errorf("lb: service %q port %d: endpoint %s has target port 0", svc, p.Port, e.IP)
		}
		k := ip4port{a, e.Port}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].addr != out[j].addr {
			return string(out[i].addr[:]) < string(out[j].addr[:])
		}
		return out[i].port < out[j].port
	})
	return out, nil
}

// copyService deep-copies s so later changes by the caller cannot alter the
// cached input.
func copyService(s *Service) Service {
	c := *s
	c.ClusterIP = cloneIP(s.ClusterIP)
	c.ExternalIPs = make([]net.IP, len(s.ExternalIPs))
	for i, ip := range s.ExternalIPs {
		c.ExternalIPs[i] = cloneIP(ip)
	}
	c.Ports = make([]Port, len(s.Ports))
	for i, p := range s.Ports {
		c.Ports[i] = p
		c.Ports[i].Endpoints = make([]Endpoint, len(p.Endpoints))
		for j, e := range p.Endpoints {
			c.Ports[i].Endpoints[j] = Endpoint{IP: cloneIP(e.IP), Port: e.Port}
		}
	}
	return c
}

func cloneIP(ip net.IP) net.IP {
	if ip == nil {
		return nil
	}
	return append(net.IP(nil), ip...)
}

// equalService reports whether two inputs program the same rules; it does not
// allocate, so checking 1,000 unchanged services stays cheap.
func equalService(a, b *Service) bool {
	if a.Name != b.Name || a.SessionAffinity != b.SessionAffinity || !a.ClusterIP.Equal(b.ClusterIP) ||
		(a.ClusterIP == nil) != (b.ClusterIP == nil) ||
		len(a.ExternalIPs) != len(b.ExternalIPs) || len(a.Ports) != len(b.Ports) {
		return false
	}
	for i := range a.ExternalIPs {
		if !a.ExternalIPs[i].Equal(b.ExternalIPs[i]) {
			return false
		}
	}
	for i := range a.Ports {
		pa, pb := &a.Ports[i], &b.Ports[i]
		if pa.Protocol != pb.Protocol || pa.Port != pb.Port || pa.Name != pb.Name || len(pa.Endpoints) != len(pb.Endpoints) {
			return false
		}
		for j := range pa.Endpoints {
			if pa.Endpoints[j].Port != pb.Endpoints[j].Port || !pa.Endpoints[j].IP.Equal(pb.Endpoints[j].IP) {
				return false
			}
		}
	}
	return true
}
