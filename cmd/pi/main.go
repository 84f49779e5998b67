// Command pi puts a small hosted container cloud ("Pi") on one Linux machine. `pi daemon` is the lab; every
// other verb is a client of its socket, shaped like kubectl.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/runtime/images/podinfo"
	"github.com/spf13/cobra"
)

// exitError carries an exit code that is not an error worth printing (a command's own exit code in exec).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// The podinfo image runs this very binary under the name podinfo.
	if filepath.Base(os.Args[0]) == "podinfo" {
		os.Exit(podinfo.Main(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(os.Stderr, "error: %s\n", strings.TrimPrefix(err.Error(), "error: "))
	return 1
}

// globals are the flags every client verb takes.
type globals struct {
	lab     string
	socket  string
	account string
}

var g globals

func (g *globals) client() *client.Client {
	return client.New(g.socketPath(), g.accountName())
}

func (g *globals) socketPath() string {
	if g.socket != "" {
		return g.socket
	}
	if s := os.Getenv("PI_SOCKET"); s != "" {
		return s
	}
	return filepath.Join("/run/pilab", g.lab, "pi.sock")
}

func (g *globals) accountName() string {
	if g.account != "" {
		return g.account
	}
	if a := os.Getenv("PI_ACCOUNT"); a != "" {
		return a
	}
	if cfg, err := loadConfig(); err == nil && cfg.Account != "" {
		return cfg.Account
	}
	return "default"
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "pi",
		Short: "pi puts a small hosted container cloud on this machine",
		Long: `pi puts a small hosted container cloud ("Pi") on this machine: accounts with private networks,
pods on containerd, Services, Floating IPs. Start the lab with "pi up", then use it like kubectl.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.lab, "lab", envOr("PI_LAB", "pi"), "lab name: prefix of everything the lab creates (env PI_LAB)")
	pf.StringVar(&g.socket, "socket", "", "the daemon's API socket (env PI_SOCKET; default /run/pilab/<lab>/pi.sock)")
	pf.StringVar(&g.account, "account", "", "the account to act as (env PI_ACCOUNT, or `pi config use-account`)")
	root.AddGroup(&cobra.Group{ID: "lab", Title: "Lab:"}, &cobra.Group{ID: "basic", Title: "Basic commands:"},
		&cobra.Group{ID: "app", Title: "Apps and troubleshooting:"}, &cobra.Group{ID: "pi", Title: "Pi resources:"})
	for _, c := range []*cobra.Command{newDaemonCmd(), newUpCmd(), newDownCmd(), newResetCmd(), newImageCmd(), newInfoCmd(), newKubeconfigCmd()} {
		c.GroupID = "lab"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newCreateCmd(), newApplyCmd(), newGetCmd(), withDeleteAll(newDeleteCmd()), newRunCmd(), newDescribeCmd(), newExposeCmd(), newScaleCmd(), newSetCmd(), newRolloutCmd(), newWaitCmd()} {
		c.GroupID = "basic"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newExecCmd(), newLogsCmd(), newTraceCmd(), newNetworkCmd(), newRulesCmd()} {
		c.GroupID = "app"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newAccountCmd(), newWorkshopCmd(), newConfigCmd(), newNameCmd(), newBillCmd()} {
		c.GroupID = "pi"
		root.AddCommand(c)
	}
	addLearnCommands(root)
	root.AddCommand(newBenchReportCmd())
	root.AddCommand(&cobra.Command{Use: "podinfo", Hidden: true, DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := podinfo.Main(args); code != 0 {
				return exitError{code}
			}
			return nil
		}})
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
