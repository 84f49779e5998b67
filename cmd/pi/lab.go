package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/lab/registry"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// labFlags name a lab beside the global --lab and --socket: `pi daemon`, `pi up`, `pi down` and `pi reset`
// take the same ones, so that a lab started with some flags is stopped and reset with the same.
type labFlags struct {
	root, runDir, hostNetns, containerdAddress string
}

func (f *labFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.root, "root", "", "state directory (default /var/lib/pilab/<lab>)")
	fs.StringVar(&f.runDir, "run-dir", "", "runtime directory (default /run/pilab/<lab>)")
	fs.StringVar(&f.hostNetns, "host-netns", "", `network namespace that plays "the laptop / the Internet" (default: the one the lab recorded, else the machine's own)`)
	fs.StringVar(&f.containerdAddress, "containerd-address", "", "use this containerd socket instead of starting a private containerd")
}

// raw is the configuration as given: the global --lab and --socket (or PI_SOCKET) and these flags, with
// nothing defaulted, so that daemon.Locate can tell what was given from what the lab recorded.
func (f *labFlags) raw() daemon.Config {
	c := daemon.Config{Lab: g.lab, Root: f.root, RunDir: f.runDir, Socket: g.socket, HostNetns: f.hostNetns, ContainerdAddress: f.containerdAddress}
	if c.Socket == "" {
		c.Socket = os.Getenv("PI_SOCKET")
	}
	return c
}

// daemonFlags are the flags of `pi daemon`, which `pi up` passes on.
type daemonFlags struct {
	labFlags
	cfg daemon.Config
}

func (f *daemonFlags) add(fs *pflag.FlagSet) {
	f.labFlags.add(fs)
	fs.StringVar(&f.cfg.FIPPool, "fip-pool", daemon.DefaultFIPPool, "CIDR the Floating IPs come from; must not overlap a host route")
	fs.IntVar(&f.cfg.FIPQuota, "fip-quota", 5, "Floating IPs an account may hold")
	fs.StringVar(&f.cfg.ImageCache, "image-cache", "/var/cache/pilab/images", "where image builds keep downloaded packages and built layers (shared by the machine's labs)")
	fs.BoolVar(&f.cfg.SequentialIPs, "sequential-ips", false, "hand out pod addresses in order (test hook: accounts then share addresses)")
	fs.MarkHidden("sequential-ips")
	fs.IntVar(&f.cfg.MaxPods, "max-pods", 0, "pods an account may hold (test hook: a lower cap than the lab's 500)")
	fs.MarkHidden("max-pods")
	fs.StringVar(&f.cfg.KubeListen, "listen", "", "HTTPS address of the Kubernetes API: loopback for this machine, or another address (0.0.0.0:6443) for learners on the lab's host side, with their tokens (default: the lab's last one if free, else "+daemon.DefaultKubeListen+", else a free port)")
	// --kube-listen was its first name.
	fs.StringVar(&f.cfg.KubeListen, "kube-listen", "", "")
	fs.MarkHidden("kube-listen")
	fs.StringSliceVar(&f.cfg.TLSSANs, "tls-san", nil, "more names (IPs or DNS names) for the HTTPS listener's certificate")
	fs.IntVar(&f.cfg.Nodes, "nodes", 0, "nodes of a new lab: 1 is this machine; 2 or more are nodes worker, worker2, ... on the lab's own underlay, each account's network stretched over them by VXLAN (default 1; an existing lab keeps its nodes: `pi node add|delete`)")
	fs.DurationVar(&f.cfg.EvictionTimeout, "eviction-timeout", 0, "how long the pods of a stopped node (`pi node stop`) wait before they are evicted and replaced elsewhere (default 30s)")
}

// checkNodes refuses a --nodes no lab can have, before anything starts.
func (f *daemonFlags) checkNodes(fs *pflag.FlagSet) error {
	if fs.Changed("nodes") && (f.cfg.Nodes < 1 || f.cfg.Nodes > registry.MaxNodes) {
		return fmt.Errorf("--nodes %d: a lab has 1 to %d nodes (node N's pods use 10.244.N.0/24 of each account's network)", f.cfg.Nodes, registry.MaxNodes)
	}
	if f.cfg.EvictionTimeout < 0 {
		return fmt.Errorf("--eviction-timeout %s: must not be negative", f.cfg.EvictionTimeout)
	}
	return nil
}

