package podinfo

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func get(t *testing.T, srv *httptest.Server, method, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestInfo(t *testing.T) {
	srv := httptest.NewServer(New(Options{Hostname: "web-1"}))
	defer srv.Close()
	for _, path := range []string{"/", "/api/info"} {
		resp, body := get(t, srv, "GET", path, map[string]string{"User-Agent": "curl/7.88.1"})
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("GET %s: not a JSON object of strings: %v\n%s", path, err, body)
		}
		want := map[string]string{"hostname": "web-1", "version": Version, "message": "greetings from podinfo v" + Version, "goos": "linux"}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("GET %s: %s = %q, want %q", path, k, m[k], v)
			}
		}
		for _, k := range []string{"revision", "color", "logo", "goarch", "runtime", "num_goroutine", "num_cpu"} {
			if m[k] == "" {
				t.Errorf("GET %s: field %q missing or empty", path, k)
			}
		}
		if len(m) != 11 {
			t.Errorf("GET %s: %d fields, podinfo has 11: %v", path, len(m), m)
		}
		// podinfo pretty-prints with two spaces; the newline at the end keeps a shell prompt off the "}".
		if !strings.Contains(string(body), "\n  \"hostname\": \"web-1\"") {
			t.Errorf("GET %s: not indented like podinfo:\n%s", path, body)
		}
		if !strings.HasSuffix(string(body), "\n}\n") {
			t.Errorf("GET %s: does not end with a newline: %q", path, body)
		}
	}
	resp, body := get(t, srv, "GET", "/", map[string]string{"User-Agent": "Mozilla/5.0"})
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "web-1") {
		t.Errorf("browser index: %s\n%s", resp.Header.Get("Content-Type"), body)
	}
}

func TestDefaultHostname(t *testing.T) {
	h, _ := os.Hostname()
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	_, body := get(t, srv, "GET", "/", nil)
	var m map[string]string
	json.Unmarshal(body, &m)
	if m["hostname"] != h || h == "" {
		t.Errorf("hostname = %q, want os.Hostname() %q", m["hostname"], h)
	}
}

func TestEndpoints(t *testing.T) {
	t.Setenv("PODINFO_TEST_VAR", "x=y")
	srv := httptest.NewServer(New(Options{Hostname: "h"}))
	defer srv.Close()

	// /env is the process's environment as podinfo's: a JSON array of "K=V" strings, all of them, in order.
	resp, body := get(t, srv, "GET", "/env", nil)
	var env []string
	if err := json.Unmarshal(body, &env); err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("/env: %d %s %v %s", resp.StatusCode, resp.Header.Get("Content-Type"), err, body)
	}
	if !slices.Equal(env, os.Environ()) || !slices.Contains(env, "PODINFO_TEST_VAR=x=y") {
		t.Errorf("/env = %q\nwant os.Environ() (with PODINFO_TEST_VAR=x=y) %q", env, os.Environ())
	}
	if !strings.HasPrefix(string(body), "[\n  \"") || !strings.HasSuffix(string(body), "\"\n]\n") {
		t.Errorf("/env not indented like podinfo or without a newline at the end:\n%q", body)
	}

	_, body = get(t, srv, "GET", "/headers", map[string]string{"X-Test": "abc"})
	var hdr map[string][]string
	if err := json.Unmarshal(body, &hdr); err != nil {
		t.Fatalf("/headers: %v %s", err, body)
	}
	if got := hdr["X-Test"]; len(got) != 1 || got[0] != "abc" {
		t.Errorf("/headers X-Test = %v", got)
	}
	if got := hdr["X-Api-Version"]; len(got) != 1 || got[0] != Version {
		t.Errorf("/headers X-Api-Version = %v (podinfo's middleware adds it)", got)
	}

	for _, p := range []string{"/healthz", "/readyz"} {
		resp, body := get(t, srv, "GET", p, nil)
		var m map[string]string
		json.Unmarshal(body, &m)
		if resp.StatusCode != 200 || m["status"] != "OK" {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}

	// Every JSON answer ends with a newline, errors too.
	for _, p := range []string{"/headers", "/healthz", "/readyz", "/version", "/status/418", "/status/abc", "/delay/x"} {
		resp, body := get(t, srv, "GET", p, nil)
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || !strings.HasSuffix(string(body), "}\n") {
			t.Errorf("GET %s: %s %q, want JSON ending with a newline", p, resp.Header.Get("Content-Type"), body)
		}
	}

	_, body = get(t, srv, "GET", "/version", nil)
	var v map[string]string
	json.Unmarshal(body, &v)
	if v["version"] != Version || v["commit"] == "" || len(v) != 2 {
		t.Errorf("/version = %s", body)
	}

	for _, code := range []int{200, 404, 418, 500, 503} {
		resp, body := get(t, srv, "GET", fmt.Sprintf("/status/%d", code), nil)
		var m map[string]int
		json.Unmarshal(body, &m)
		if resp.StatusCode != code || m["status"] != code {
			t.Errorf("/status/%d: %d %s", code, resp.StatusCode, body)
		}
	}
	for _, bad := range []string{"/status/abc", "/status/42", "/status/1000"} {
		if resp, _ := get(t, srv, "GET", bad, nil); resp.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", bad, resp.StatusCode)
		}
	}

	start := time.Now()
	resp, body = get(t, srv, "GET", "/delay/1", nil)
	var d map[string]int
	json.Unmarshal(body, &d)
	if el := time.Since(start); resp.StatusCode != 200 || d["delay"] != 1 || el < time.Second || el > 5*time.Second {
		t.Errorf("/delay/1: %d %s after %s", resp.StatusCode, body, el)
	}
	if resp, _ := get(t, srv, "GET", "/delay/x", nil); resp.StatusCode != 400 {
		t.Errorf("/delay/x: %d", resp.StatusCode)
	}

	resp, body = get(t, srv, "POST", "/echo", nil)
	if resp.StatusCode != 202 || string(body) != "ping" {
		t.Errorf("/echo: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, srv, "DELETE", "/healthz", nil); resp.StatusCode != 405 {
		t.Errorf("DELETE /healthz: %d, want 405", resp.StatusCode)
	}
	if resp, _ := get(t, srv, "GET", "/nope", nil); resp.StatusCode != 404 {
		t.Errorf("/nope: %d, want 404", resp.StatusCode)
	}
}

