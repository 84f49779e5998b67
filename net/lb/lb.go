// Package lb load-balances an account's Services in one nftables table that
// lives in the account's router netns.
//
// Layout (family ip), close to kube-proxy's nftables mode:
//
//	nat-prerouting (dstnat; + nat-output with WithRouterOutput)  jump services
//	services        ip daddr . meta l4proto . th dport vmap @service-ips
//	svc-<svc>-<proto>-<port>   [mark for masquerade if client in the pod network]
//	                           [ip saddr @aff-<ep> goto ep-<ep>  (ClientIP affinity)]
//	                           numgen random mod N vmap @pick-<svc>-<proto>-<port>
//	pick-<svc>-<proto>-<port>  map { 0 : goto ep-..., 1 : goto ep-..., ... }
//	ep-<svc>-<proto>-<port>-<ip>-<port>   [update @aff-<ep> { ip saddr }] dnat to ip:port
//	filter-prerouting / filter-output (dstnat+10)  ip daddr @service-addrs goto reject-service
//	                                               ip daddr <service CIDR> goto reject-service
//	nat-postrouting (srcnat)   masquerade connections carrying MasqueradeMark
//
// A packet still addressed to a service IP after dstnat found no endpoint (or
// an undeclared port) and is rejected at once: TCP reset, ICMP port unreachable.
//
// Sync is level-triggered: it takes the whole desired list, the first call
// (and the first after any failure) replaces the table in one batch, later
// calls send one batch with only what changed: the changed service's chain
// and pick map are rewritten, added endpoints get a chain, removed ones lose
// theirs, and the dispatch map gets or loses elements. Services whose input
// is unchanged are not looked at again.
//
// The table is also rebuilt whole every full-sync period (WithFullSyncPeriod,
// DefaultFullSyncPeriod), by a timer if no Sync comes, so rules changed
// behind pilab's back come back. A rebuild carries the live ClientIP affinity
// entries of the kernel's table over (a restarted daemon's first one too);
// only a failed read of them starts clients afresh.
package lb

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/pilab/pi/net/netns"
	"golang.org/x/sys/unix"
)

// Endpoint is one ready backend of a service port.
type Endpoint struct {
	IP   net.IP
	Port uint16 // resolved targetPort for this service port
}

// Port is one declared port of a service with its ready endpoints.
type Port struct {
	Name      string
	Protocol  string // TCP (default), UDP or SCTP
	Port      uint16
	Endpoints []Endpoint
}

// Service is the load-balancing view of a Service.
type Service struct {
	Name        string
	ClusterIP   net.IP   // nil for headless: no rules
	ExternalIPs []net.IP // Floating IPs: same dispatch, client address preserved
	Ports       []Port
	// SessionAffinity is ClientIP affinity: a client keeps its endpoint
	// for AffinityTimeout after its last new connection, like Kubernetes.
	SessionAffinity bool
}

// Stats describes what one Sync sent to the kernel.
type Stats struct {
	Full bool // the table was rebuilt whole
	// Ops counts what was sent: each map/set element, each chain or set
	// added, flushed or deleted, each rule (0: nothing changed).
	Ops int
	// ConntrackDeleted counts stale UDP conntrack entries removed because
	// their endpoint (or the whole service port) went away.
	ConntrackDeleted int
}

const (
	// DefaultPodCIDR is the account network; clients from it are masqueraded.
	DefaultPodCIDR = "10.244.0.0/16"
	// DefaultServiceCIDR is where ClusterIPs live. Traffic to any address in
	// it that no service port took is rejected, so it never leaves the router
	// towards the Internet side.
	DefaultServiceCIDR = "10.96.0.0/12"
	// MasqueradeMark is the packet mark bit (as in kube-proxy) that service
	// chains set on connections to masquerade in nat-postrouting.
	MasqueradeMark uint32 = 0x4000
	// AffinityTimeout is Kubernetes' default ClientIP affinity timeout.
	AffinityTimeout = 10800 * time.Second
)

// Netlink socket buffers for a full rebuild: the kernel queues one ack (and
// for rules one echo) per message before userspace reads any, so the receive
// buffer must hold them all (1,000 services x 10 endpoints is ~35k messages).
const (
	sockSendBuf = 64 << 20
	sockRecvBuf = 128 << 20
)

// Option tunes a Syncer.
type Option func(*Syncer) error