func (f *daemonFlags) raw() daemon.Config {
	c := f.labFlags.raw()
	c.FIPPool, c.FIPQuota, c.ImageCache, c.SequentialIPs = f.cfg.FIPPool, f.cfg.FIPQuota, f.cfg.ImageCache, f.cfg.SequentialIPs
	c.MaxPods = f.cfg.MaxPods
	c.KubeListen, c.TLSSANs = f.cfg.KubeListen, f.cfg.TLSSANs
	c.Nodes, c.EvictionTimeout = f.cfg.Nodes, f.cfg.EvictionTimeout
	return c
}

// args renders the flags back for the background daemon `pi up` starts.
func (f *daemonFlags) args(c daemon.Config) []string {
	a := []string{"daemon", "--lab", c.Lab, "--root", c.Root, "--run-dir", c.RunDir, "--socket", c.Socket,
		"--fip-pool", c.FIPPool, "--fip-quota", strconv.Itoa(c.FIPQuota), "--image-cache", c.ImageCache}
	if c.HostNetns != "" {
		a = append(a, "--host-netns", c.HostNetns)
	}
	if c.ContainerdAddress != "" {
		a = append(a, "--containerd-address", c.ContainerdAddress)
	}
	if c.SequentialIPs {
		a = append(a, "--sequential-ips")
	}
	if c.MaxPods > 0 {
		a = append(a, "--max-pods", strconv.Itoa(c.MaxPods))
	}
	if c.KubeListen != "" {
		a = append(a, "--listen", c.KubeListen)
	}
	for _, san := range c.TLSSANs {
		a = append(a, "--tls-san", san)
	}
	if c.Nodes > 0 {
		a = append(a, "--nodes", strconv.Itoa(c.Nodes))
	}
	if c.EvictionTimeout > 0 {
		a = append(a, "--eviction-timeout", c.EvictionTimeout.String())
	}
	return a
}

// locate finds the lab the flags name by its own records (daemon.Locate) and refuses a --socket on which
// another lab's daemon answers: a command acts on the lab it was named, never on the one behind a socket.
func locate(cmd *cobra.Command, raw daemon.Config, strict bool) (*daemon.Target, error) {
	var info *daemon.Info
	if raw.Socket != "" {
		// Asked first: the daemon that answers says best whose the socket is.
		if i, err := askInfo(cmd.Context(), raw.Socket); err == nil {
			info = i
		}
		if info != nil && info.Lab != raw.Lab {
			named := ""
			if !cmd.Flags().Changed("lab") && os.Getenv("PI_LAB") == "" {
				named = " (the default: --lab and PI_LAB are unset)"
			}
			return nil, fmt.Errorf("--socket %s is the socket of lab %q (daemon pid %d, root %s), not of lab %q%s; to act on lab %s say --lab %s",
				absPath(raw.Socket), info.Lab, info.Pid, info.Root, raw.Lab, named, info.Lab, info.Lab)
		}
	}
	t, err := daemon.Locate(raw, strict)
	if err != nil {
		return nil, err
	}
	if info != nil && info.Root != t.Root {
		return nil, fmt.Errorf("--socket %s is the socket of lab %q with root %s (daemon pid %d), not of the lab %q with root %s; give that lab's --root",
			t.Socket, info.Lab, info.Root, info.Pid, t.Lab, t.Root)
	}
	return t, nil
}

// askInfo asks the daemon on socket who it is, within a few seconds.
func askInfo(ctx context.Context, socket string) (*daemon.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var info daemon.Info
	if err := client.New(socket, "default").Do(ctx, "GET", "/x/info", nil, nil, &info); err != nil {
		return nil, err
	}
	info.Root = absPath(info.Root)
	return &info, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func newDaemonCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the lab in the foreground (pi up runs it in the background)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkNodes(cmd.Flags()); err != nil {
				return err
			}
			t, err := locate(cmd, f.raw(), false)
			if err != nil {
				return err
			}
			if t.Pid != 0 {
				return fmt.Errorf("lab %q already has a daemon (%s); a second one would share its state; stop it with `pi down --lab %s` first",
					t.Lab, daemonOf(t), t.Lab)
			}
			return daemon.Run(cmd.Context(), t.Config)
		},
	}
	f.add(cmd.Flags())
	return cmd
}