func TestReadyToggle(t *testing.T) {
	srv := httptest.NewServer(New(Options{Hostname: "h", Unhealthy: true}))
	defer srv.Close()
	if resp, _ := get(t, srv, "GET", "/healthz", nil); resp.StatusCode != 503 {
		t.Errorf("unhealthy /healthz: %d", resp.StatusCode)
	}
	get(t, srv, "POST", "/readyz/disable", nil)
	if resp, _ := get(t, srv, "GET", "/readyz", nil); resp.StatusCode != 503 {
		t.Errorf("/readyz after disable: %d", resp.StatusCode)
	}
	get(t, srv, "POST", "/readyz/enable", nil)
	if resp, _ := get(t, srv, "GET", "/readyz", nil); resp.StatusCode != 200 {
		t.Errorf("/readyz after enable: %d", resp.StatusCode)
	}
}

// TestMainServes runs Main in a child process on a loopback port and stops it
// with SIGTERM, as a container runtime would.
func TestMainServes(t *testing.T) {
	if os.Getenv("PODINFO_MAIN_CHILD") == "1" {
		os.Exit(Main(os.Args[len(os.Args)-2:]))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainServes$", "--", "--port", fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "PODINFO_MAIN_CHILD=1", "PODINFO_UI_MESSAGE=hello lab")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "Starting podinfo") {
		t.Fatalf("start log line = %q, %v", line, err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if m["message"] != "hello lab" {
		t.Errorf("message = %q, want PODINFO_UI_MESSAGE", m["message"])
	}
	cmd.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, out)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("podinfo exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("podinfo did not exit on SIGTERM")
	}
}

// TestServeUDP: every datagram is answered, to its sender, with the replica's name and the payload.
func TestServeUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Hostname: "podinfo-abc"})
	done := make(chan struct{})
	go func() { s.ServeUDP(pc); close(done) }()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"ping\n", "second"} {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := "podinfo-abc: " + strings.TrimSuffix(msg, "\n") + "\n"; string(buf[:n]) != want {
			t.Errorf("answer to %q = %q, want %q", msg, buf[:n], want)
		}
	}
	pc.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDP did not return after its socket was closed")
	}
}
