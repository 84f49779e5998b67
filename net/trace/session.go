package trace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pilab/pi/net/netns"
)

// Namespace is one network namespace the traced packets cross.
type Namespace struct {
	// Name labels this namespace's events (e.g. "pod nginx", "router alice").
	Name string
	// Path is the namespace file (/var/run/netns/<name>, /proc/<pid>/ns/net).
	Path string
	// Match, if set, replaces the session's flow in this namespace: the
	// packets as they look here (behind a NAT the caller knows of).
	Match *Flow
}

// Event is one observation. Exactly one of Trace, Conntrack and Err is set.
type Event struct {
	Netns string // Namespace.Name
	Time  time.Time
	// Trace: the packet passed a rule, left a chain or met a chain's policy.
	Trace *Trace
	// Rule is the rule Trace names, read back from the namespace (nil for
	// policy and implicit-return messages, or when RuleErr says why not).
	Rule    *Rule
	RuleErr error
	// IIFName, OIFName name Trace.IIF and Trace.OIF in the namespace.
	IIFName, OIFName string
	// Conntrack: the kernel created, updated or destroyed the flow's entry.
	Conntrack *Conntrack
	// Err: a listener lost messages or failed; the trace may be incomplete.
	Err error
}

func (e Event) String() string {
	switch {
	case e.Trace != nil:
		t := e.Trace
		s := fmt.Sprintf("[%s] %08x %s %s", e.Netns, t.ID, t.Table, t.Chain)
		switch t.Type {
		case TypePolicy:
			pol := "accept"
			if t.Policy != nil && *t.Policy == NFDrop {
				pol = "drop"
			}
			s += " policy " + pol
		default:
			if e.Rule != nil {
				s += fmt.Sprintf(" handle %d: %s", t.Handle, e.Rule.Text)
				if e.Rule.Comment != "" {
					s += fmt.Sprintf(" comment %q", e.Rule.Comment)
				}
			} else if t.Handle != 0 {
				s += fmt.Sprintf(" handle %d", t.Handle)
			}
			if t.Verdict != nil {
				s += fmt.Sprintf(" (%s %s)", t.Type, t.Verdict)
			}
		}
		if e.IIFName != "" {
			s += " iif " + e.IIFName
		}
		if e.OIFName != "" {
			s += " oif " + e.OIFName
		}
		if t.HasPacket() {
			s += " " + t.Packet.String()
		}
		return s
	case e.Conntrack != nil:
		return fmt.Sprintf("[%s] %s", e.Netns, e.Conntrack)
	}
	return fmt.Sprintf("[%s] error: %v", e.Netns, e.Err)
}

// Session is a running trace: trace tables installed in each namespace and
// listeners on their trace and conntrack groups.
type Session struct {
	// ID names the session's tables: TablePrefix + ID in every namespace.
	ID     string
	Events <-chan Event

	events   chan Event
	done     chan struct{}
	nss      []*nsTrace
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	stopCtx  func() bool
}

// nsTrace is the session's state in one namespace.
type nsTrace struct {
	ns    Namespace
	flow  Flow
	table string
	file  *os.File // keeps the namespace reachable for nft
	nft   *nftables.Conn
	trace *netlink.Conn
	ct    *conntrack.Conn
	ctEv  chan conntrack.Event
	ctErr chan error
	links *vnl.Handle
	rules ruleCache
	added bool

	// ids remembers per packet id (Trace.ID) whether it is the flow's: only
	// the first message about a packet at a hook carries its headers.
	ids map[uint32]bool
}

// eventBuffer is how many events wait for a slow reader before the session
// blocks its listeners (and the kernel starts dropping: reported as Err).
const eventBuffer = 4096

