package main

import (
	"fmt"
	"net"
	"os"

	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/lab/pki"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func newKubeconfigCmd() *cobra.Command {
	var f labFlags
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig that points kubectl at the lab (admin; --account A acts as A)",
		Long: `Print a kubeconfig for the lab's HTTPS listener: cluster "pi" with the lab's CA, user "pi-admin" with
the admin's client certificate, context "pi" (namespace default) as the current context. With --account A
the context "pi-A" acts as account A (kubectl's --as). The file holds the admin's key: keep it private.

  pi kubeconfig > ~/.kube/config            # or: pi kubeconfig > pi.kubeconfig; export KUBECONFIG=$PWD/pi.kubeconfig
  kubectl get pods`,
		Args:    cobra.NoArgs,
		GroupID: "lab",
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := locate(cmd, f.raw(), false)
			if err != nil {
				return err
			}
			if t.Pid == 0 {
				return fmt.Errorf("lab %q is not running; start it with `pi up --lab %s`, then ask again", t.Lab, t.Lab)
			}
			addr := ""
			for _, dir := range []string{t.RunDir, t.Root} {
				if rec, _ := daemon.ReadIdentity(dir); rec != nil && rec.Lab == t.Lab && rec.KubeListen != "" {
					addr = rec.KubeListen
					break
				}
			}
			if addr == "" {
				return fmt.Errorf("lab %q records no HTTPS listener (its daemon predates it, or is still starting); restart it with `pi down --lab %s; pi up --lab %s`", t.Lab, t.Lab, t.Lab)
			}
			p, err := pki.LoadClient(daemon.PKIDir(t.Root))
			if err != nil {
				return fmt.Errorf("lab %q's certificates: %w; `pi up --lab %s` makes them", t.Lab, err, t.Lab)
			}
			account := g.account
			if account == "" {
				account = os.Getenv("PI_ACCOUNT")
			}
			data, err := clientcmd.Write(*kubeconfig(p, addr, account))
			if err != nil {
				return fmt.Errorf("write the kubeconfig: %w", err)
			}
			_, err = os.Stdout.Write(data)
			return err
		},
	}
	f.add(cmd.Flags())
	return cmd
}

// kubeconfig is a kubeconfig for the listener at addr with the lab's CA and admin certificate; a non-empty
// account makes the context "pi-<account>" that acts as it.
func kubeconfig(p *pki.PKI, addr, account string) *clientcmdapi.Config {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			// A listener on every address is reached here on loopback, which the certificate names.
			host = "127.0.0.1"
			if ip.To4() == nil {
				host = "::1"
			}
		}
		addr = net.JoinHostPort(host, port)
	}
	c := clientcmdapi.NewConfig()
	c.Clusters["pi"] = &clientcmdapi.Cluster{Server: "https://" + addr, CertificateAuthorityData: p.CAPEM}
	c.AuthInfos["pi-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.AdminPEM, ClientKeyData: p.AdminKey}
	ctx := &clientcmdapi.Context{Cluster: "pi", AuthInfo: "pi-admin", Namespace: "default"}
	name := "pi"
	if account != "" {
		// A user entry that impersonates: a context cannot say `as:` itself, its user can.
		user := "pi-admin-as-" + account
		c.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: p.AdminPEM, ClientKeyData: p.AdminKey, Impersonate: account}
		ctx.AuthInfo = user
		name = "pi-" + account
	}
	c.Contexts[name] = ctx
	c.CurrentContext = name
	return c
}
