package main

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

// startLabWith brings up a throwaway lab below its own "Internet" namespace, with more `pi up` flags, and
// resets it when the test ends.
func startLabWith(t testing.TB, flags ...string) string {
	t.Helper()
	requirePrivileged(t)
	lab := netnstest.Lab()
	hostNS := "inet-" + lab
	if _, err := netns.EnsureNamed(hostNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := piCmd(lab, "reset", "--host-netns", hostNS).CombinedOutput(); err != nil {
			t.Errorf("pi reset: %v\n%s", err, out)
		}
		netns.DeleteNamed(hostNS)
	})
	mustPi(t, lab, append([]string{"up", "--host-netns", hostNS}, flags...)...)
	return lab
}

// inParallel runs n pi commands at once; cmd(i) makes the i-th. It returns each one's output and error.
func inParallel(n int, cmd func(i int) *exec.Cmd) ([]string, []error) {
	outs, errs := make([]string, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		c := cmd(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out, err := c.CombinedOutput()
			outs[i], errs[i] = string(out), err
		}()
	}
	close(start)
	wg.Wait()
	return outs, errs
}

// TestConcurrentCreates fires creates at the lab in parallel, as a class of learners or a script with `&`
// would, and checks that every allocation is unique and every cap holds (defects: 20 parallel Service
// creates gave duplicate ClusterIPs; 8 parallel account creates left the losers <pending> with a shared
// index; 40 creates at 490 pods ended at 530).
func TestConcurrentCreates(t *testing.T) {
	const maxPods = 10
	lab := startLabWith(t, "--max-pods", fmt.Sprint(maxPods), "--fip-quota", "5")
	mustPi(t, lab, "image", "build", "busybox")

	t.Run("services", func(t *testing.T) {
		_, errs := inParallel(20, func(i int) *exec.Cmd {
			c := piCmd(lab, "create", "-f", "-")
			c.Stdin = strings.NewReader(fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc%d\nspec:\n  selector:\n    app: x\n  ports:\n  - port: 80\n", i))
			return c
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("create svc%d: %v", i, err)
			}
		}
		ips := strings.Fields(mustPi(t, lab, "get", "services", "-o", "jsonpath={.items[*].spec.clusterIP}"))
		seen := map[string]bool{}
		for _, ip := range ips {
			if seen[ip] {
				t.Errorf("clusterIP %s given twice", ip)
			}
			seen[ip] = true
		}
		if len(ips) != 20 {
			t.Fatalf("%d services, want 20: %v", len(ips), ips)
		}
	})

	t.Run("accounts", func(t *testing.T) {
		_, errs := inParallel(8, func(i int) *exec.Cmd { return piCmd(lab, "account", "create", fmt.Sprintf("c%d", i)) })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("account create c%d: %v", i, err)
			}
		}
		for i := 0; i < 8; i++ {
			mustPi(t, lab, "wait", "--for=condition=Ready", fmt.Sprintf("account/c%d", i), "--timeout=60s")
		}
		idx := strings.Fields(mustPi(t, lab, "get", "accounts", "-o", "jsonpath={.items[*].status.index}"))
		seen := map[string]bool{}
		for _, x := range idx {
			if seen[x] {
				t.Errorf("account index %s given twice: %v", x, idx)
			}
			seen[x] = true
		}
		start := time.Now()
		_, errs = inParallel(8, func(i int) *exec.Cmd { return piCmd(lab, "account", "delete", fmt.Sprintf("c%d", i)) })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("account delete c%d: %v", i, err)
			}
		}
		if left := strings.Fields(mustPi(t, lab, "get", "accounts", "-o", "name")); len(left) != 1 {
			t.Fatalf("accounts left after deleting c0..c7: %v", left)
		}
		t.Logf("8 accounts deleted in parallel in %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("fips", func(t *testing.T) {
		outs, errs := inParallel(8, func(i int) *exec.Cmd { return piCmd(lab, "create", "fip") })
		var ok []string
		for i, err := range errs {
			if err == nil {
				ok = append(ok, strings.TrimSpace(outs[i]))
			} else if !strings.Contains(outs[i], "exceed the quota") {
				t.Fatalf("create fip: %v: %s", err, outs[i])
			}
		}
		held := strings.Fields(mustPi(t, lab, "get", "fips", "-o", "ip"))
		if len(ok) != 5 || len(held) != 5 {
			t.Fatalf("%d creates succeeded and %d fips are held; the quota is 5", len(ok), len(held))
		}
	})

	t.Run("pods at the cap", func(t *testing.T) {
		for i := 0; i < maxPods-3; i++ {
			mustPi(t, lab, "run", fmt.Sprintf("p%d", i), "--image=busybox", "--", "sleep", "3600")
		}
		outs, errs := inParallel(20, func(i int) *exec.Cmd {
			return piCmd(lab, "run", fmt.Sprintf("q%d", i), "--image=busybox", "--", "sleep", "3600")
		})
		var refused int
		for i, err := range errs {
			if err != nil {
				if !strings.Contains(outs[i], fmt.Sprintf("holds %d pods", maxPods)) {
					t.Fatalf("run q%d refused for another reason: %s", i, outs[i])
				}
				refused++
			}
		}
		if refused != 17 {
			t.Errorf("%d of 20 parallel creates refused at 7 of %d pods, want 17", refused, maxPods)
		}
		// A Deployment is held to the same cap: its ReplicaSet's pods go through the same door.
		mustPi(t, lab, "create", "deployment", "big", "--image=busybox", "--replicas=30", "--", "sleep", "3600")
		deadline := time.Now().Add(20 * time.Second)
		var rsFailure string
		for time.Now().Before(deadline) {
			rsFailure = mustPi(t, lab, "get", "rs", "-o", "jsonpath={.items[*].status.conditions[*].message}")
			if strings.Contains(rsFailure, "holds") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(rsFailure, fmt.Sprintf("holds %d pods", maxPods)) {
			t.Errorf("the ReplicaSet does not say it is held by the cap: %q", rsFailure)
		}
		if n := len(strings.Fields(mustPi(t, lab, "get", "pods", "-o", "name"))); n != maxPods {
			t.Fatalf("%d pods with a cap of %d", n, maxPods)
		}
	})
}