// Start subscribes to nft trace and conntrack events in each namespace, then
// installs the trace tables, so that no event of the flow is missed. Stop (or
// ctx's end) removes the tables. On error nothing is left installed.
func Start(ctx context.Context, flow Flow, nss []Namespace) (*Session, error) {
	if err := flow.validate(); err != nil {
		return nil, err
	}
	if len(nss) == 0 {
		return nil, errors.New("trace: no namespace given; name the namespaces the packet crosses")
	}
	b := make([]byte, 4)
	rand.Read(b)
	s := &Session{ID: hex.EncodeToString(b), events: make(chan Event, eventBuffer), done: make(chan struct{})}
	s.Events = s.events
	for _, ns := range nss {
		f := flow
		if ns.Match != nil {
			if err := ns.Match.validate(); err != nil {
				return nil, fmt.Errorf("trace: namespace %s: %w", ns.Name, err)
			}
			f = *ns.Match
		}
		n := &nsTrace{ns: ns, flow: f, table: TablePrefix + s.ID, ids: map[uint32]bool{}}
		s.nss = append(s.nss, n)
		if err := n.open(); err != nil {
			s.Stop()
			return nil, fmt.Errorf("trace %s: namespace %s (%s): %w", s.ID, ns.Name, ns.Path, err)
		}
		s.wg.Add(2)
		go s.readTrace(n)
		go s.readConntrack(n)
	}
	for _, n := range s.nss {
		if err := addTraceTable(n.nft, n.table, n.flow); err != nil {
			s.Stop()
			return nil, fmt.Errorf("trace %s: namespace %s: %w", s.ID, n.ns.Name, err)
		}
		n.added = true
	}
	s.stopCtx = context.AfterFunc(ctx, func() { s.Stop() })
	return s, nil
}

// open makes the namespace's sockets. They are created inside the namespace
// (netns.Do) and stay bound to it: netlink multicast groups and conntrack
// are per namespace, so each namespace needs its own.
func (n *nsTrace) open() error {
	f, err := netns.Open(n.ns.Path)
	if err != nil {
		return err
	}
	n.file = f
	n.nft, err = nftables.New(nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("nftables connection: %w", err)
	}
	n.rules.conn = n.nft
	if n.links, err = netns.NewHandle(n.ns.Path); err != nil {
		return err
	}
	err = netns.Do(n.ns.Path, func() error {
		c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			return fmt.Errorf("open netfilter netlink socket: %w", err)
		}
		n.trace = c
		if err := c.JoinGroup(groupNFTrace); err != nil {
			return fmt.Errorf("join NFNLGRP_NFTRACE: %w", err)
		}
		// A burst of trace messages must not overflow the default ~200 KiB
		// buffer while rules are being looked up.
		_ = c.SetReadBuffer(4 << 20)
		ct, err := conntrack.Dial(nil)
		if err != nil {
			return fmt.Errorf("open conntrack netlink socket: %w", err)
		}
		n.ct = ct
		_ = ct.SetReadBuffer(4 << 20)
		return nil
	})
	if err != nil {
		return err
	}
	n.ctEv = make(chan conntrack.Event, 256)
	n.ctErr, err = n.ct.Listen(n.ctEv, 1, []netfilter.NetlinkGroup{
		netfilter.GroupCTNew, netfilter.GroupCTUpdate, netfilter.GroupCTDestroy})
	if err != nil {
		return fmt.Errorf("listen for conntrack events: %w", err)
	}
	return nil
}

// emit hands an event to the reader unless the session is stopping.
func (s *Session) emit(ev Event) {
	ev.Time = time.Now()
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

func (s *Session) readTrace(n *nsTrace) {
	defer s.wg.Done()
	for {
		msgs, err := n.trace.Receive()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, unix.ENOBUFS) {
				s.emit(Event{Netns: n.ns.Name, Err: fmt.Errorf("trace messages lost (socket buffer overflowed): %w", err)})
				continue
			}
			s.emit(Event{Netns: n.ns.Name, Err: fmt.Errorf("receive trace messages: %w", err)})
			return
		}
		for _, m := range msgs {
			t, err := DecodeTrace(m)
			if err != nil {
				continue // other nf_tables messages on the socket are not ours to report
			}
			if ev, ok := n.traceEvent(t); ok {
				s.emit(ev)
			}
		}
	}
}

