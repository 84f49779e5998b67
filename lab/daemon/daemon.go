// Package daemon is `pi daemon`: it wires the store, the private containerd, the network manager, the
// controllers and the API server of one lab, and takes them down again.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"github.com/pilab/pi/lab/registry"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/billing"
	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/overlay"
	"github.com/pilab/pi/runtime/images"
	"github.com/pilab/pi/runtime/pods"
	"github.com/pilab/pi/runtime/supervisor"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is a lab's daemon configuration; flag names in brackets.
type Config struct {
	Lab               string // [--lab] prefix of everything the lab creates
	Root              string // [--root] state
	RunDir            string // [--run-dir] runtime files
	Socket            string // [--socket]
	HostNetns         string // [--host-netns] the namespace that plays "the laptop / the Internet"
	ContainerdAddress string // [--containerd-address] an existing containerd instead of a private one
	FIPPool           string // [--fip-pool] CIDR of the Floating IP pool
	FIPQuota          int    // [--fip-quota] Floating IPs per account
	SequentialIPs     bool   // [--sequential-ips] test hook: predictable pod addresses
	MaxPods           int    // [--max-pods] test hook: a lower pods-per-account cap (0: registry.MaxPodsPerAccount)
	ImageCache        string // [--image-cache] mmdebstrap's apt cache and built layers, shared by the labs of a machine
	// Nodes [--nodes] is how many nodes a new lab gets: 1 (or 0, unset) is the machine itself with every
	// pod on its account's router; N > 1 are nodes worker..workerN on the lab's underlay, each account's
	// network stretched over them by VXLAN. A lab that has nodes keeps them (`pi node add|delete`).
	Nodes int
	// EvictionTimeout [--eviction-timeout] is how long a stopped node's pods wait before they are evicted.
	EvictionTimeout time.Duration
	Log             io.Writer

	// The HTTPS listener (listen.go).
	KubeListen string   // [--listen] the HTTPS listener's address ("": the recorded one, else DefaultKubeListen)
	TLSSANs    []string // [--tls-san] more names of the listener for its certificate
}

// Defaults fills what is unset from the lab name.
func (c *Config) Defaults() {
	if c.Lab == "" {
		c.Lab = "pi"
	}
	if c.Root == "" {
		c.Root = filepath.Join("/var/lib/pilab", c.Lab)
	}
	if c.RunDir == "" {
		c.RunDir = filepath.Join("/run/pilab", c.Lab)
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.RunDir, "pi.sock")
	}
	if c.ImageCache == "" {
		c.ImageCache = "/var/cache/pilab/images"
	}
	if c.FIPPool == "" {
		c.FIPPool = DefaultFIPPool
	}
	if c.FIPQuota == 0 {
		c.FIPQuota = 5
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
}

// DefaultFIPPool is part of 198.18.0.0/15, the range RFC 2544 sets aside for benchmarks: real networks never route it.
const DefaultFIPPool = "198.18.0.0/24"

// CheckLabName refuses lab names that would not fit in link names.
func CheckLabName(lab string) error {
	if lab == "" || len(lab) > 6 {
		return fmt.Errorf("lab name %q must be 1 to 6 characters (it prefixes link names, which Linux caps at 15)", lab)
	}
	for _, r := range lab {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("lab name %q may hold only lower-case letters and digits", lab)
		}
	}
	if lab[0] < 'a' || lab[0] > 'z' {
		return fmt.Errorf("lab name %q must start with a letter", lab)
	}
	return nil
}

// Daemon is a running lab.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	store   *store.Store
	sup     *supervisor.Supervisor
	images  *images.Store
	runtime *pods.Runtime
	network *network.Manager
	// overlay builds the nodes of a multi-node lab (net/overlay).
	overlay *overlay.Manager
	ctrl    *controller.Manager
	server  *server.Server
	// registry is the one door for writes that allocate or count: the API's and the controllers'.
	registry *registry.Registry
	prices   string
	fipPool  *net.IPNet
	stop     context.CancelFunc
}

