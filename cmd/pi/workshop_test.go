package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/vishvananda/netlink"
	"k8s.io/client-go/tools/clientcmd"
)

// workshopAddr is the lab server's address on its host side in TestWorkshop: what learners dial.
const workshopAddr = "192.0.2.10"

// TestWorkshop serves a lab to learners as a workshop server does: the HTTPS listener on an address of
// the lab's host side (a namespace the test made, where the learners' kubectl runs), three accounts made
// by `pi workshop create` with a kubeconfig each, and a credential matrix over them: each learner's own
// objects work, another's answer as if they did not exist, and a missing, rotated or deleted
// account's token is a 401.
func TestWorkshop(t *testing.T) {
	requirePrivileged(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	lab := netnstest.Lab()
	hostNS := "inet-" + lab
	path, err := netns.EnsureNamed(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := piCmd(lab, "reset", "--host-netns", hostNS).CombinedOutput(); err != nil {
			t.Errorf("pi reset: %v\n%s", err, out)
		}
		netns.DeleteNamed(hostNS)
	})
	// The server's address on its host side (on lo: a kernel without dummy links).
	h, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	lo, _ := h.LinkByName("lo")
	addr, _ := netlink.ParseAddr(workshopAddr + "/32")
	err = h.AddrAdd(lo, addr)
	h.Close()
	if err != nil {
		t.Fatal(err)
	}
	mustPi(t, lab, "up", "--host-netns", hostNS, "--listen", workshopAddr+":6443")
	mustPi(t, lab, "image", "build", "busybox")

	dir := t.TempDir()
	out := mustPi(t, lab, "workshop", "create", "--learners", "3", "--out", dir)
	for _, name := range []string{"learner01", "learner02", "learner03"} {
		file := filepath.Join(dir, name+".kubeconfig")
		if !regexp.MustCompile(`(?m)^` + name + ` +` + regexp.QuoteMeta(file) + `$`).MatchString(out) {
			t.Errorf("pi workshop create does not list %s → %s:\n%s", name, file, out)
		}
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", file, fi.Mode().Perm())
		}
		cfg, err := clientcmd.LoadFromFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if s := cfg.Clusters["pi"].Server; s != "https://"+workshopAddr+":6443" {
			t.Errorf("%s names server %s, want https://%s:6443", file, s, workshopAddr)
		}
		if u := cfg.AuthInfos[name]; u == nil || u.Token == "" || len(u.ClientKeyData) != 0 {
			t.Errorf("%s: user %s holds no token of its own, or a key", file, name)
		}
	}
	if out, err := piCmd(lab, "workshop", "create", "--learners", "2", "--out", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), `account "learner01" exists already`) {
		t.Errorf("a second workshop over the same names: %v\n%s", err, out)
	}

	// A learner's kubectl runs on the host side, where the listener is, with nothing but its kubeconfig.
	home := t.TempDir()
	kc := func(learner string, args ...string) (string, error) {
		c := exec.Command("ip", append([]string{"netns", "exec", hostNS, kubectl, "--kubeconfig", filepath.Join(dir, learner+".kubeconfig"), "--request-timeout=30s"}, args...)...)
		c.Env = append(os.Environ(), "HOME="+home)
		b, err := c.CombinedOutput()
		return string(b), err
	}
	must := func(learner string, args ...string) string {
		t.Helper()
		out, err := kc(learner, args...)
		if err != nil {
			t.Fatalf("%s: kubectl %s: %v\n%s", learner, strings.Join(args, " "), err, out)
		}
		return out
	}
	fails := func(learner, want string, args ...string) {
		t.Helper()
		out, err := kc(learner, args...)
		if err == nil || !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("%s: kubectl %s: %v\n%s\nwant an error matching %s", learner, strings.Join(args, " "), err, out, want)
		}
	}

	// Each learner makes a pod of the same name in their own network; learner01 one more, "secret".
	for _, l := range []string{"learner01", "learner02", "learner03"} {
		must(l, "run", "box", "--image=busybox", "--", "sleep", "3600")
	}
	must("learner01", "run", "secret", "--image=busybox", "--labels=app=secret", "--", "sleep", "3600")
	for _, l := range []string{"learner01", "learner02", "learner03"} {
		must(l, "wait", "--for=condition=Ready", "pod/box", "--timeout=120s")
	}
	must("learner01", "wait", "--for=condition=Ready", "pod/secret", "--timeout=120s")

	t.Run("own objects", func(t *testing.T) {
		if out := must("learner02", "exec", "box", "--", "hostname"); strings.TrimSpace(out) != "box" {
			t.Errorf("learner02 exec box hostname: %q", out)
		}
		must("learner02", "label", "pod", "box", "tier=web")
		if out := must("learner02", "get", "pods", "-o", "name"); strings.TrimSpace(out) != "pod/box" {
			t.Errorf("learner02's pods: %q, want pod/box alone", out)
		}
		must("learner02", "logs", "box")
		// Pi's quotas: 5 Services, 20 pods, 5 Floating IPs an account.
		if out := must("learner03", "get", "account", "learner03", "-o", "jsonpath={.spec.podQuota} {.spec.serviceQuota} {.spec.fipQuota}"); out != "20 5 5" {
			t.Errorf("learner03's quotas: %q, want 20 5 5", out)
		}
		for i := 1; i <= 5; i++ {
			must("learner03", "create", "service", "clusterip", fmt.Sprintf("s%d", i), "--tcp=80")
		}
		fails("learner03", `exceeded quota: account "learner03" may hold 5 Services`, "create", "service", "clusterip", "s6", "--tcp=80")
		if out := must("learner01", "get", "accounts", "-o", "name"); !strings.Contains(out, "learner01") || strings.Contains(out, "learner02") || strings.Contains(out, "default") {
			t.Errorf("learner01 lists accounts: %q, want its own alone", out)
		}
	})

	// learner02 against learner01's pod "secret" and a name nobody has: the same answers, NotFound.
	t.Run("another account's objects", func(t *testing.T) {
		for _, name := range []string{"secret", "nobody"} {
			// (kubectl logs words it "error: error from server (NotFound): ...".)
			notFound := `(?mi)^(error: )?Error from server \(NotFound\): pods "` + name + `" not found`
			fails("learner02", notFound, "get", "pod", name)
			fails("learner02", notFound, "exec", name, "--", "true")
			fails("learner02", notFound, "logs", name)
			fails("learner02", notFound, "label", "pod", name, "stolen=yes")
			fails("learner02", notFound, "delete", "pod", name)
			fails("learner02", notFound, "port-forward", "pod/"+name, "18080:80")
		}
		for _, args := range [][]string{{"get", "pods", "-A"}, {"get", "pods", "-l", "app=secret"}, {"get", "pods", "--field-selector", "metadata.name=secret"},
			{"get", "events", "-A"}, {"get", "all", "-A"}, {"get", "endpoints", "-A"}} {
			if out := must("learner02", args...); strings.Contains(out, "secret") {
				t.Errorf("learner02: kubectl %s shows learner01's pod:\n%s", strings.Join(args, " "), out)
			}
		}
		fails("learner02", `(?m)^Error from server \(NotFound\): accounts\.\S+ "learner01" not found`, "get", "account", "learner01")
		fails("learner02", `(?m)^Error from server \(Forbidden\): .*cannot impersonate`, "--as=learner01", "get", "pods")
		fails("learner02", `(?m)^Error from server \(Forbidden\)`, "create", "namespace", "other")
		fails("learner02", `(?m)^Error from server \(Forbidden\)`, "patch", "account", "learner02", "--type=merge", "-p", `{"spec":{"fipQuota":50}}`)
		// learner01's pod is untouched by all that.
		if out := must("learner01", "get", "pod", "secret", "-o", "jsonpath={.status.phase} {.metadata.labels}"); !strings.HasPrefix(out, "Running") || strings.Contains(out, "stolen") {
			t.Errorf("learner01's pod after learner02's attempts: %q", out)
		}
	})

	// A learner's pod reaches the Internet side through its router's NAT, but not the lab server's
	// listener there.
	t.Run("pods cannot reach the listener", func(t *testing.T) {
		out, _ := kc("learner02", "exec", "box", "--", "sh", "-c", "nc -w 3 "+workshopAddr+" 6443 </dev/null && echo CONNECTED; echo done")
		t.Logf("nc from learner02's pod to the listener: %s", out)
		if strings.Contains(out, "CONNECTED") || !strings.Contains(out, "done") {
			t.Errorf("learner02's pod connected to the listener %s:6443:\n%s", workshopAddr, out)
		}
	})

	t.Run("credentials", func(t *testing.T) {
		// No token at all.
		cfg, _ := clientcmd.LoadFromFile(filepath.Join(dir, "learner03.kubeconfig"))
		cfg.AuthInfos["learner03"].Token = ""
		cfg.AuthInfos["learner03"].Username, cfg.AuthInfos["learner03"].Password = "learner03", "guess"
		clientcmd.WriteToFile(*cfg, filepath.Join(dir, "notoken.kubeconfig"))
		fails("notoken", `You must be logged in to the server \(Unauthorized\)`, "get", "pods")
		// A rotation: the old kubeconfig stops working, a new one made around the new token works.
		old := filepath.Join(dir, "learner03.kubeconfig")
		tok := strings.TrimSpace(mustPi(t, lab, "account", "token", "learner03", "--rotate"))
		fails("learner03", `You must be logged in to the server \(Unauthorized\)`, "get", "pods")
		cfg, _ = clientcmd.LoadFromFile(old)
		cfg.AuthInfos["learner03"].Token = tok
		clientcmd.WriteToFile(*cfg, filepath.Join(dir, "rotated.kubeconfig"))
		if out := must("rotated", "get", "pods", "-o", "name"); strings.TrimSpace(out) != "pod/box" {
			t.Errorf("learner03 with the rotated token: %q", out)
		}
	})

	status := mustPi(t, lab, "workshop", "status")
	if !regexp.MustCompile(`(?m)^learner01 +10\.244\.0\.0/16 +2 +2 +0 +0 +1 `).MatchString(status) ||
		!regexp.MustCompile(`(?m)^learner03 +\S+ +1 +1 +5 +0 +1 `).MatchString(status) {
		t.Errorf("pi workshop status:\n%s", status)
	}

	mustPi(t, lab, "workshop", "delete")
	fails("learner01", `You must be logged in to the server \(Unauthorized\)`, "get", "pods")
	if out, _ := piCmd(lab, "get", "accounts", "-o", "name").CombinedOutput(); strings.Contains(string(out), "learner") {
		t.Errorf("accounts after pi workshop delete:\n%s", out)
	}
}