func newUpCmd() *cobra.Command {
	var f daemonFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the lab's daemon in the background and wait until it answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.checkNodes(cmd.Flags()); err != nil {
				return err
			}
			t, err := locate(cmd, f.raw(), false)
			if err != nil {
				return err
			}
			// A lock on the state held by no live daemon (pid -1) is a daemon the kernel is still tearing down
			// (killed a moment ago: its process is gone, its files not yet closed); give it a few seconds.
			for wait := time.Now().Add(10 * time.Second); t.Pid == -1 && time.Now().Before(wait); {
				time.Sleep(100 * time.Millisecond)
				if t, err = locate(cmd, f.raw(), false); err != nil {
					return err
				}
			}
			c := t.Config
			if t.Pid != 0 {
				// Up already, or a daemon of the lab that does not answer where we look: never a second one.
				sockets := []string{c.Socket}
				if t.Recorded != nil && t.Recorded.Socket != c.Socket {
					sockets = append(sockets, t.Recorded.Socket)
				}
				for _, s := range sockets {
					if info, err := askInfo(cmd.Context(), s); err == nil && info.Lab == c.Lab && info.Root == c.Root {
						if s != c.Socket {
							return fmt.Errorf("lab %q is already up with its socket at %s (daemon pid %d), not at %s; stop it with `pi down --lab %s` to start it with another socket",
								c.Lab, s, info.Pid, c.Socket, c.Lab)
						}
						fmt.Printf("lab %q is already up (daemon pid %d, socket %s)\n", c.Lab, info.Pid, c.Socket)
						return nil
					}
				}
				return fmt.Errorf("lab %q already has a daemon (%s) but it does not answer on %s; a second one would share its state; stop it with `pi down --lab %s` (or kill %d) first",
					c.Lab, daemonOf(t), strings.Join(sockets, " or "), c.Lab, t.Pid)
			}
			cl := client.New(c.Socket, "default")
			var info daemon.Info
			if err := os.MkdirAll(c.Root, 0o700); err != nil {
				return err
			}
			logPath := filepath.Join(c.Root, "daemon.log")
			logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return err
			}
			defer logf.Close()
			self, err := os.Executable()
			if err != nil {
				return err
			}
			p := exec.Command(self, f.args(c)...)
			// argv[0] is the command's name, whatever file it was started from (a test binary, a copy).
			p.Args[0] = "pi"
			p.Stdout, p.Stderr = logf, logf
			// Its own session: the daemon outlives this shell and its signals.
			p.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := p.Start(); err != nil {
				return fmt.Errorf("start pi daemon: %w", err)
			}
			exited := make(chan error, 1)
			go func() { exited <- p.Wait() }()
			deadline := time.After(timeout)
			for {
				if err := cl.Do(cmd.Context(), "GET", "/x/info", nil, nil, &info); err == nil {
					fmt.Printf("lab %q is up: daemon pid %d, socket %s, log %s\n", c.Lab, info.Pid, c.Socket, logPath)
					return nil
				}
				select {
				case <-exited:
					return fmt.Errorf("pi daemon exited during start; its log %s ends:\n%s", logPath, tail(logPath, 15))
				case <-deadline:
					return fmt.Errorf("pi daemon did not answer on %s within %s; see %s", c.Socket, timeout, logPath)
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
	f.add(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the daemon to answer")
	return cmd
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := splitLines(string(data))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := ""
	for _, l := range lines {
		out += "  " + l + "\n"
	}
	return out
}

func newDownCmd() *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the lab's daemon; objects, pods and networks stay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := locate(cmd, f.raw(), true)
			if err != nil {
				return err
			}
			stopped, err := stopLab(cmd.Context(), t)
			if err != nil {
				return fmt.Errorf("lab %q is running (%s) and could not be stopped: %v; kill %d to stop it", t.Lab, daemonOf(t), err, t.Pid)
			}
			if !stopped {
				fmt.Printf("lab %q is not running\n", t.Lab)
				return nil
			}
			fmt.Printf("lab %q is down; its state is kept (pi up starts it again)\n", t.Lab)
			return nil
		},
	}
	f.add(cmd.Flags())
	return cmd
}