// traceEvent keeps messages about the flow's packets, skips the session's own
// table, and resolves the rule and the interface names.
func (n *nsTrace) traceEvent(t *Trace) (Event, bool) {
	if t.HasPacket() {
		if len(n.ids) > 4096 {
			clear(n.ids)
		}
		// A packet first seen matching stays the flow's at later hooks, where a
		// NAT may have rewritten it; another session's packets are dropped.
		if !n.ids[t.ID] {
			n.ids[t.ID] = n.flow.matchesEither(t.Packet)
		}
	}
	if !n.ids[t.ID] || t.Table == n.table {
		return Event{}, false
	}
	// At the end of a base chain the kernel reports the implicit "continue"
	// as a rule message without a handle, just before the policy message;
	// it says nothing the policy message does not (`nft monitor trace`
	// prints no rule for it either).
	if t.Type == TypeRule && t.Handle == 0 && t.Verdict != nil && t.Verdict.Code == unix.NFT_CONTINUE {
		return Event{}, false
	}
	ev := Event{Netns: n.ns.Name, Trace: t}
	if t.Handle != 0 {
		ev.Rule, ev.RuleErr = n.rules.lookup(t.Family, t.Table, t.Chain, t.Handle)
	}
	ev.IIFName, ev.OIFName = n.linkName(t.IIF), n.linkName(t.OIF)
	return ev, true
}

func (n *nsTrace) linkName(index uint32) string {
	if index == 0 {
		return ""
	}
	l, err := n.links.LinkByIndex(int(index))
	if err != nil {
		return fmt.Sprintf("if%d", index)
	}
	return l.Attrs().Name
}

func (s *Session) readConntrack(n *nsTrace) {
	defer s.wg.Done()
	for {
		select {
		case ev, ok := <-n.ctEv:
			if !ok {
				return
			}
			c, ok := conntrackOf(ev)
			if ok && n.flow.matchesConntrack(c) {
				s.emit(Event{Netns: n.ns.Name, Conntrack: &c})
			}
		case err := <-n.ctErr:
			s.emit(Event{Netns: n.ns.Name, Err: fmt.Errorf("conntrack events: %w", err)})
		}
	}
}

// Stop removes the session's trace table from every namespace, checks that
// none is left, closes the listeners and then Events. It returns what could
// not be removed or checked. Safe to call more than once.
func (s *Session) Stop() error {
	s.stopOnce.Do(func() {
		if s.stopCtx != nil {
			s.stopCtx()
		}
		var errs []error
		// Tables first: from here on the kernel traces nothing for this session.
		for _, n := range s.nss {
			if n.nft == nil {
				continue
			}
			if err := deleteTable(n.nft, n.table); err != nil {
				errs = append(errs, fmt.Errorf("trace %s: namespace %s: %w", s.ID, n.ns.Name, err))
				continue
			}
			left, err := TraceTables(n.nft)
			if err != nil {
				errs = append(errs, fmt.Errorf("trace %s: namespace %s: check tables: %w", s.ID, n.ns.Name, err))
			} else if slices.Contains(left, n.table) {
				errs = append(errs, fmt.Errorf("trace %s: namespace %s: table %s still there after delete; remove it with: ip netns exec <ns> nft delete table ip %s", s.ID, n.ns.Name, n.table, n.table))
			}
		}
		close(s.done)
		for _, n := range s.nss {
			n.close()
		}
		s.wg.Wait()
		close(s.events)
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

// close closes the namespace's sockets; the readers end on the closed sockets.
func (n *nsTrace) close() {
	if n.trace != nil {
		n.trace.Close()
	}
	if n.ct != nil {
		// Close waits for the conntrack workers, which may be blocked handing
		// an event or error over: drain both until it returns.
		closed := make(chan struct{})
		go func() { n.ct.Close(); close(closed) }()
	drain:
		for {
			select {
			case <-n.ctEv:
			case <-n.ctErr:
			case <-closed:
				break drain
			}
		}
	}
	if n.ctEv != nil {
		close(n.ctEv)
	}
	if n.links != nil {
		n.links.Close()
	}
	if n.nft != nil {
		n.nft.CloseLasting()
	}
	if n.file != nil {
		n.file.Close()
	}
}

// DeleteTraceTables removes every trace table from the namespace at path,
// including ones a killed process left behind, and returns their names.
func DeleteTraceTables(path string) ([]string, error) {
	f, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return nil, fmt.Errorf("nftables connection to %s: %w", path, err)
	}
	names, err := TraceTables(c)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	for _, name := range names {
		if err := deleteTable(c, name); err != nil {
			return nil, fmt.Errorf("netns %s: %w", path, err)
		}
	}
	return names, nil
}