// WithPodCIDR sets the network whose clients are masqueraded (DefaultPodCIDR
// otherwise).
func WithPodCIDR(cidr string) Option {
	return func(s *Syncer) error {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil || n.IP.To4() == nil {
			return fmt.Errorf("lb: pod CIDR %q is not an IPv4 CIDR", cidr)
		}
		n.IP = n.IP.To4()
		s.podNet = n
		return nil
	}
}

// WithServiceCIDR sets the ClusterIP range (DefaultServiceCIDR otherwise).
func WithServiceCIDR(cidr string) Option {
	return func(s *Syncer) error {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil || n.IP.To4() == nil {
			return fmt.Errorf("lb: service CIDR %q is not an IPv4 CIDR", cidr)
		}
		n.IP = n.IP.To4()
		s.svcNet = n
		return nil
	}
}

// DefaultFullSyncPeriod is how often the table is rebuilt whole even when
// nothing changed (kube-proxy's FullSyncPeriod is an hour; pilab's tables
// are small and a learner who deletes a rule by hand should see it come back
// while still looking).
const DefaultFullSyncPeriod = 60 * time.Second

// WithFullSyncPeriod sets how often the table is rebuilt whole from the last
// desired state, repairing anything changed behind pilab's back
// (DefaultFullSyncPeriod otherwise; 0 rebuilds only after a failure).
func WithFullSyncPeriod(d time.Duration) Option {
	return func(s *Syncer) error {
		if d < 0 {
			return fmt.Errorf("lb: full sync period %s is negative", d)
		}
		s.fullPeriod = d
		return nil
	}
}

// WithRouterOutput also load-balances connections opened from the router
// netns itself (a nat-output hook). Off by default: nothing in the router
// needs Services, and the extra hook doubles the kernel's per-commit
// validation work on big tables.
func WithRouterOutput() Option {
	return func(s *Syncer) error {
		s.routerOutput = true
		return nil
	}
}

// WithNodeBridge makes the table a node's share of an account's Services in a multi-node lab, as
// kube-proxy runs on every node: a pod's connection to a Service is DNAT'd on its own node, as its frames
// enter the account's bridge there (br_netfilter hands bridged IPv4 to the IP hooks), and crosses the
// overlay once, straight to the endpoint's node, instead of twice through the account's router. A node
// holds the bridges of several accounts with the same addresses, so the table only looks at packets from
// bridge (the account's), and puts them in conntrack zone zone (the account's) before conntrack sees them,
// so two accounts' identical connections never share an entry. No masquerade: the endpoint answers the
// client's own address on the same segment, through the client's node, whose conntrack undoes the DNAT.
// A client that picked itself is left to the router (the ep chain returns), whose masquerade makes the
// hairpin work; no reject either: what is still addressed to a Service IP goes on to the router, which
// rejects it as it does in a single-node lab.
func WithNodeBridge(bridge string, zone uint16) Option {
	return func(s *Syncer) error {
		if bridge == "" || len(bridge) >= unix.IFNAMSIZ {
			return fmt.Errorf("lb: bridge name %q is not an interface name", bridge)
		}
		if zone == 0 {
			return fmt.Errorf("lb: bridge %s: conntrack zone 0 is every other packet's; give the account's own", bridge)
		}
		s.nodeBridge, s.zone = bridge, zone
		return nil
	}
}

// Syncer owns one nftables table in one network namespace.
type Syncer struct {
	mu     sync.Mutex
	nsPath string
	ns     *os.File // keeps the netns alive and addressable
	table  *nftables.Table
	podNet *net.IPNet
	svcNet *net.IPNet
	// routerOutput adds the nat-output hook (WithRouterOutput).
	routerOutput bool
	// nodeBridge and zone: the table is a node's, for the account whose bridge that is (WithNodeBridge).
	nodeBridge string
	zone       uint16
	// selfPicks: a client that is an endpoint of the Service gets itself (SetSelfPicks).
	selfPicks bool
	conn      *nftables.Conn
	ct        *netlink.Handle
	applied   *state // last state known to be in the kernel; nil => full rebuild
	built     *state // last desired state: unchanged services reuse its parts
	// ctPending holds service addresses whose stale UDP conntrack entries
	// could not be flushed yet; retried on the next Sync.
	ctPending map[ip4]bool
	ctErr     error // of the last conntrack flush, reported by Sync
	nextSetID uint32
	closed    bool

	// fullPeriod is the FullSyncPeriod: the table is rebuilt whole at least
	// this often (0: only after failures). lastFull is the last rebuild;
	// resync the timer that rebuilds when no Sync came in the meantime.
	fullPeriod time.Duration
	lastFull   time.Time
	resync     *time.Timer
	resyncs    int
	resyncErr  error
}

