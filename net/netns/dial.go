package netns

import (
	"context"
	"net"

	"github.com/vishvananda/netlink"
)

// DialContext returns a dial function whose sockets are made inside the network namespace at path. A
// socket stays in the namespace it was made in, so the connection is used from any goroutine afterwards;
// give it to an http.Transport, whose dials run on goroutines of their own.
func DialContext(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := Do(path, func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// HostHandle is a netlink handle on the namespace a lab treats as "the host": the named one, or with
// name "" this process's own.
func HostHandle(name string) (*netlink.Handle, error) {
	if name == "" {
		return netlink.NewHandle()
	}
	return NewHandle(Path(name))
}
