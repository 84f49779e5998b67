package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/pilab/pi/net/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// The probes of udp:// and icmp:// traces: one datagram, one ping, from the client's namespace.

// udpRequest sends one datagram from sport to dst:port and waits for any datagram back: UDP has no
// connection, so an answer is the only proof something listens. An ICMP port unreachable is "refused".
func udpRequest(ctx context.Context, path string, dst netip.Addr, port, sport uint16) (local netip.AddrPort, err error) {
	var conn *net.UDPConn
	err = netns.Do(path, func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{Port: int(sport)}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, port)))
		return err
	})
	if err != nil {
		return local, describeDialError(err)
	}
	defer conn.Close()
	local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("pilab trace\n")); err != nil {
		return local, describeDialError(err)
	}
	buf := make([]byte, 2048)
	if _, err := conn.Read(buf); err != nil {
		return local, describeDialError(err)
	}
	return local, nil
}

// ping sends one ICMP echo request to dst and waits for its reply (a raw socket: the daemon is root).
func ping(ctx context.Context, path string, dst netip.Addr) (local netip.AddrPort, err error) {
	var conn *icmp.PacketConn
	err = netns.Do(path, func() error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	})
	if err != nil {
		return local, fmt.Errorf("open a socket to ping from: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	id := int(rand.Uint32N(1 << 16))
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("pilab trace")}}
	b, _ := msg.Marshal(nil)
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return local, describeDialError(err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return local, fmt.Errorf("no echo reply in %s", traceTimeout)
			}
			return local, err
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		// The raw socket sees every ICMP message of the namespace: only this ping's reply, from dst, counts.
		if e, ok := m.Body.(*icmp.Echo); ok && m.Type == ipv4.ICMPTypeEchoReply && e.ID == id && from.String() == dst.String() {
			return local, nil
		}
		if m.Type == ipv4.ICMPTypeDestinationUnreachable {
			if d, ok := m.Body.(*icmp.DstUnreach); ok && len(d.Data) >= 20 && netip.AddrFrom4([4]byte(d.Data[16:20])) == dst {
				return local, syscall.EHOSTUNREACH
			}
		}
	}
}