// New prepares a Syncer for table (family ip) in the netns at netnsPath ("" =
// the caller's netns). It does not touch the kernel's nftables state.
func New(netnsPath, table string, opts ...Option) (*Syncer, error) {
	if table == "" || len(table) > 64 {
		return nil, fmt.Errorf("lb: table name %q must be 1..64 characters (use the lab prefix)", table)
	}
	_, podNet, _ := net.ParseCIDR(DefaultPodCIDR)
	_, svcNet, _ := net.ParseCIDR(DefaultServiceCIDR)
	s := &Syncer{
		nsPath:     netnsPath,
		table:      &nftables.Table{Family: nftables.TableFamilyIPv4, Name: table},
		podNet:     podNet,
		svcNet:     svcNet,
		ctPending:  map[ip4]bool{},
		fullPeriod: DefaultFullSyncPeriod,
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	path := netnsPath
	if path == "" {
		path = "/proc/self/ns/net"
	}
	f, err := netns.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lb: table %s: %w (does the account router exist?)", table, err)
	}
	s.ns = f
	s.ct, err = netlink.NewHandleAt(vnetns.NsHandle(f.Fd()), unix.NETLINK_NETFILTER)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lb: netlink conntrack handle in netns %s: %w", path, err)
	}
	return s, nil
}

func (s *Syncer) where() string {
	ns := s.nsPath
	if ns == "" {
		ns = "(own netns)"
	}
	return fmt.Sprintf("table ip %s in netns %s", s.table.Name, ns)
}

// nft returns the lasting nftables connection, dialing it if needed. A
// connection is dropped after any error, because unread acks of a failed
// batch would be mistaken for the replies of the next one.
func (s *Syncer) nft() (*nftables.Conn, error) {
	if s.conn != nil {
		return s.conn, nil
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(s.ns.Fd())), nftables.AsLasting(),
		nftables.WithSockOptions(func(c *mdnetlink.Conn) error {
			if err := c.SetWriteBuffer(sockSendBuf); err != nil {
				return err
			}
			return c.SetReadBuffer(sockRecvBuf)
		}))
	if err != nil {
		return nil, fmt.Errorf("lb: netlink connection for %s: %w", s.where(), err)
	}
	s.conn = c
	return c, nil
}

func (s *Syncer) dropConn() {
	if s.conn != nil {
		_ = s.conn.CloseLasting()
		s.conn = nil
	}
}

// Sync makes the table match services. Invalid services are skipped (the
// rest is programmed) and reported in the error; a kernel failure leaves the
// last good table in place and makes the next Sync rebuild it whole. Once
// the full-sync period has passed since the last rebuild, Sync rebuilds.
func (s *Syncer) Sync(services []Service) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Stats{}, fmt.Errorf("lb: Sync on closed syncer for %s", s.where())
	}
	want, invalid := build(services, s.built)
	s.built = want
	if s.fullPeriod > 0 && time.Since(s.lastFull) >= s.fullPeriod {
		s.applied = nil
	}
	st, err := s.programLocked(want)
	if err != nil {
		return st, err
	}
	return st, errors.Join(invalid, s.ctErr)
}

// programLocked sends want to the kernel: whole if nothing is known to be
// applied, else only what changed. s.mu is held.
func (s *Syncer) programLocked(want *state) (Stats, error) {
	var st Stats
	s.ctErr = nil
	var affKept map[string][]nftables.SetElement
	if s.applied == nil {
		// A rebuild recreates the ClientIP affinity sets: their live entries are carried over, so a
		// periodic resync does not re-balance sticky clients.
		affKept = s.affinityEntries(want)
	}
	c, err := s.nft()
	if err != nil {
		return st, err
	}
	b := &batch{s: s, c: c, affKept: affKept}
	if s.applied == nil {
		st.Full = true
		b.full(want)
	} else {
		b.incremental(s.applied, want)
	}
	st.Ops = b.ops
	if b.err == nil && b.ops > 0 {
		b.err = c.Flush()
	}
	if b.err != nil {
		s.applied = nil
		s.dropConn()
		s.scheduleResync(s.fullPeriod)
		return st, fmt.Errorf("lb: program %s (%d ops, full=%v): %w; the next Sync rebuilds the table whole",
			s.where(), b.ops, st.Full, b.err)
	}
	if st.Full {
		s.lastFull = time.Now()
		s.scheduleResync(s.fullPeriod)
	}
	old := s.applied
	s.applied = want
	st.ConntrackDeleted, s.ctErr = s.flushStaleUDP(old, want)
	return st, nil
}

