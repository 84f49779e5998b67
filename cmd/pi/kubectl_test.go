package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pilab/pi/lab/pki"
	"github.com/rogpeppe/go-internal/testscript"
	"k8s.io/client-go/tools/clientcmd"
)

func init() {
	// kubectl ARGS...: the machine's real kubectl, with the script's environment (KUBECONFIG as the script
	// set it); stdout and stderr for the script to check. A missing kubectl is a failure, in CI and here.
	scriptCmds["kubectl"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if _, err := exec.LookPath("kubectl"); err != nil {
			ts.Fatalf("kubectl is not installed: the kubectl-* scripts need it (.ci/run installs it)")
		}
		err := ts.Exec("kubectl", args...)
		if err != nil {
			ts.Logf("[%v]", err)
			if !neg {
				ts.Fatalf("unexpected kubectl failure")
			}
		} else if neg {
			ts.Fatalf("unexpected kubectl success")
		}
	}
}

// TestKubectlKubeconfig: the kubeconfig `pi kubeconfig` prints, read back by client-go's loader, as
// kubectl reads it: cluster "pi" at https://ADDR with the lab CA, user "pi-admin" with the admin's
// certificate and key, context "pi" in namespace default as the current one; with an account, the context
// "pi-<account>" whose user impersonates it. A listener on every address is reached on loopback.
func TestKubectlKubeconfig(t *testing.T) {
	p, err := pki.Ensure(pki.Options{Dir: filepath.Join(t.TempDir(), "pki"), Lab: "kc"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.LoadClient(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := clientcmd.Write(*kubeconfig(c, "127.0.0.1:6443"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatalf("kubeconfig does not load: %v\n%s", err, data)
	}
	cl, u, ctx := cfg.Clusters["pi"], cfg.AuthInfos["pi-admin"], cfg.Contexts["pi"]
	if cl == nil || u == nil || ctx == nil || cfg.CurrentContext != "pi" {
		t.Fatalf("kubeconfig lacks cluster, user or context pi:\n%s", data)
	}
	if cl.Server != "https://127.0.0.1:6443" || string(cl.CertificateAuthorityData) != string(p.CAPEM) {
		t.Errorf("cluster: server %q, CA embedded %v", cl.Server, string(cl.CertificateAuthorityData) == string(p.CAPEM))
	}
	if string(u.ClientCertificateData) != string(p.AdminPEM) || string(u.ClientKeyData) != string(p.AdminKey) || u.Impersonate != "" {
		t.Errorf("user pi-admin does not hold the admin certificate and key, or impersonates %q", u.Impersonate)
	}
	if ctx.Namespace != "default" || ctx.Cluster != "pi" || ctx.AuthInfo != "pi-admin" {
		t.Errorf("context pi: %+v", ctx)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatalf("client config: %v", err)
	}
	if rc.Host != "https://127.0.0.1:6443" || rc.Impersonate.UserName != "" {
		t.Errorf("rest config host %q, impersonating %q", rc.Host, rc.Impersonate.UserName)
	}

	cluster := kubeconfig(c, "0.0.0.0:7443").Clusters["pi"]
	data, _ = clientcmd.Write(*accountKubeconfig(cluster, "alice", "pilab_secret"))
	cfg, err = clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CurrentContext != "pi-alice" || cfg.Contexts["pi-alice"] == nil {
		t.Fatalf("current context %q, want pi-alice:\n%s", cfg.CurrentContext, data)
	}
	rc, err = clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rc.BearerToken != "pilab_secret" || rc.Host != "https://127.0.0.1:7443" || rc.Impersonate.UserName != "" || len(rc.CertData) != 0 || len(rc.KeyData) != 0 {
		t.Errorf("alice's kubeconfig: host %q, token %q, impersonating %q, cert %d bytes; want https://127.0.0.1:7443 with her token alone",
			rc.Host, rc.BearerToken, rc.Impersonate.UserName, len(rc.CertData))
	}
	if strings.Contains(string(data), string(c.AdminKey)) {
		t.Errorf("alice's kubeconfig holds the admin's key:\n%s", data)
	}
}

// TestKubectlKubeconfigNotRunning: for a lab that is not running (never made here), `pi kubeconfig` says to
// run `pi up`.
func TestKubectlKubeconfigNotRunning(t *testing.T) {
	root := t.TempDir()
	cmd := newRoot()
	cmd.SetArgs([]string{"kubeconfig", "--lab", "nolab", "--root", root, "--run-dir", filepath.Join(root, "run")})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), `lab "nolab" is not running; start it with `+"`pi up --lab nolab`") {
		t.Fatalf("pi kubeconfig of a lab that is not running: %v, want it to say to run pi up", err)
	}
}
