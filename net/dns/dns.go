// Package dns is the per-account DNS server: it answers Service names of one
// account from records the controller sets, and forwards everything else to
// the Internet-side resolvers.
//
// A Server answers <svc>, <svc>.<ns>, <svc>.<ns>.svc and
// <svc>.<ns>.svc.<zone> with A records (TTL 5; a headless service gets all
// its pod IPs), PTR for those addresses, NXDOMAIN for unknown names in the
// cluster namespace/zone and in 10.in-addr.arpa, and forwards other names to
// Options.Upstream (SERVFAIL when there is none or it does not answer within
// UpstreamTimeout). Its sockets are opened inside the account's netns, so
// the servers of two accounts can bind the same address and never meet.
package dns

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/pilab/pi/net/netns"
)

// Record is the DNS view of one Service.
type Record struct {
	Name string   // service name
	IPs  []net.IP // ClusterIP, or pod IPs for a headless service
}

// Options configures a Server.
type Options struct {
	Zone      string // cluster domain, default "cluster.local"
	Namespace string // default "default"
	// Upstream resolvers as host:port, tried in order; empty => SERVFAIL
	// for every name that is not the account's.
	Upstream []string
	// UpstreamNetns is the netns path upstream queries are sent from (""
	// = the caller's own netns, i.e. the host).
	UpstreamNetns string
}

const (
	// TTL of every answer: short, so endpoint changes of headless services
	// show up quickly.
	TTL = 5
	// UpstreamTimeout bounds the whole forwarding of one query.
	UpstreamTimeout = 2 * time.Second
)

// Server answers one account's names. It is safe for concurrent use.
type Server struct {
	opt      Options
	suffixes []string // ".<ns>.", ".<ns>.svc.", ".<ns>.svc.<zone>." (lower case)
	zone     string   // "<zone>."
	// ents are the names above the service names (the zone apex and the
	// empty non-terminals): they exist, so they answer NODATA, never
	// NXDOMAIN, which a caching resolver could apply to everything below.
	ents    map[string]bool
	soa     *dns.SOA
	records atomic.Pointer[table]

	mu      sync.Mutex
	servers []*dns.Server
	closed  bool
}

// table is an immutable snapshot of the records, swapped atomically.
type table struct {
	names map[string][]net.IP // every accepted name form, lower case, fqdn
	ptr   map[string]string   // reverse name -> service fqdn
}

// NewServer returns a Server without records; ListenIn starts serving.
func NewServer(o Options) *Server {
	if o.Zone == "" {
		o.Zone = "cluster.local"
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	o.Zone = strings.Trim(strings.ToLower(o.Zone), ".")
	o.Namespace = strings.Trim(strings.ToLower(o.Namespace), ".")
	zone := dns.Fqdn(o.Zone)
	ns := o.Namespace
	s := &Server{
		opt:      o,
		zone:     zone,
		suffixes: []string{"." + ns + ".", "." + ns + ".svc.", "." + ns + ".svc." + zone},
		ents: map[string]bool{zone: true, "svc." + zone: true, ns + ".svc." + zone: true,
			ns + ".svc.": true, ns + ".": true},
		soa: &dns.SOA{
			Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
			Ns:  "ns.dns." + zone, Mbox: "hostmaster." + zone,
			Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: TTL,
		},
	}
	s.records.Store(&table{names: map[string][]net.IP{}, ptr: map[string]string{}})
	return s
}

// SetRecords replaces all records at once; queries see either the old or the
// new set, never a mix. Non-IPv4 addresses and empty names are ignored.
func (s *Server) SetRecords(rs []Record) {
	t := &table{names: make(map[string][]net.IP, 4*len(rs)), ptr: map[string]string{}}
	for _, r := range rs {
		name := strings.Trim(strings.ToLower(r.Name), ".")
		if name == "" {
			continue
		}
		var ips []net.IP
		for _, ip := range r.IPs {
			if v4 := ip.To4(); v4 != nil {
				ips = append(ips, append(net.IP(nil), v4...))
			}
		}
		t.names[name+"."] = ips
		for _, suf := range s.suffixes {
			t.names[name+suf] = ips
		}
		fqdn := name + s.suffixes[2]
		for _, ip := range ips {
			if rev, err := dns.ReverseAddr(ip.String()); err == nil {
				if _, taken := t.ptr[rev]; !taken {
					t.ptr[rev] = fqdn
				}
			}
		}
	}
	s.records.Store(t)
}

// ListenIn opens UDP and TCP sockets on addr (e.g. "10.244.0.2:53") inside
// the netns at netnsPath ("" = the caller's netns) and serves them from
// ordinary goroutines until Close. It returns once both are serving.
func (s *Server) ListenIn(netnsPath, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("dns: ListenIn %s on a closed server", addr)
	}
	var pc net.PacketConn
	var ln net.Listener
	open := func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			pc.Close()
			return err
		}
		return nil
	}
	var err error
	if netnsPath == "" {
		err = open()
	} else {
		err = netns.Do(netnsPath, open)
	}
	if err != nil {
		return fmt.Errorf("dns: listen on %s in netns %q: %w (is the DNS address configured on the router?)", addr, netnsPath, err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: dns.DefaultMsgSize}
	tcp := &dns.Server{Listener: ln, Handler: s}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		failed := make(chan error, 1)
		go func(srv *dns.Server) { failed <- srv.ActivateAndServe() }(srv)
		select {
		case <-started:
		case err := <-failed:
			pc.Close()
			ln.Close()
			return fmt.Errorf("dns: serve %s in netns %q: %w", addr, netnsPath, err)
		}
		// Registered only once started: Shutdown of a server that has
		// not started yet would fail and leave it running.
		s.servers = append(s.servers, srv)
	}
	return nil
}

