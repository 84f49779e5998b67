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
	var list errorList
	if !errors.As(err, &list) {
		list = errorList{err}
	}
	for _, e := range list {
		printError(e)
	}
	return 1
}

// printError prints one error of a command on stderr: the lab's own answer, with nothing added on the
// way, as kubectl prints it ("Error from server (NotFound): pods "x" not found"); anything else as
// "error: ...".
func printError(err error) {
	if ae := (*client.APIError)(nil); errors.As(err, &ae) && ae.Reason != "" && err.Error() == ae.Msg {
		fmt.Fprintf(os.Stderr, "Error from server (%s): %s\n", ae.Reason, ae.Msg)
		return
	}
	fmt.Fprintf(os.Stderr, "error: %s\n", strings.TrimPrefix(err.Error(), "error: "))
}

// errorList is the errors of a command about several objects, each printed on its own line.
type errorList []error

func (l errorList) Error() string {
	var s []string
	for _, e := range l {
		s = append(s, e.Error())
	}
	return strings.Join(s, "\nerror: ")
}

// globals are the flags every client verb takes.
type globals struct {
	lab         string
	socket      string
	account     string
	kubeconfig  string
	kubeContext string
	// remote is the client of a kubeconfig, when pi is one (remote()).
	remote *client.Client
}

var g globals

// client is the client verbs use: for the account --account names (or the kubeconfig's own).
func (g *globals) client() *client.Client {
	if g.remote != nil {
		if a := g.explicitAccount(); a != "" {
			return g.remote.ForAccount(a)
		}
		return g.remote
	}
	return client.New(g.socketPath(), g.accountName())
}

// clientFor is a client acting for account.
func (g *globals) clientFor(account string) *client.Client {
	if g.remote != nil {
		return g.remote.ForAccount(account)
	}
	return client.New(g.socketPath(), account)
}

// kubeconfigPath is the kubeconfig pi is a client of, or "" for the lab's socket on this machine: --kubeconfig
// or PI_KUBECONFIG; else KUBECONFIG, when no --socket (PI_SOCKET) is given and this machine runs no lab at
// the default socket (so root on the lab's own machine keeps using the socket).
func (g *globals) kubeconfigPath() string {
	if g.kubeconfig != "" {
		return g.kubeconfig
	}
	if p := os.Getenv("PI_KUBECONFIG"); p != "" {
		return p
	}
	if p := os.Getenv("KUBECONFIG"); p != "" && g.socket == "" && os.Getenv("PI_SOCKET") == "" {
		if _, err := os.Stat(g.socketPath()); err != nil {
			return p
		}
	}
	return ""
}

// connect makes pi a client of a kubeconfig when one is chosen (kubeconfigPath).
func (g *globals) connect() error {
	p := g.kubeconfigPath()
	if p == "" {
		return nil
	}
	c, err := client.FromKubeconfig(p, g.contextName(), g.explicitAccount())
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	g.remote = c
	return nil
}

// contextName is the kubeconfig context asked for by --context or PI_CONTEXT ("": the current one).
func (g *globals) contextName() string {
	if g.kubeContext != "" {
		return g.kubeContext
	}
	return os.Getenv("PI_CONTEXT")
}

// explicitAccount is the account asked for by --account or PI_ACCOUNT.
func (g *globals) explicitAccount() string {
	if g.account != "" {
		return g.account
	}
	return os.Getenv("PI_ACCOUNT")
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
	if a := g.explicitAccount(); a != "" {
		return a
	}
	if g.remote != nil {
		return g.remote.Account
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
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "be a client of the lab this kubeconfig names, from any machine (env PI_KUBECONFIG; KUBECONFIG when no lab runs here)")
	pf.StringVar(&g.kubeContext, "context", "", "the kubeconfig's context to use (env PI_CONTEXT; default: its current context)")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if machineVerb(cmd) {
			return nil
		}
		return g.connect()
	}
	root.AddGroup(&cobra.Group{ID: "lab", Title: "Lab:"}, &cobra.Group{ID: "basic", Title: "Basic commands:"},
		&cobra.Group{ID: "app", Title: "Apps and troubleshooting:"}, &cobra.Group{ID: "pi", Title: "Pi resources:"})
	for _, c := range []*cobra.Command{newDaemonCmd(), newUpCmd(), newDownCmd(), newResetCmd(), newImageCmd(), newInfoCmd(), newKubeconfigCmd(), newNodeCmd()} {
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

// machineVerb reports whether cmd is about this machine's lab itself (up, down, reset, daemon, image, info,
// kubeconfig): those work on the socket and files here, never through a kubeconfig.
func machineVerb(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.GroupID == "lab" {
			return true
		}
	}
	return false
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
