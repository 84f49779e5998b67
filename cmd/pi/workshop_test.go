package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
		// Its use of a workshop account's ceilings (1 CPU, 2Gi), as the lab reads its cgroup.
		if out := must("learner01", "get", "accounts"); !regexp.MustCompile(`(?m)^NAME +NETWORK +PODS +SERVICES +FIPS +CPU +MEMORY +AGE\n` +
			`learner01 +10\.244\.0\.0/16 +2 +0 +0 +\d+m?/1 +\d+Mi/2Gi +\S+\n$`).MatchString(out) {
			t.Errorf("learner01: kubectl get accounts:\n%s", out)
		}
	})

	// The Kubernetes lesson (seed 003), typed by learner03 on its own side with kubectl and its kubeconfig:
	// pods on the flat network, an interactive shell, curl from pod to pod and to podinfo's /env.
	t.Run("the Kubernetes lesson, remotely", func(t *testing.T) {
		mustPi(t, lab, "image", "build", "nginx", "httpd", "podinfo")
		must("learner03", "run", "nginx", "--image=nginx")
		must("learner03", "run", "httpd", "--image=httpd")
		must("learner03", "create", "deployment", "podinfo", "--image=podinfo", "--replicas=3")
		must("learner03", "wait", "--for=condition=Ready", "pod/nginx", "pod/httpd", "--timeout=120s")
		must("learner03", "rollout", "status", "deployment/podinfo", "--timeout=120s")
		out := must("learner03", "get", "pods", "-o", "wide")
		if !regexp.MustCompile(`(?m)^NAME +READY +STATUS +RESTARTS +AGE +IP +NODE +NOMINATED NODE +READINESS GATES$`).MatchString(out) {
			t.Errorf("learner03: kubectl get pods -o wide:\n%s", out)
		}
		ip := func(name string) string {
			m := regexp.MustCompile(`(?m)^` + name + `\S* +1/1 +Running +\d+ +\S+ +(10\.244\.\d+\.\d+) `).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("learner03: no running %s with an IP in\n%s", name, out)
			}
			return m[1]
		}
		interactiveShell(t, "learner03's kubectl", func() *exec.Cmd {
			c := exec.Command("ip", "netns", "exec", hostNS, kubectl, "--kubeconfig", filepath.Join(dir, "learner03.kubeconfig"), "exec", "-it", "nginx", "--", "sh")
			c.Env = append(os.Environ(), "HOME="+home)
			return c
		}())
		if out := must("learner03", "exec", "nginx", "--", "curl", "-s", ip("httpd")); !strings.Contains(out, "It works!") {
			t.Errorf("learner03: curl httpd's %s from nginx: %q", ip("httpd"), out)
		}
		if out := must("learner03", "exec", "nginx", "--", "curl", "-s", ip("podinfo")+":9898/env"); !strings.Contains(out, "HOSTNAME=podinfo-") {
			t.Errorf("learner03: curl podinfo's %s:9898/env from nginx: %q", ip("podinfo"), out)
		}
		must("learner03", "delete", "deployment", "podinfo", "--wait")
		must("learner03", "delete", "pod", "nginx", "httpd", "--wait")
		must("learner03", "wait", "--for=delete", "pod", "-l", "app=podinfo", "--timeout=60s")
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

	// A workshop server's own services are closed to the learners' pods: its listener, and any other
	// (here a TCP server of the test's on the server's address), while the server's own connections into
	// the lab (a Floating IP fetched, below) still get their replies.
	t.Run("pods cannot reach the server", func(t *testing.T) {
		var l net.Listener
		if err := netns.Do(path, func() (err error) {
			l, err = net.Listen("tcp", workshopAddr+":8081")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := l.Accept(); err == nil {
				accepted <- struct{}{}
				c.Close()
			}
		}()
		for _, port := range []string{"6443", "8081"} {
			out, _ := kc("learner02", "exec", "box", "--", "sh", "-c", "nc -w 3 "+workshopAddr+" "+port+" </dev/null && echo CONNECTED; echo done")
			t.Logf("nc from learner02's pod to the server's port %s: %s", port, out)
			if strings.Contains(out, "CONNECTED") || !strings.Contains(out, "done") {
				t.Errorf("learner02's pod connected to the server's %s:%s:\n%s", workshopAddr, port, out)
			}
		}
		select {
		case <-accepted:
			t.Errorf("the server's own service on %s:8081 accepted a connection from a learner's pod", workshopAddr)
		default:
		}
	})

	// pi itself as a learner's client: on the host side, with nothing but learner02's kubeconfig (no socket,
	// no lab files), as on a learner's own laptop.
	t.Run("pi as a remote client", func(t *testing.T) {
		run := func(args ...string) (string, error) {
			// (The test binary is pi when called by that name: bash's exec -a names it.)
			c := exec.Command("ip", append([]string{"netns", "exec", hostNS, "bash", "-c", `exec -a pi "$0" "$@"`, os.Args[0],
				"--kubeconfig", filepath.Join(dir, "learner02.kubeconfig")}, args...)...)
			c.Env = append(os.Environ(), "HOME="+home, "PI_SOCKET=", "PI_LAB=", "PI_ACCOUNT=")
			b, err := c.CombinedOutput()
			return string(b), err
		}
		pi := func(args ...string) string {
			t.Helper()
			out, err := run(args...)
			if err != nil {
				t.Fatalf("learner02: pi %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return out
		}
		if out := pi("get", "pods"); !regexp.MustCompile(`(?m)^box +1/1 +Running`).MatchString(out) || strings.Contains(out, "secret") {
			t.Errorf("learner02: pi get pods:\n%s", out)
		}
		if out := pi("exec", "box", "--", "hostname"); strings.TrimSpace(out) != "box" {
			t.Errorf("learner02: pi exec box -- hostname: %q", out)
		}
		manifest := filepath.Join(dir, "web.yml")
		os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {run: box}\n  ports:\n  - port: 80\n"), 0o644)
		if out := pi("create", "-f", manifest); strings.TrimSpace(out) != `service "web" created` {
			t.Errorf("learner02: pi create -f: %q", out)
		}
		fip := strings.TrimSpace(pi("create", "fip"))
		if out := pi("get", "fips"); !strings.Contains(out, fip) {
			t.Errorf("learner02: pi get fips does not show its new %s:\n%s", fip, out)
		}
		if out := pi("bill"); !strings.Contains(out, "learner02") || strings.Contains(out, "learner01") {
			t.Errorf("learner02: pi bill, want its own account alone:\n%s", out)
		}
		if out := pi("network", "-o", "json"); !strings.Contains(out, `"box"`) || strings.Contains(out, `"secret"`) {
			t.Errorf("learner02: pi network shows no box, or learner01's secret:\n%s", out)
		}
		if out, err := run("get", "pod", "secret"); err == nil || !strings.Contains(out, `pods "secret" not found`) {
			t.Errorf("learner02: pi get pod secret: %v\n%s", err, out)
		}
		if out, err := run("--account", "learner01", "get", "pods"); err == nil || !strings.Contains(out, "cannot impersonate") {
			t.Errorf("learner02: pi --account learner01 get pods: %v\n%s", err, out)
		}
		if out, err := run("account", "create", "sneaky"); err == nil || !strings.Contains(out, "orbidden") {
			t.Errorf("learner02: pi account create: %v\n%s", err, out)
		}
		// A trace never shows another account's network, not even through its (public) Floating IP.
		other := strings.TrimSpace(mustPi(t, lab, "--account", "learner01", "create", "fip"))
		if out, err := run("trace", "--from", "internet", "http://"+other+":8080/"); err == nil || !strings.Contains(out, `is not one of account "learner02"'s Floating IPs`) {
			t.Errorf("learner02: pi trace --from internet to learner01's FIP %s: %v\n%s", other, err, out)
		}
		mustPi(t, lab, "--account", "learner01", "delete", "fip", other)
		pi("delete", "fip", fip)
		pi("delete", "service", "web")

		// pi tutorial from the learner's side: the live pane shows learner02's pods (a watch through the
		// kubeconfig), and a step runs and passes.
		tutorial := filepath.Join(dir, "tutorial.yaml")
		os.WriteFile(tutorial, []byte("title: Look around\nsteps:\n  - title: Your pods\n    commands:\n      - pi get pods\n    checks:\n      - match: box\n"), 0o644)
		tc := exec.Command("ip", "netns", "exec", hostNS, "bash", "-c", `exec -a pi "$0" "$@"`, os.Args[0],
			"--kubeconfig", filepath.Join(dir, "learner02.kubeconfig"), "tutorial", tutorial)
		tc.Env = append(os.Environ(), "HOME="+home, "PI_SOCKET=", "PI_LAB=", "PI_ACCOUNT=")
		send, waitFor, exited := ptyScreen(t, tc)
		waitFor("box")
		waitFor("to begin")
		send("\r")
		waitFor("Your pods")
		time.Sleep(500 * time.Millisecond)
		send("\r")
		waitFor("passed")
		send("q")
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("learner02: pi tutorial ended with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("learner02: pi tutorial did not quit on q")
		}

		// A scenario played from the learner's side: its commands are learner02's pi, its Floating IP check
		// ("from the laptop") is fetched by the lab from its Internet side, and each step's result is
		// recorded for the instructor. Step 3 fails on purpose (no such pod).
		scenario := filepath.Join(dir, "07-remote.yaml")
		os.WriteFile(scenario, []byte(`title: Remote
steps:
  - title: A web server
    commands:
      - pi run remote-web --image=busybox --port=8080 -- sh -c 'echo remote-hello > /tmp/index.html; exec httpd -f -p 8080 -h /tmp'
      - run: pi create fip
        capture: {FIP: '(?m)^(\d+\.\d+\.\d+\.\d+)$'}
      - pi expose pod remote-web --port=8080 --type=LoadBalancer --load-balancer-ip={{.FIP}}
    checks:
      - run: pi wait --for=condition=Ready pod/remote-web --timeout=120s
  - title: Open it from the laptop
    commands:
      - http: http://{{.FIP}}:8080/
        within: 60s
    checks:
      - match: remote-hello
  - title: A pod nobody made
    checks:
      - run: pi get pod nobody
cleanup:
  - pi delete service remote-web --ignore-not-found
  - pi delete fip {{.FIP}} --ignore-not-found
  - pi delete pod remote-web --ignore-not-found
`), 0o644)
		out, err := run("scenario", "run", scenario)
		t.Logf("learner02: pi scenario run:\n%s", out)
		if err == nil || !strings.Contains(out, "step 3/3") {
			t.Errorf("learner02: pi scenario run %s: %v, want step 3 to fail", scenario, err)
		}
		status := mustPi(t, lab, "workshop", "status")
		if !regexp.MustCompile(`(?m)^learner02 .* \$\d+\.\d\d +remote:2/3 `).MatchString(status) {
			t.Errorf("pi workshop status does not show learner02's spend and progress remote:2/3:\n%s", status)
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

	// A learner's open watch ends when the workshop deletes the account.
	watch := exec.Command("ip", "netns", "exec", hostNS, kubectl, "--kubeconfig", filepath.Join(dir, "learner01.kubeconfig"), "get", "pods", "-w")
	watch.Env = append(os.Environ(), "HOME="+home)
	var watchOut strings.Builder
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	watched := make(chan error, 1)
	go func() { watched <- watch.Wait() }()
	time.Sleep(time.Second)

	mustPi(t, lab, "workshop", "delete")
	select {
	case <-watched:
		t.Logf("learner01's watch ended with the account:\n%s", watchOut.String())
	case <-time.After(10 * time.Second):
		watch.Process.Kill()
		<-watched
		t.Errorf("learner01's kubectl get pods -w still runs 10s after pi workshop delete:\n%s", watchOut.String())
	}
	fails("learner01", `You must be logged in to the server \(Unauthorized\)`, "get", "pods")
	if out, _ := piCmd(lab, "get", "accounts", "-o", "name").CombinedOutput(); strings.Contains(string(out), "learner") {
		t.Errorf("accounts after pi workshop delete:\n%s", out)
	}
}

// TestNoisyNeighbour: one learner's fork bomb and memory hog leave another learner's nginx answering
// within its budget: the bomb stops at its container's pids limit, the hog is OOM-killed at its memory
// limit, and every request of the other account's client is answered in under a second (its baseline,
// measured first, is tens of milliseconds).
func TestNoisyNeighbour(t *testing.T) {
	lab := startLab(t)
	mustPi(t, lab, "image", "build", "busybox", "nginx")
	mustPi(t, lab, "account", "create", "bob")
	// eve's pods together get half a CPU (issue 11's account cgroup).
	mustPi(t, lab, "account", "create", "eve", "--cpu-quota", "500m", "--memory-quota", "2Gi")
	mustPi(t, lab, "--account", "bob", "run", "web", "--image=nginx")
	mustPi(t, lab, "--account", "bob", "run", "client", "--image=busybox", "--", "sleep", "3600")
	mustPi(t, lab, "--account", "eve", "run", "bomb", "--image=busybox", "--", "sleep", "3600")
	mustPi(t, lab, "--account", "bob", "wait", "--for=condition=Ready", "pod/web", "pod/client", "--timeout=90s")
	mustPi(t, lab, "--account", "eve", "wait", "--for=condition=Ready", "pod/bomb", "--timeout=90s")
	web := strings.TrimSpace(mustPi(t, lab, "--account", "bob", "get", "pod", "web", "-o", "jsonpath={.status.podIP}"))

	// 30 requests from bob's client, each timed inside the pod (busybox's time: "real\t0m 0.02s").
	requests := func() []float64 {
		t.Helper()
		out := mustPi(t, lab, "--account", "bob", "exec", "client", "--", "sh", "-c",
			"for i in $(seq 30); do time wget -q -O /dev/null http://"+web+"/; done 2>&1")
		var secs []float64
		for _, m := range regexp.MustCompile(`real\s+(\d+)m\s*([\d.]+)s`).FindAllStringSubmatch(out, -1) {
			var min, s float64
			fmt.Sscan(m[1], &min)
			fmt.Sscan(m[2], &s)
			secs = append(secs, min*60+s)
		}
		if len(secs) != 30 {
			t.Fatalf("bob's client: %d timed requests, want 30:\n%s", len(secs), out)
		}
		return secs
	}
	worst := func(s []float64) float64 { return slices.Max(s) }
	baseline := requests()
	t.Logf("bob's requests alone: worst %.2fs", worst(baseline))

	// eve: busy loops and a fork bomb in one container, started in the background of an exec.
	bomb := piCmd(lab, "--account", "eve", "exec", "bomb", "--", "sh", "-c",
		`for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done; f() { f | f & }; f; sleep 600`)
	if err := bomb.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { bomb.Process.Kill(); bomb.Wait() }()
	time.Sleep(5 * time.Second)
	// eve's account cgroup (/<lab>/a-<account UID>, the lab's containerd namespace being its name) holds
	// all of eve's busy loops to its 500m: the bomb's container alone may have 1 CPU.
	eveUID := strings.TrimSpace(mustPi(t, lab, "get", "account", "eve", "-o", "jsonpath={.metadata.uid}"))
	bombUID := strings.TrimSpace(mustPi(t, lab, "--account", "eve", "get", "pod", "bomb", "-o", "jsonpath={.metadata.uid}"))
	eveCgroup := filepath.Join("/sys/fs/cgroup/cpuacct", lab, "a-"+eveUID)
	cpuUsage := func() time.Duration {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(eveCgroup, "cpuacct.usage"))
		if err != nil {
			t.Fatalf("eve's account cgroup: %v", err)
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return time.Duration(n)
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpuacct"); err == nil { // cgroup v1, as this machine and CI
		u0, w0 := cpuUsage(), time.Now()
		time.Sleep(3 * time.Second)
		used, wall := cpuUsage()-u0, time.Since(w0)
		t.Logf("eve's pods used %s of CPU in %s (quota 500m)", used, wall.Round(time.Millisecond))
		if used > wall/2+300*time.Millisecond {
			t.Errorf("eve's pods used %s of CPU in %s, above the account's 500m", used, wall.Round(time.Millisecond))
		}
	}
	// pi get accounts shows eve's pods at their ceiling, and bob's far below his.
	accounts := mustPi(t, lab, "get", "accounts")
	t.Logf("pi get accounts during eve's fork bomb:\n%s", accounts)
	if m := regexp.MustCompile(`(?m)^eve +\S+ +1 +0 +0 +(\d+)m/500m +\d+Mi/2Gi `).FindStringSubmatch(accounts); m == nil {
		t.Errorf("pi get accounts shows no CPU/MEMORY of eve's 500m and 2Gi:\n%s", accounts)
	} else if n, _ := strconv.Atoi(m[1]); n < 300 || n > 650 {
		t.Errorf("pi get accounts: eve uses %sm of 500m during the bomb, want about 500m", m[1])
	}
	during := requests()
	t.Logf("bob's requests during eve's fork bomb: worst %.2fs", worst(during))
	if w := worst(during); w >= 1 {
		t.Errorf("during eve's fork bomb bob's slowest request took %.2fs, want < 1s (alone: %.2fs)", w, worst(baseline))
	}
	t0 := time.Now()
	mustPi(t, lab, "--account", "eve", "delete", "pod", "bomb")
	t.Logf("deleted the bomb in %s", time.Since(t0))
	if left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", lab, "a-"+eveUID, "p-"+bombUID)); len(left) > 0 {
		t.Errorf("the bomb pod's cgroups outlive it: %v", left)
	}

	// A memory hog: dd's one 700 MiB block, past the container's 512 MiB limit.
	mustPi(t, lab, "--account", "eve", "run", "hog", "--image=busybox", "--", "sleep", "3600")
	mustPi(t, lab, "--account", "eve", "wait", "--for=condition=Ready", "pod/hog", "--timeout=90s")
	hog := piCmd(lab, "--account", "eve", "exec", "hog", "--", "sh", "-c", "dd if=/dev/zero of=/dev/null bs=700M count=1")
	t1 := time.Now()
	hogOut, err := hog.CombinedOutput()
	t.Logf("hog ran %s", time.Since(t1))
	if code := hog.ProcessState.ExitCode(); err == nil || code != 137 {
		t.Errorf("eve's memory hog: exit %d (%v), want 137 (killed by its memory limit):\n%s", code, err, hogOut)
	}
	if w := worst(requests()); w >= 1 {
		t.Errorf("after eve's memory hog bob's slowest request took %.2fs, want < 1s", w)
	}
	// eve goes, and so does her account's cgroup, in every hierarchy.
	mustPi(t, lab, "account", "delete", "eve", "--all")
	if left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", lab, "a-"+eveUID)); len(left) > 0 {
		t.Errorf("eve's account cgroups outlive her account: %v", left)
	}
}