// Run runs the daemon until ctx ends or a client asks it to stop.
func Run(ctx context.Context, cfg Config) error {
	cfg.Defaults()
	if err := CheckLabName(cfg.Lab); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("pi daemon must run as root: it creates network namespaces, nftables tables and containers")
	}
	_, pool, err := net.ParseCIDR(cfg.FIPPool)
	if err != nil || pool.IP.To4() == nil {
		return fmt.Errorf("--fip-pool %q is not an IPv4 CIDR", cfg.FIPPool)
	}
	for _, d := range []string{cfg.Root, cfg.RunDir, filepath.Dir(cfg.Socket), cfg.ImageCache} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	d := &Daemon{cfg: cfg, stop: stop, fipPool: pool,
		log:    slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		prices: filepath.Join(cfg.Root, "prices.yaml")}
	if err := billing.WriteDefaultPrices(d.prices); err != nil {
		return fmt.Errorf("write default prices %s: %w", d.prices, err)
	}
	if _, err := billing.LoadPrices(d.prices); err != nil {
		return err
	}

	if d.store, err = store.Open(filepath.Join(cfg.Root, "state.db")); err != nil {
		return err
	}
	defer d.store.Close()
	// The HTTPS listener's address goes in the lab's record, so it is taken first (listen.go).
	kube, kubeAddr, err := d.listenKube()
	if err != nil {
		return err
	}
	defer kube.close()
	cfg.KubeListen, d.cfg.KubeListen = kubeAddr, kubeAddr
	// The lab's record is written while this daemon holds state.db's lock, so two starts cannot race on it.
	if err := WriteIdentity(cfg); err != nil {
		return err
	}

	d.network, err = network.New(network.Options{Lab: cfg.Lab, HostNetns: cfg.HostNetns, GuardHost: kube.guardsHost()})
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	defer d.network.Close()
	if err := d.checkFIPPool(); err != nil {
		return err
	}

	ctrdLog, err := os.OpenFile(filepath.Join(cfg.Root, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer ctrdLog.Close()
	d.sup, err = supervisor.Start(ctx, supervisor.Options{Lab: cfg.Lab, Root: cfg.Root, RunDir: cfg.RunDir, Address: cfg.ContainerdAddress, Log: ctrdLog})
	if err != nil {
		return err
	}
	defer d.sup.Close()
	d.images = images.New(d.sup.Client(), cfg.Lab, cfg.ImageCache)
	d.runtime = pods.New(d.sup.Client(), cfg.Lab, d.images, cfg.RunDir)
	d.registry = registry.New(registry.Config{Store: d.store, Images: d.images, FIPPool: pool, FIPQuota: cfg.FIPQuota,
		SequentialIPs: cfg.SequentialIPs, MaxPodsPerAccount: cfg.MaxPods})

	if err := d.ensureDefaultAccount(); err != nil {
		return err
	}
	if d.overlay, err = overlay.New(overlay.Options{Lab: cfg.Lab}); err != nil {
		return err
	}
	if err := d.initNodes(); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	host, _ := os.Hostname()
	d.ctrl = controller.New(controller.Config{Lab: cfg.Lab, RunDir: cfg.RunDir, Store: d.store, Registry: d.registry, Runtime: d.runtime,
		Images: d.images, Network: d.network, Overlay: d.overlay, EvictionTimeout: cfg.EvictionTimeout,
		RuntimeVersion: containerdVersion(ctx, d.sup), NodeName: host, SequentialIPs: cfg.SequentialIPs, Log: d.log,
		FIPPool: pool, HostNetns: cfg.HostNetns})
	if err := d.ctrl.CollectGarbage(ctx); err != nil {
		d.log.Warn("collect leftovers", "err", err)
	}

	d.server = &server.Server{Store: d.store, Registry: d.registry, Backend: d, Tokens: kube.auth.Tokens}
	l, err := d.server.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.RunDir, "pi.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(cfg.RunDir, "pi.pid"))

	ctrlDone := make(chan struct{})
	go func() {
		d.ctrl.Run(ctx)
		close(ctrlDone)
	}()
	serveErr := make(chan error, 2)
	go func() { serveErr <- d.server.Serve(l) }()
	go func() { serveErr <- kube.serve(d.server.Handler()) }()
	go kube.auth.Tokens.Run(ctx)
	d.log.Info("pi daemon ready", "lab", cfg.Lab, "socket", cfg.Socket, "kube", "https://"+kubeAddr, "containerd", d.sup.Address(), "pid", os.Getpid())

	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.server.Shutdown(shutdownCtx)
	kube.shutdown(shutdownCtx)
	stop()
	<-ctrlDone
	d.ctrl.Close()
	os.Remove(cfg.Socket)
	d.log.Info("pi daemon stopped", "lab", cfg.Lab)
	return err
}

// containerdVersion is the version of the containerd the lab runs on, as nodes report it ("" if it does
// not answer within a few seconds).
func containerdVersion(ctx context.Context, sup *supervisor.Supervisor) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := sup.Client().Version(ctx)
	if err != nil {
		return ""
	}
	return v.Version
}

func (d *Daemon) ensureDefaultAccount() error {
	_, err := d.store.Get(kindAccount, "", api.DefaultAccount)
	if store.IsNotFound(err) {
		a := &api.Account{}
		a.Name = api.DefaultAccount
		err = d.registry.Create(context.Background(), "", a, false)
		if store.IsAlreadyExists(err) {
			return nil
		}
	}
	return err
}

// checkFIPPool refuses a pool that overlaps a route the host already has: FIPs must be addresses nothing else claims.
func (d *Daemon) checkFIPPool() error {
	overlap, err := routeOverlapping(d.cfg.HostNetns, d.network, d.fipPool)
	if err != nil {
		return fmt.Errorf("check --fip-pool %s against the host's routes: %w", d.fipPool, err)
	}
	if overlap != "" {
		return fmt.Errorf("--fip-pool %s overlaps the host route %s; choose a range the host does not route (default %s)", d.fipPool, overlap, DefaultFIPPool)
	}
	return nil
}

var (
	kindAccount, _ = api.LookupKind("Account")
	kindPod, _     = api.LookupKind("Pod")
	kindService, _ = api.LookupKind("Service")
	kindFIP, _     = api.LookupKind("FloatingIP")
)

func joinNames(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// routeOverlapping returns a route of the host (netns "" = this one) that overlaps cidr, or "".
// Routes through the lab's own transit links (its FIPs, from an earlier run) do not count.
func routeOverlapping(hostNetns string, nm *network.Manager, cidr *net.IPNet) (string, error) {
	h, err := netns.HostHandle(hostNetns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			// A default route covers everything; it is how the host reaches the Internet, not a claim.
			continue
		}
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil && nm.IsHostLink(l.Attrs().Name) {
			continue
		}
		if r.Dst.Contains(cidr.IP) || cidr.Contains(r.Dst.IP) {
			if r.Table == unix.RT_TABLE_LOCAL && r.Dst.IP.Equal(cidr.IP) {
				continue
			}
			return r.Dst.String(), nil
		}
	}
	return "", nil
}
