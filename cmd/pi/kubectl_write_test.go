package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// kubectlAt runs the real kubectl against server, with its own empty kubeconfig and HOME.
type kubectlAt struct {
	t      *testing.T
	bin    string
	server string
	home   string
	env    []string
}

func newKubectl(t *testing.T, server string) *kubectlAt {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		requirePrivileged(t)
		t.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config"), nil, 0o600)
	return &kubectlAt{t: t, bin: bin, server: server, home: home}
}

func (k *kubectlAt) cmd(args ...string) *exec.Cmd {
	c := exec.Command(k.bin, append([]string{"--server", k.server}, args...)...)
	c.Env = append(append(os.Environ(), "HOME="+k.home, "KUBECONFIG="+filepath.Join(k.home, "config")), k.env...)
	return c
}

// run runs kubectl and returns its combined output and error.
func (k *kubectlAt) run(args ...string) (string, error) {
	out, err := k.cmd(args...).CombinedOutput()
	return string(out), err
}

// must runs kubectl, failing the test if it fails; want, when given, must match the output.
func (k *kubectlAt) must(want string, args ...string) string {
	k.t.Helper()
	out, err := k.run(args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if want != "" && !regexp.MustCompile(want).MatchString(out) {
		k.t.Errorf("kubectl %s:\n%s\nwant it to match %q", strings.Join(args, " "), out, want)
	}
	return out
}

// fails runs kubectl expecting it to fail with output matching want.
func (k *kubectlAt) fails(want string, args ...string) {
	k.t.Helper()
	out, err := k.run(args...)
	if err == nil {
		k.t.Errorf("kubectl %s succeeded, want a failure:\n%s", strings.Join(args, " "), out)
		return
	}
	if !regexp.MustCompile(want).MatchString(out) {
		k.t.Errorf("kubectl %s:\n%s\nwant it to match %q", strings.Join(args, " "), out, want)
	}
}

// eventually runs kubectl until its output matches want, for at most d.
func (k *kubectlAt) eventually(d time.Duration, want string, args ...string) {
	k.t.Helper()
	deadline := time.Now().Add(d)
	var out string
	for time.Now().Before(deadline) {
		out, _ = k.run(args...)
		if regexp.MustCompile(want).MatchString(out) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	k.t.Fatalf("kubectl %s never matched %q in %s; last:\n%s", strings.Join(args, " "), want, d, out)
}

// TestKubectlWrites drives the lab's Kubernetes API with the real kubectl's writing verbs — run, create,
// apply (client-side, server-side, a directory), diff, edit, label, scale, set image, rollout
// status/history/undo, expose, wait, delete — and a client-go clientset's create, patch and delete.
func TestKubectlWrites(t *testing.T) {
	lab := startLab(t)
	socket := filepath.Join("/run/pilab", lab, "pi.sock")
	for _, img := range []string{"nginx", "podinfo", "busybox"} {
		mustPi(t, lab, "image", "build", img)
	}
	k := newKubectl(t, forwardTCP(t, socket))

	k.must(`^pod/nginx created\n$`, "run", "nginx", "--image=nginx", "--labels=app=nginx")
	k.must(`^deployment.apps/podinfo created\n$`, "create", "deployment", "podinfo", "--image=podinfo", "--replicas=3")
	k.must(`pod/nginx condition met`, "wait", "--for=condition=Ready", "pod/nginx", "--timeout=90s")
	k.must(`deployment "podinfo" successfully rolled out`, "rollout", "status", "deploy/podinfo", "--timeout=120s")

	k.must(`^pod/nginx labeled\n$`, "label", "pod", "nginx", "tier=web")
	k.must(`(?m)^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+APP\s+LABELS\n(.*\n)*nginx\s+1/1\s+Running\s+0\s+\S+\s+nginx\s+app=nginx,tier=web\n`,
		"get", "pods", "--show-labels", "-L", "app")
	k.must(`^pod/nginx annotated\n$`, "annotate", "pod", "nginx", "note=hello")

	k.must(`^deployment.apps/podinfo scaled\n$`, "scale", "deploy/podinfo", "--replicas=5")
	k.eventually(90*time.Second, `(?m)^podinfo\s+5/5\s+5\s+5\s`, "get", "deploy", "podinfo")

	k.must(`^deployment.apps/podinfo image updated\n$`, "set", "image", "deploy/podinfo", "podinfo=busybox")
	k.must(`(?m)^1\s+<none>\n2\s+<none>\n`, "rollout", "history", "deploy/podinfo")
	k.must(`^deployment.apps/podinfo rolled back\n$`, "rollout", "undo", "deploy/podinfo")
	k.eventually(30*time.Second, `podinfo`, "get", "deploy", "podinfo", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	k.must(`deployment "podinfo" successfully rolled out`, "rollout", "status", "deploy/podinfo", "--timeout=120s")

	k.must(`^service/podinfo exposed\n$`, "expose", "deploy/podinfo", "--port=9898")
	k.eventually(60*time.Second, `(?m)^Endpoints:\s+10\.244\.`, "describe", "svc", "podinfo")
	k.must(`(?m)^Selector:\s+app=podinfo$`, "describe", "svc", "podinfo")

	// apply: a directory, again (unchanged), a change seen by diff, server-side.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: nginx}\n  ports:\n  - port: 80\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pod.yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\n  labels: {app: box}\nspec:\n  containers:\n  - name: box\n    image: busybox\n    command: [sleep, \"3600\"]\n"), 0o644)
	k.must(`(?s)pod/box created.*service/web created`, "apply", "-f", dir)
	k.must(`(?s)pod/box unchanged.*service/web unchanged`, "apply", "-f", dir)
	os.WriteFile(filepath.Join(dir, "svc.yaml"), []byte("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {tier: front}\nspec:\n  selector: {app: nginx}\n  ports:\n  - port: 80\n"), 0o644)
	out, err := k.run("diff", "-f", filepath.Join(dir, "svc.yaml"))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, "+    tier: front") {
		t.Errorf("kubectl diff: %v\n%s", err, out)
	}
	k.must(`^service/web serverside-applied\n$`, "apply", "--server-side", "-f", filepath.Join(dir, "svc.yaml"))
	k.must(`^front$`, "get", "svc", "web", "-o", "jsonpath={.metadata.labels.tier}")
	k.must(`kubectl`, "get", "svc", "web", "-o", "jsonpath={.metadata.managedFields[*].manager}", "--show-managed-fields")

	// edit, with an editor that changes one field.
	k.env = []string{`KUBE_EDITOR=sed -i s/replicas:\ 5/replicas:\ 2/`}
	k.must(`^deployment.apps/podinfo edited\n$`, "edit", "deploy/podinfo")
	k.env = nil
	k.must(`^2$`, "get", "deploy", "podinfo", "-o", "jsonpath={.spec.replicas}")

	// Bad input: named by kubectl as the API answered it, and nothing created.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolice: Never\n"), 0o644)
	k.fails(`strict decoding error: unknown field "spec.containers\[0\].imagePullPolice"`, "create", "-f", bad)
	k.fails(`pods "bad" not found`, "get", "pod", "bad")
	k.fails(`namespaces "kube-system" not found`, "-n", "kube-system", "run", "x", "--image=busybox")
	k.fails(`Forbidden`, "create", "namespace", "dev")

	// delete: kubectl waits until the pod is gone.
	k.must(`^pod "nginx" deleted\n$`, "delete", "pod", "nginx", "--grace-period=1")
	k.fails(`pods "nginx" not found`, "get", "pod", "nginx")
	k.must(`^deployment.apps "podinfo" deleted\n$`, "delete", "deploy", "podinfo")
	k.eventually(60*time.Second, `^No resources found in default namespace.\n$`, "get", "rs")

	// client-go's typed clientset over the unix socket: create, patch, delete.
	cfg := &rest.Config{Host: "http://pi", Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pods := cs.CoreV1().Pods("default")
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "cg-"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}}}
	p, err = pods.Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Patch(ctx, p.Name, types.StrategicMergePatchType, []byte(`{"metadata":{"labels":{"via":"client-go"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	k.must(`client-go`, "get", "pod", p.Name, "-o", "jsonpath={.metadata.labels.via}")
	if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there 30 s after its delete: %v", p.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
