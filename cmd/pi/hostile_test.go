package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHostileRequests sends the lab's API what a careless or hostile client would, and checks each answer
// is a clear error with the right code and that nothing changed (defects: writes with allAccounts=true
// skipped the account check, a missing account was a 500, a 5 MB body was "unexpected EOF", garbage to the
// image build built every image, garbage to a FIP's name cleared it, an account could raise its own quota).
func TestHostileRequests(t *testing.T) {
	lab := startLab(t)
	sock := "/run/pilab/" + lab + "/pi.sock"
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	// as, if set, is the account the request acts for (Impersonate-User, as kubectl --as sends it).
	doAs := func(as, method, path, contentType string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://pi"+path, bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if as != "" {
			req.Header.Set("Impersonate-User", as)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		// An error answer is a Status: compare its message as the user reads it.
		var st struct{ Error, Message string }
		if resp.StatusCode >= 300 && json.Unmarshal(data, &st) == nil && st.Error+st.Message != "" {
			return resp.StatusCode, st.Error + st.Message
		}
		return resp.StatusCode, string(data)
	}
	do := func(method, path, contentType string, body []byte) (int, string) {
		t.Helper()
		return doAs("", method, path, contentType, body)
	}
	svc := []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}]}}`)
	fip := strings.TrimSpace(mustPi(t, lab, "create", "fip"))
	mustPi(t, lab, "name", "fip", fip, "--name", "web")

	const pods, services = "/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/services"
	cases := []struct {
		name, as, method, path string
		body                   []byte
		code                   int
		says                   string
	}{
		{"a write for a missing account", "ghost", "POST", services, svc, 403, `user "ghost" is not an account of this lab`},
		{"a write for an account named like a path", "../../etc", "POST", services, svc, 403, `user "../../etc" is not an account of this lab`},
		{"a read of a missing account", "ghost", "GET", pods, nil, 403, `user "ghost" is not an account of this lab`},
		{"a 5 MB body", "", "POST", pods, bytes.Repeat([]byte("a"), 5<<20), 413, "larger than"},
		{"a binary body", "", "POST", pods, []byte{0x1f, 0x8b, 0, 1, 2, 3, 0xff}, 400, "the body is not a JSON object"},
		{"another kind at a kind's path", "", "POST", pods, svc, 400, "Service"},
		{"a set of another kind", "", "POST", "/x/batch", []byte(`{"items":[{"apiVersion":"pilab.dev/v1","kind":"Account","metadata":{"name":"x"}}]}`), 422, "nothing was created"},
		{"garbage to the image build", "", "POST", "/x/images/build", []byte("\x00garbage"), 422, "image build request"},
		{"garbage to a FIP's name", "", "POST", "/x/fips/" + fip + "/name", []byte("nonsense"), 422, "name request"},
		{"an unknown field to a FIP's name", "", "POST", "/x/fips/" + fip + "/name", []byte(`{"nmae":"x"}`), 422, "unknown field"},
		{"an unknown resource", "", "GET", "/api/v1/namespaces/default/gizmos", nil, 404, `"/api/v1/namespaces/default/gizmos" not found`},
		{"the private dialect pi had", "", "GET", "/v1/pods", nil, 404, "404 page not found"},
		{"a FIP for a missing account", "", "POST", "/x/fips?account=ghost", nil, 404, `account "ghost" not found`},
		{"a fetch of an address not a FIP", "", "POST", "/x/fetch", []byte(`{"url":"http://127.0.0.1:1/"}`), 422, "only its Floating IPs"},
	}
	for _, c := range cases {
		code, body := doAs(c.as, c.method, c.path, "application/json", c.body)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s\nwant %d saying %q", c.name, code, strings.TrimSpace(body), c.code, c.says)
		}
	}
	// Nothing changed: no Service anywhere, the FIP keeps its name, no image was built.
	if out := mustPi(t, lab, "get", "services", "-A", "-o", "name"); !strings.HasPrefix(out, "No resources found") {
		t.Errorf("services after the hostile requests: %s", out)
	}
	if out := mustPi(t, lab, "get", "fips"); !strings.Contains(out, "web") {
		t.Errorf("the FIP lost its name:\n%s", out)
	}
	if out := mustPi(t, lab, "image", "ls"); strings.Contains(out, "busybox") || strings.Contains(out, "nginx") {
		t.Errorf("garbage built images:\n%s", out)
	}
	mustPi(t, lab, "image", "build", "busybox")

	// An account cannot raise its own FIP quota with a replace.
	var acct map[string]any
	_, body := do("GET", "/apis/pilab.dev/v1/accounts/default", "", nil)
	json.Unmarshal([]byte(body), &acct)
	acct["spec"] = map[string]any{"fipQuota": 1000}
	data, _ := json.Marshal(acct)
	if code, body := do("PUT", "/apis/pilab.dev/v1/accounts/default", "application/json", data); code != 422 || !strings.Contains(body, "spec.fipQuota: Forbidden") {
		t.Errorf("raising the quota: %d %s", code, body)
	}

	// A manifest set is all or none: a pod twice, two Services on one clusterIP, two LoadBalancers on one
	// FIP port each leave nothing behind.
	dir := t.TempDir()
	sets := map[string]string{
		"pod-twice.yml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: busybox\n---\n" +
			"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
		"one-ip.yml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIP: 10.96.0.50\n  ports:\n  - port: 80\n---\n" +
			"apiVersion: v1\nkind: Service\nmetadata:\n  name: x2\nspec:\n  clusterIP: 10.96.0.50\n  ports:\n  - port: 80\n",
		"one-port.yml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: LoadBalancer\n  loadBalancerIP: " + fip + "\n  ports:\n  - port: 80\n---\n" +
			"apiVersion: v1\nkind: Service\nmetadata:\n  name: web2\nspec:\n  type: LoadBalancer\n  loadBalancerIP: " + fip + "\n  ports:\n  - port: 80\n",
	}
	for file, text := range sets {
		p := filepath.Join(dir, file)
		os.WriteFile(p, []byte(text), 0o644)
		out, err := piCmd(lab, "create", "-f", p).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "document 2") || !strings.Contains(string(out), "nothing was created") {
			t.Errorf("pi create -f %s: %v\n%s", file, err, out)
		}
	}
	for _, kind := range []string{"services", "pods"} {
		if out := mustPi(t, lab, "get", kind, "-o", "name"); !strings.HasPrefix(out, "No resources found") {
			t.Errorf("%s left by refused sets: %s", kind, out)
		}
	}
}
