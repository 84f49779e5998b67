package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestKubectlExplain runs the real kubectl against a lab (through the loopback forwarder): `kubectl
// explain` prints Kubernetes' descriptions of core and apps fields and pilab's of its own kinds, from the
// lab's OpenAPI v3 documents; and kubectl's default validation is the server's strict one (it sends
// fieldValidation=Strict because the documents say the kind's PATCH takes it), so an unknown field is
// refused by name.
func TestKubectlExplain(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		requirePrivileged(t)
		t.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	lab := startLab(t)
	server := forwardTCP(t, filepath.Join("/run/pilab", lab, "pi.sock"))
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config"), nil, 0o600)
	kc := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(kubectl, append([]string{"--server", server}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "config"))
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	explain := func(what string, want ...string) {
		t.Helper()
		out, err := kc("", "explain", what)
		if err != nil {
			t.Fatalf("kubectl explain %s: %v\n%s", what, err, out)
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(out) {
				t.Errorf("kubectl explain %s: no %q in:\n%s", what, w, out)
			}
		}
	}
	explain("pod.spec.containers",
		`KIND:\s+Pod`, `VERSION:\s+v1`, `FIELD:\s+containers <\[\]Container>`,
		`List of containers belonging to the pod\.`, `FIELDS:`, `\n  image\s+<string>`,
		`\n  name\s+<string> -required-`, `\n  ports\s+<\[\]ContainerPort>`)
	explain("deployment.spec.strategy",
		`GROUP:\s+apps`, `KIND:\s+Deployment`, `FIELD:\s+strategy <DeploymentStrategy>`,
		`The deployment strategy to use to replace existing pods with new ones\.`,
		`\n  rollingUpdate\s+<RollingUpdateDeployment>`, `\n  type\s+<string>`)
	explain("fip",
		`GROUP:\s+pilab\.dev`, `KIND:\s+FloatingIP`, `address from the lab's pool`,
		`\n  spec\s+<FloatingIPSpec>`, `\n  status\s+<FloatingIPStatus>`)
	explain("floatingips.spec",
		`FIELD:\s+spec <FloatingIPSpec>`, `\n  displayName\s+<string>`)
	explain("fip.spec.displayName", "pi name fip")
	explain("accounts.status", `KIND:\s+Account`, `\n  wanIP\s+<string>`, `\n  ready\s+<boolean>`)

	// kubectl's default --validate=strict: with fieldValidation in the documents, the server refuses the
	// unknown field (without them kubectl validates client-side and says it differently, or not at all).
	out, err := kc(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containerz":[],"containers":[{"name":"x","image":"busybox"}]}}`,
		"create", "--dry-run=server", "-f", "-")
	if err == nil || !strings.Contains(out, `strict decoding error: unknown field "spec.containerz"`) {
		t.Errorf("kubectl create with an unknown field: %v, want the server's strict decoding error:\n%s", err, out)
	}
}
