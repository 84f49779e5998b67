package images_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pilab/pi/runtime/images"
)

// testServersBody is what the in-container test HTTP server answers on "/".
const testServersBody = "served by the test\n"

// serveTestServers runs, inside a test container (the test binary bind-mounted as pilab-test-servers), the
// servers the image's tools are tried against, all on the container's loopback: DNS on 127.0.0.1:53 (every name
// under pilab.test is 127.0.0.1), HTTP on 127.0.0.1:8080 ("/" answers testServersBody, "/hang" answers nothing
// for a minute, for timeouts), and a UDP echo on 127.0.0.1:7.
func serveTestServers() int {
	errc := make(chan error, 3)
	go func() { errc <- fmt.Errorf("dns: %w", serveDNS()) }()
	go func() {
		mux := http.NewServeMux()
		mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, testServersBody) })
		mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(time.Minute):
			case <-r.Context().Done():
			}
		})
		errc <- fmt.Errorf("http: %w", http.ListenAndServe("127.0.0.1:8080", mux))
	}()
	go func() {
		pc, err := net.ListenPacket("udp", "127.0.0.1:7")
		if err != nil {
			errc <- fmt.Errorf("udp echo: %w", err)
			return
		}
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				errc <- fmt.Errorf("udp echo: %w", err)
				return
			}
			pc.WriteTo(append([]byte("echo: "), buf[:n]...), addr)
		}
	}()
	fmt.Fprintln(os.Stderr, "test servers:", <-errc)
	return 1
}

// toolCheck is one command a learner types in a lab image, and what it must do.
type toolCheck struct {
	name     string
	args     []string // run with exec in the running container
	wantCode uint32
	want     []string      // substrings of the combined output
	within   time.Duration // the command must finish within this (0: the test's deadline)
}

// wgetChecks are the wget invocations of busybox's wget that learners type, -T in each of its spellings: busybox
// wget's getopt takes the option anywhere and clustered with other options.
func wgetChecks() []toolCheck {
	served := []string{testServersBody}
	var checks []toolCheck
	for _, args := range [][]string{
		{"wget", "-T", "2", "http://127.0.0.1:8080/", "-qO-"},
		{"wget", "-T", "2", "-qO-", "http://127.0.0.1:8080/"},
		{"wget", "-T2", "-qO-", "http://127.0.0.1:8080/"},
		{"wget", "-qT", "2", "-O", "-", "http://127.0.0.1:8080/"},
		{"wget", "-qT2", "-O-", "http://127.0.0.1:8080/"},
		{"wget", "--timeout=2", "-qO-", "http://127.0.0.1:8080/"},
		{"wget", "-q", "--timeout", "2", "--output-document", "-", "http://127.0.0.1:8080/"},
		{"wget", "-qO-", "--header", "X-Opt: -T 5", "-T", "0", "http://127.0.0.1:8080/"},
		{"wget", "-qO-", "http://127.0.0.1:8080/"},
		// The name through the test's DNS server (glibc's resolver, NSS, /etc/nsswitch.conf in the image).
		{"wget", "-T", "2", "-qO-", "http://web.pilab.test:8080/"},
		{"/usr/bin/wget", "-T", "2", "-qO-", "http://localhost:8080/"},
	} {
		checks = append(checks, toolCheck{name: strings.Join(args, " "), args: args, want: served, within: 5 * time.Second})
	}
	return append(checks,
		// A server that accepts and never answers: -T must end the wait as busybox's own -T does.
		toolCheck{name: "wget -T 1 to a server that hangs", args: []string{"wget", "-T", "1", "-qO-", "http://127.0.0.1:8080/hang"},
			wantCode: 1, want: []string{"wget: download timed out"}, within: 4 * time.Second},
		toolCheck{name: "wget -T with a bad number", args: []string{"wget", "-T", "soon", "http://127.0.0.1:8080/"},
			wantCode: 1, want: []string{"wget: invalid number 'soon'"}, within: 2 * time.Second},
		toolCheck{name: "wget -T without its number", args: []string{"wget", "http://127.0.0.1:8080/", "-T"},
			wantCode: 1, want: []string{"wget: option requires an argument -- 'T'"}, within: 2 * time.Second},
		toolCheck{name: "wget through timeout", args: []string{"timeout", "5", "wget", "-T", "2", "-qO-", "http://127.0.0.1:8080/"},
			want: served, within: 5 * time.Second},
		toolCheck{name: "wget in a pipe", args: []string{"sh", "-c", "wget -T 2 -qO- http://127.0.0.1:8080/ | tr a-z A-Z"},
			want: []string{strings.ToUpper(testServersBody)}, within: 5 * time.Second},
	)
}