// Close stops serving and closes every socket. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, srv := range s.servers {
		if err := srv.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	s.servers = nil
	return errors.Join(errs...)
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := s.answer(w, r)
	if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func (s *Server) answer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if r.Opcode != dns.OpcodeQuery {
		return m.SetRcode(r, dns.RcodeNotImplemented)
	}
	if len(r.Question) != 1 {
		return m.SetRcode(r, dns.RcodeFormatError)
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	t := s.records.Load()

	if ips, ok := t.names[name]; ok {
		m.SetReply(r)
		m.Authoritative = true
		m.RecursionAvailable = true
		if q.Qclass == dns.ClassINET && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
			for _, ip := range ips {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: TTL}, A: ip})
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{s.soa} // NODATA, negatively cacheable
		}
		s.withEdns(m, r)
		return m
	}
	if target, ok := t.ptr[name]; ok {
		m.SetReply(r)
		m.Authoritative = true
		m.RecursionAvailable = true
		if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
			m.Answer = []dns.RR{&dns.PTR{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: TTL}, Ptr: target}}
		} else {
			m.Ns = []dns.RR{s.soa}
		}
		s.withEdns(m, r)
		return m
	}
	if s.ents[name] {
		m.SetReply(r)
		m.Authoritative = true
		m.RecursionAvailable = true
		if name == s.zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
			soa := *s.soa
			soa.Hdr.Name = q.Name
			m.Answer = []dns.RR{&soa}
		} else {
			m.Ns = []dns.RR{s.soa}
		}
		s.withEdns(m, r)
		return m
	}
	if s.ours(name) {
		m.SetRcode(r, dns.RcodeNameError)
		m.Authoritative = true
		m.RecursionAvailable = true
		m.Ns = []dns.RR{s.soa}
		s.withEdns(m, r)
		return m
	}
	return s.forward(w, r)
}

// ours reports names the account's server is authoritative for: the
// namespace forms, the cluster zone and private reverse lookups (these must
// never leak to the Internet's resolvers).
func (s *Server) ours(name string) bool {
	for _, suf := range s.suffixes {
		if strings.HasSuffix(name, suf) || name == suf[1:] {
			return true
		}
	}
	return dns.IsSubDomain(s.zone, name) || dns.IsSubDomain("10.in-addr.arpa.", name)
}

func (s *Server) withEdns(m, r *dns.Msg) {
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
}

// forward sends the query to the upstreams in turn within UpstreamTimeout.
// Sockets are opened inside UpstreamNetns (the Internet side), never in the
// account's netns.
func (s *Server) forward(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	fail := func() *dns.Msg {
		m := new(dns.Msg).SetRcode(r, dns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m
	}
	ups := s.opt.Upstream
	if len(ups) == 0 {
		return fail()
	}
	_, clientTCP := w.RemoteAddr().(*net.TCPAddr)
	deadline := time.Now().Add(UpstreamTimeout)
	for i, up := range ups {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		// Leave the remaining upstreams their share of the budget.
		per := left / time.Duration(len(ups)-i)
		resp, err := s.exchange(r, up, "udp", per)
		if err == nil && resp.Truncated && clientTCP {
			if left = time.Until(deadline); left > 0 {
				resp, err = s.exchange(r, up, "tcp", left)
			}
		}
		if err == nil {
			resp.Id = r.Id
			return resp
		}
	}
	return fail()
}

func (s *Server) exchange(r *dns.Msg, upstream, network string, timeout time.Duration) (*dns.Msg, error) {
	var c net.Conn
	dial := func() (err error) {
		c, err = net.DialTimeout(network, upstream, timeout)
		return err
	}
	var err error
	if s.opt.UpstreamNetns == "" {
		err = dial()
	} else {
		err = netns.Do(s.opt.UpstreamNetns, dial)
	}
	if err != nil {
		return nil, err
	}
	conn := &dns.Conn{Conn: c, UDPSize: dns.DefaultMsgSize}
	defer conn.Close()
	client := &dns.Client{Net: network, UDPSize: dns.DefaultMsgSize, Timeout: timeout}
	resp, _, err := client.ExchangeWithConn(r, conn)
	return resp, err
}

// UpstreamFromResolvConf returns the nameservers of a resolv.conf as
// host:port, or nil if the file cannot be read.
func UpstreamFromResolvConf(path string) []string {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, srv := range cfg.Servers {
		out = append(out, net.JoinHostPort(srv, cfg.Port))
	}
	return out
}
