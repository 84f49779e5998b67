package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/daemon"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// daemonFlags are the flags of `pi daemon`, which `pi up` passes on.
type daemonFlags struct {
	cfg daemon.Config
}

func (f *daemonFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.cfg.Root, "root", "", "state directory (default /var/lib/pilab/<lab>)")
	fs.StringVar(&f.cfg.RunDir, "run-dir", "", "runtime directory (default /run/pilab/<lab>)")
	fs.StringVar(&f.cfg.HostNetns, "host-netns", "", `network namespace that plays "the laptop / the Internet" (default: the machine's own)`)
	fs.StringVar(&f.cfg.ContainerdAddress, "containerd-address", "", "use this containerd socket instead of starting a private containerd")
	fs.StringVar(&f.cfg.FIPPool, "fip-pool", daemon.DefaultFIPPool, "CIDR the Floating IPs come from; must not overlap a host route")
	fs.IntVar(&f.cfg.FIPQuota, "fip-quota", 5, "Floating IPs an account may hold")
	fs.StringVar(&f.cfg.ImageCache, "image-cache", "/var/cache/pilab/images", "where image builds keep downloaded packages and built layers (shared by the machine's labs)")
	fs.BoolVar(&f.cfg.SequentialIPs, "sequential-ips", false, "hand out pod addresses in order (test hook: accounts then share addresses)")
	fs.MarkHidden("sequential-ips")
}

// config returns the daemon configuration with the global --lab and --socket applied.
func (f *daemonFlags) config() daemon.Config {
	c := f.cfg
	c.Lab = g.lab
	c.Socket = g.socket
	if c.Socket == "" {
		c.Socket = os.Getenv("PI_SOCKET")
	}
	c.Defaults()
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
	return a
}

func newDaemonCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the lab in the foreground (pi up runs it in the background)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return daemon.Run(cmd.Context(), f.config())
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
			c := f.config()
			if err := daemon.CheckLabName(c.Lab); err != nil {
				return err
			}
			cl := client.New(c.Socket, "default")
			var info daemon.Info
			if err := cl.Do(cmd.Context(), "GET", "/x/info", nil, nil, &info); err == nil {
				fmt.Printf("lab %q is already up (daemon pid %d, socket %s)\n", c.Lab, info.Pid, c.Socket)
				return nil
			}
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
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the lab's daemon; objects, pods and networks stay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			stopped, err := stopDaemon(cmd.Context(), g.socketPath())
			if err != nil {
				return err
			}
			if !stopped {
				fmt.Printf("lab %q is not running\n", g.lab)
				return nil
			}
			fmt.Printf("lab %q is down; its state is kept (pi up starts it again)\n", g.lab)
			return nil
		},
	}
}

// stopDaemon asks the daemon to stop and waits until it has; false if none was running.
func stopDaemon(ctx context.Context, socket string) (bool, error) {
	cl := client.New(socket, "default")
	var resp struct {
		Pid int `json:"pid"`
	}
	if err := cl.Do(ctx, "POST", "/x/shutdown", nil, nil, &resp); err != nil {
		var dd *client.DaemonDownError
		if errors.As(err, &dd) {
			return false, nil
		}
		return false, err
	}
	for i := 0; i < 300; i++ {
		if syscall.Kill(resp.Pid, 0) != nil {
			return true, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true, fmt.Errorf("pi daemon (pid %d) did not stop within 30s", resp.Pid)
}

func newResetCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Stop the lab and remove everything it created: containers, images, namespaces, links, nft tables, state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := f.config()
			if _, err := stopDaemon(cmd.Context(), c.Socket); err != nil {
				return err
			}
			removed, err := daemon.Reset(cmd.Context(), c)
			for _, r := range removed {
				fmt.Printf("removed %s\n", r)
			}
			if err != nil {
				return err
			}
			fmt.Printf("lab %q reset: nothing of it is left\n", c.Lab)
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