// busyboxToolChecks are the other tools of the busybox-based images.
func busyboxToolChecks() []toolCheck {
	return []toolCheck{
		{name: "nslookup", args: []string{"nslookup", "web.pilab.test"}, want: []string{"Name:\tweb.pilab.test\nAddress: 127.0.0.1"}, within: 5 * time.Second},
		{name: "nslookup with a server", args: []string{"nslookup", "web.pilab.test", "127.0.0.1"}, want: []string{"Server:\t\t127.0.0.1", "Address: 127.0.0.1"}, within: 5 * time.Second},
		{name: "nc", args: []string{"sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc 127.0.0.1 8080`}, want: []string{"HTTP/1.0 200 OK", testServersBody}, within: 5 * time.Second},
		{name: "ping", args: []string{"ping", "-c1", "127.0.0.1"}, want: []string{"1 packets transmitted, 1 packets received, 0% packet loss"}, within: 5 * time.Second},
	}
}

// runChecks runs each check in r and reports every one that fails, with its output.
func runChecks(t *testing.T, ctx context.Context, r *running, checks []toolCheck) {
	t.Helper()
	for _, c := range checks {
		start := time.Now()
		code, out := r.exec(t, ctx, c.args...)
		took := time.Since(start)
		ok := code == c.wantCode
		for _, w := range c.want {
			ok = ok && strings.Contains(out, w)
		}
		if c.within > 0 && took > c.within {
			ok = false
		}
		if !ok {
			t.Errorf("%s: exit %d after %s (want exit %d, within %s, output with %q); output:\n%s",
				c.name, code, took.Round(time.Millisecond), c.wantCode, c.within, c.want, out)
		}
	}
}

// startTestServers starts the test's servers in r's container and waits until they answer.
func startTestServers(t *testing.T, ctx context.Context, r *running) {
	t.Helper()
	// /etc/resolv.conf is not in the images (the pod runtime mounts its own); the test DNS server is on loopback.
	if code, out := r.exec(t, ctx, "sh", "-c", `echo "nameserver 127.0.0.1" > /etc/resolv.conf && (pilab-test-servers </dev/null >/tmp/servers.log 2>&1 &)`); code != 0 {
		t.Fatalf("start test servers: exit %d: %s", code, out)
	}
	r.retryExec(t, ctx, "200 OK", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc 127.0.0.1 8080; cat /tmp/servers.log`)
}

func withTestServers(t *testing.T) oci.SpecOpts {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return oci.WithMounts([]specs.Mount{{Destination: "/usr/local/bin/pilab-test-servers", Type: "bind", Source: exe, Options: []string{"rbind", "ro"}}})
}

// TestImageTools runs the tools a learner types in each lab image in a real container, against servers the test
// runs on the container's loopback: busybox's wget (with -T, which segfaulted in Debian's busybox), nslookup, nc,
// ping in the busybox-based images; curl in nginx; and podinfo's own answers.
func TestImageTools(t *testing.T) {
	images.RequireBuild(t)
	store, sup := newStore(t)
	client := sup.Client()
	ctx := ctxFor(t, 10*time.Minute)
	var progress strings.Builder
	if err := store.Build(ctx, []string{"busybox", "podinfo", "nginx"}, false, &progress); err != nil {
		t.Fatalf("Build: %v\n%s", err, progress.String())
	}
	t.Logf("build:\n%s", progress.String())

	t.Run("busybox", func(t *testing.T) {
		img, err := store.Resolve(ctx, "busybox")
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, ctx, client, img, "tools-busybox", oci.WithProcessArgs("sleep", "600"), withTestServers(t))
		startTestServers(t, ctx, r)
		runChecks(t, ctx, r, wgetChecks())
		runChecks(t, ctx, r, busyboxToolChecks())
		// busybox's nc has no UDP; OpenBSD's is in the image for UDP Services.
		runChecks(t, ctx, r, []toolCheck{{name: "nc.openbsd -u", args: []string{"sh", "-c", "echo hi | nc.openbsd -u -w1 127.0.0.1 7"},
			want: []string{"echo: hi\n"}, within: 5 * time.Second}})
	})

	t.Run("podinfo", func(t *testing.T) {
		img, err := store.Resolve(ctx, "podinfo")
		if err != nil {
			t.Fatal(err)
		}
		env := []string{"HOSTNAME=podinfo-7f9c", "GREETING=hello lab"}
		r := run(t, ctx, client, img, "tools-podinfo", withTestServers(t), oci.WithEnv(env))
		startTestServers(t, ctx, r)
		runChecks(t, ctx, r, wgetChecks())
		runChecks(t, ctx, r, busyboxToolChecks())

		// podinfo's JSON ends with a newline, so that the shell prompt does not stick to it.
		out := r.retryExec(t, ctx, "greetings from podinfo", "wget", "-qO-", "http://127.0.0.1:9898/")
		if !strings.HasSuffix(out, "}\n") {
			t.Errorf("podinfo / does not end with a newline: %q", out)
		}
		// /env is the server's environment, which is the container's (podinfo is its process 1): a JSON array of
		// "K=V", the image's PATH and the container's variables.
		// retryExec: an exec's output can come short when the task's IO is torn down (rarely, as seen once).
		out = r.retryExec(t, ctx, "PATH=", "wget", "-qO-", "http://127.0.0.1:9898/env")
		var got []string
		if err := json.Unmarshal([]byte(out), &got); err != nil || !strings.HasSuffix(out, "]\n") {
			t.Fatalf("/env is not a JSON array ending with a newline: %v\n%q", err, out)
		}
		environ := r.retryExec(t, ctx, "PATH=", "sh", "-c", `tr '\0' '\n' < /proc/1/environ`)
		want := strings.Split(strings.TrimSuffix(environ, "\n"), "\n")
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("/env = %q\nwant the container's environment %q", got, want)
		}
		for _, e := range append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") {
			if !slices.Contains(got, e) {
				t.Errorf("/env lacks %q: %q", e, got)
			}
		}
	})

	t.Run("nginx", func(t *testing.T) {
		img, err := store.Resolve(ctx, "nginx")
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, ctx, client, img, "tools-nginx", withTestServers(t))
		r.retryExec(t, ctx, "Welcome to nginx!", "curl", "-sS", "http://127.0.0.1/")
		if code, out := r.exec(t, ctx, "sh", "-c", `echo "nameserver 127.0.0.1" > /etc/resolv.conf && (pilab-test-servers </dev/null >/tmp/servers.log 2>&1 &)`); code != 0 {
			t.Fatalf("start test servers: exit %d: %s", code, out)
		}
		r.retryExec(t, ctx, testServersBody, "curl", "-sS", "-m", "2", "http://127.0.0.1:8080/")
		runChecks(t, ctx, r, []toolCheck{
			{name: "curl by name", args: []string{"curl", "-sS", "-m", "2", "http://web.pilab.test:8080/"}, want: []string{testServersBody}, within: 5 * time.Second},
			{name: "curl -m 1 to a server that hangs", args: []string{"curl", "-sS", "-m", "1", "http://127.0.0.1:8080/hang"},
				wantCode: 28, want: []string{"Operation timed out"}, within: 4 * time.Second},
			{name: "curl -I nginx", args: []string{"curl", "-sSI", "http://localhost/"}, want: []string{"HTTP/1.1 200 OK", "Server: nginx"}, within: 5 * time.Second},
		})
	})
}