// stopLab stops lab t's daemon through its own socket, after checking that the daemon answering there is
// that lab's and the one its records show alive, and waits until it has exited; false if none was running.
// Its errors say why the daemon could not be stopped; the caller says what it means.
func stopLab(ctx context.Context, t *daemon.Target) (bool, error) {
	if t.Pid == 0 {
		return false, nil
	}
	info, err := askInfo(ctx, t.Socket)
	if err != nil {
		var dd *client.DaemonDownError
		if errors.As(err, &dd) {
			return false, fmt.Errorf("it does not answer on its socket %s (nothing listens there)", t.Socket)
		}
		return false, fmt.Errorf("it does not answer on its socket %s (%v)", t.Socket, err)
	}
	if info.Lab != t.Lab || info.Root != t.Root || (t.Pid > 0 && info.Pid != t.Pid) {
		return false, fmt.Errorf("the daemon answering on %s is lab %q's (pid %d, root %s), not it", t.Socket, info.Lab, info.Pid, info.Root)
	}
	var resp struct {
		Pid int `json:"pid"`
	}
	if err := client.New(t.Socket, "default").Do(ctx, "POST", "/x/shutdown", nil, nil, &resp); err != nil {
		return false, fmt.Errorf("asking it to stop failed: %w", err)
	}
	for i := 0; i < 300; i++ {
		if pid, _ := daemon.DaemonPid(t.Lab, t.Root, t.RunDir); pid == 0 && syscall.Kill(info.Pid, 0) != nil {
			return true, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true, fmt.Errorf("it did not stop within 30s of being asked to")
}

// daemonOf names lab t's live daemon for messages: `daemon pid 123: it holds the lock on ...`.
func daemonOf(t *daemon.Target) string {
	if t.Pid < 0 {
		return "daemon pid unknown: " + t.PidEvidence
	}
	return fmt.Sprintf("daemon pid %d: %s", t.Pid, t.PidEvidence)
}

func newResetCmd() *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop the lab and remove everything it created: containers, images, namespaces, links, nft tables, state",
		Long: `Stop the lab and remove everything it created: containers and their shims, images, namespaces, links,
nft tables, cgroups, mounts, state. The lab is found by its own records (its root and run dir, the lock on
its state.db, its pid file), never by whatever answers on --socket. Then reset checks that nothing of the lab
is left, and says what is if anything is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := locate(cmd, f.raw(), true)
			if err != nil {
				return err
			}
			if t.Pid != 0 {
				if _, err := stopLab(cmd.Context(), t); err != nil {
					return fmt.Errorf("lab %q is running (%s) and was left as it is: %v; stop it with `pi down --lab %s` (or kill %d if it does not answer), then reset",
						t.Lab, daemonOf(t), err, t.Lab, t.Pid)
				}
				fmt.Printf("stopped lab %q's daemon (pid %d)\n", t.Lab, t.Pid)
			}
			res, err := daemon.Reset(cmd.Context(), t)
			for _, r := range res.Removed {
				fmt.Printf("removed %s\n", r)
			}
			for _, n := range res.Notes {
				fmt.Printf("note: %s\n", n)
			}
			for _, l := range res.Left {
				fmt.Printf("left: %s\n", l)
			}
			if err != nil {
				return err
			}
			fmt.Printf("lab %q reset: nothing of it is left (checked: daemon, containerd, shims, cgroups, netns, links, nft tables, mounts, dirs)\n", t.Lab)
			return nil
		},
	}
	f.add(cmd.Flags())
	return cmd
}

func newInfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show where the lab lives",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var info daemon.Info
			if err := g.client().Do(cmd.Context(), "GET", "/x/info", nil, nil, &info); err != nil {
				return err
			}
			fmt.Printf("Lab:         %s\nNode:        %s\nDaemon pid:  %d\nSocket:      %s\nState:       %s\nRuntime dir: %s\nContainerd:  %s\nFIP pool:    %s\nPrices:      %s\n",
				info.Lab, info.Node, info.Pid, info.Socket, info.Root, info.RunDir, info.Containerd, info.FIPPool, info.Prices)
			if info.HostNetns != "" {
				fmt.Printf("Host netns:  %s\n", info.HostNetns)
			}
			return nil
		},
	}
}