// affinityEntries reads the live elements (client address, time left) of
// want's ClientIP affinity sets from the kernel's table, if it has them. A
// failed read drops the connection (its error reply must not be taken for
// the next batch's) and keeps nothing: clients are then re-balanced once.
func (s *Syncer) affinityEntries(want *state) map[string][]nftables.SetElement {
	wanted := map[string]bool{}
	for _, p := range want.parts {
		for _, name := range p.affSets {
			wanted[name] = true
		}
	}
	if len(wanted) == 0 {
		return nil
	}
	c, err := s.nft()
	if err != nil {
		return nil
	}
	sets, err := c.GetSets(s.table)
	if err != nil {
		s.dropConn() // e.g. no table yet
		return nil
	}
	kept := map[string][]nftables.SetElement{}
	for _, set := range sets {
		if !wanted[set.Name] {
			continue
		}
		elems, err := c.GetSetElements(set)
		if err != nil {
			s.dropConn()
			return nil
		}
		for _, e := range elems {
			if e.Expires > 0 {
				kept[set.Name] = append(kept[set.Name], nftables.SetElement{Key: e.Key, Timeout: e.Expires})
			}
		}
	}
	return kept
}

// scheduleResync (re)arms the periodic full resync to fire after d, as
// kube-proxy's FullSyncPeriod: rules or map elements changed behind pilab's
// back (nft by hand, another program) are put back within the period even
// when no Service changes. s.mu is held.
func (s *Syncer) scheduleResync(d time.Duration) {
	if d <= 0 || s.closed {
		return
	}
	if s.resync == nil {
		s.resync = time.AfterFunc(d, s.periodicResync)
		return
	}
	s.resync.Reset(d)
}

// periodicResync rebuilds the table from the last desired state once the
// period has passed since the last rebuild (a Sync may have rebuilt it
// meanwhile; then it waits for the rest of the period).
func (s *Syncer) periodicResync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.built == nil {
		return
	}
	if left := s.fullPeriod - time.Since(s.lastFull); left > 0 {
		s.scheduleResync(left)
		return
	}
	s.applied = nil
	_, err := s.programLocked(s.built)
	s.resyncs++
	s.resyncErr = err
}

// FullSyncs reports how many periodic full resyncs ran and the error of
// the last one (nil if it succeeded; a failed one is retried next period,
// and the next Sync rebuilds whole too).
func (s *Syncer) FullSyncs() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resyncs, s.resyncErr
}

// SetSelfPicks makes the router's table of a multi-node lab give a client that is an endpoint of the
// Service itself. There, every other connection to a Service was DNAT'd on the client's node
// (WithNodeBridge); what reaches the router from a pod is a connection whose node picked the client itself
// (1 in N) and left the hairpin to the router, so the router must not pick again: the client gets itself 1
// in N times, as on a single bridge. A change rebuilds the table at the next Sync.
func (s *Syncer) SetSelfPicks(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.selfPicks != on {
		s.selfPicks = on
		s.applied = nil
	}
}

// ForceFullSync makes the next Sync rebuild the table whole, e.g. on a
// periodic resync that repairs rules changed behind pilab's back.
func (s *Syncer) ForceFullSync() {
	s.mu.Lock()
	s.applied = nil
	s.mu.Unlock()
}

// Delete removes the table (the cleanup) and releases the Syncer's handles.
// It is idempotent: a missing table or netns is not an error.
func (s *Syncer) Delete() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	c, err := s.nft()
	if err == nil {
		// Adding first makes the delete succeed whether or not it exists.
		c.AddTable(s.table)
		c.DelTable(s.table)
		err = c.Flush()
		if err != nil {
			err = fmt.Errorf("lb: delete %s: %w", s.where(), err)
		}
	}
	if err != nil && errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	s.applied = nil
	s.closeLocked()
	return err
}

// Close releases the handles and leaves the table as it is (a restarted
// daemon's first Sync replaces it atomically).
func (s *Syncer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *Syncer) closeLocked() {
	if s.closed {
		return
	}
	s.closed = true
	if s.resync != nil {
		s.resync.Stop()
	}
	s.dropConn()
	if s.ct != nil {
		s.ct.Close()
	}
	s.ns.Close()
}
