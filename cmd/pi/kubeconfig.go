package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"

	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/server"

	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/lab/pki"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func newKubeconfigCmd() *cobra.Command {
	var f labFlags
	var serverURL string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig that points kubectl at the lab (the admin's; --account A: A's own, with a new token)",
		Long: `Print a kubeconfig for the lab's HTTPS listener, cluster "pi" with the lab's CA.

Without --account it is the admin's: user "pi-admin" with the admin's client certificate, context "pi"
(namespace default). It holds the admin's key: keep it private. The admin acts as an account with
kubectl --as=NAME.

With --account A it is A's own, to hand to a learner: user "A" with a new bearer token of A's (shown only
here; the lab keeps a hash), context "pi-A". A's other tokens keep working until
` + "`pi account token A --rotate` or `--revoke`" + `. --server is the address learners dial (the listener's
own by default; for a listener on 0.0.0.0 give this machine's name or address, and make sure the
certificate names it: pi up --tls-san NAME).

  pi kubeconfig > ~/.kube/config            # or: pi kubeconfig > pi.kubeconfig; export KUBECONFIG=$PWD/pi.kubeconfig
  kubectl get pods
  pi kubeconfig --account alice --server https://lab.example:6443 > alice.kubeconfig`,
		Args:    cobra.NoArgs,
		GroupID: "lab",
		RunE: func(cmd *cobra.Command, args []string) error {
			account := g.account
			if account == "" {
				account = os.Getenv("PI_ACCOUNT")
			}
			kc, err := labKubeconfig(cmd, f.raw(), account, serverURL)
			if err != nil {
				return err
			}
			data, err := clientcmd.Write(*kc)
			if err != nil {
				return fmt.Errorf("write the kubeconfig: %w", err)
			}
			_, err = os.Stdout.Write(data)
			return err
		},
	}
	f.add(cmd.Flags())
	cmd.Flags().StringVar(&serverURL, "server", "", "the API server URL the kubeconfig names (default: the lab's listener)")
	return cmd
}

// labKubeconfig is a kubeconfig for the running lab: the admin's (account ""), or account's own with a
// token issued for it now.
func labKubeconfig(cmd *cobra.Command, raw daemon.Config, account, serverURL string) (*clientcmdapi.Config, error) {
	t, err := locate(cmd, raw, false)
	if err != nil {
		return nil, err
	}
	if t.Pid == 0 {
		return nil, fmt.Errorf("lab %q is not running; start it with `pi up --lab %s`, then ask again", t.Lab, t.Lab)
	}
	addr := ""
	for _, dir := range []string{t.RunDir, t.Root} {
		if rec, _ := daemon.ReadIdentity(dir); rec != nil && rec.Lab == t.Lab && rec.KubeListen != "" {
			addr = rec.KubeListen
			break
		}
	}
	if addr == "" {
		return nil, fmt.Errorf("lab %q records no HTTPS listener (its daemon predates it, or is still starting); restart it with `pi down --lab %s; pi up --lab %s`", t.Lab, t.Lab, t.Lab)
	}
	p, err := pki.LoadClient(daemon.PKIDir(t.Root))
	if err != nil {
		return nil, fmt.Errorf("lab %q's certificates: %w; `pi up --lab %s` makes them", t.Lab, err, t.Lab)
	}
	kc := kubeconfig(p, addr)
	if serverURL != "" {
		if u, err := url.Parse(serverURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("--server %q: want https://HOST:PORT, the address learners reach the lab's listener at", serverURL)
		}
		kc.Clusters["pi"].Server = serverURL
	}
	if account == "" {
		return kc, nil
	}
	is, err := issueToken(cmd.Context(), client.New(g.socketPath(), account), account, false)
	if err != nil {
		return nil, err
	}
	return accountKubeconfig(kc.Clusters["pi"], account, is.Token), nil
}

// accountKubeconfig is a kubeconfig with one context, "pi-<account>", whose user holds the account's token.
func accountKubeconfig(cluster *clientcmdapi.Cluster, account, token string) *clientcmdapi.Config {
	c := clientcmdapi.NewConfig()
	c.Clusters["pi"] = cluster
	c.AuthInfos[account] = &clientcmdapi.AuthInfo{Token: token}
	c.Contexts["pi-"+account] = &clientcmdapi.Context{Cluster: "pi", AuthInfo: account, Namespace: "default"}
	c.CurrentContext = "pi-" + account
	return c
}

// issueToken asks the daemon for a new token of account's (with rotate: its only one).
func issueToken(ctx context.Context, cl *client.Client, account string, rotate bool) (*server.Issued, error) {
	q := url.Values{}
	if rotate {
		q.Set("rotate", "true")
	}
	var is server.Issued
	if err := cl.Do(ctx, http.MethodPost, "/x/accounts/"+url.PathEscape(account)+"/tokens", q, nil, &is); err != nil {
		if client.IsNotFound(err) {
			return nil, fmt.Errorf("account %q does not exist; create it with `pi account create %s`", account, account)
		}
		return nil, fmt.Errorf("issue a token for account %q: %w", account, err)
	}
	return &is, nil
}

// kubeconfig is the admin's kubeconfig for the listener at addr: the lab's CA and admin certificate.
func kubeconfig(p *pki.PKI, addr string) *clientcmdapi.Config {
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
	c.Contexts["pi"] = ctx
	c.CurrentContext = "pi"
	return c
}
