package images_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	"github.com/miekg/dns"
	"github.com/pilab/pi/runtime/images"
	"github.com/pilab/pi/runtime/images/podinfo"
	"github.com/pilab/pi/runtime/supervisor"
	"github.com/pilab/pi/runtime/supervisor/supervisortest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The podinfo image contains a copy of this test binary (os.Executable), so
// it must act as podinfo when started under that name, like pi does.
func TestMain(m *testing.M) {
	switch filepath.Base(os.Args[0]) {
	case "podinfo":
		os.Exit(podinfo.Main(os.Args[1:]))
	case "pilab-test-dns":
		os.Exit(serveTestDNS())
	case "pilab-test-servers":
		os.Exit(serveTestServers())
	}
	os.Exit(m.Run())
}

func newStore(t *testing.T) (*images.Store, *supervisor.Supervisor) {
	s := supervisortest.Start(t)
	return images.New(s.Client(), s.Lab(), images.SharedWorkDir(t)), s
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

type running struct {
	container containerd.Container
	task      containerd.Task
	out       *supervisortest.Buffer
	exit      <-chan containerd.ExitStatus
	fifoDir   string
}

// run starts a container from img in its own network namespace (created by
// runc; we only bring its loopback up) and removes everything in t.Cleanup.
// FIFOs go to a test dir instead of containerd's shared default.
func run(t *testing.T, ctx context.Context, client *containerd.Client, img containerd.Image, id string, opts ...oci.SpecOpts) *running {
	t.Helper()
	specOpts := append([]oci.SpecOpts{oci.WithImageConfig(img), oci.WithHostname(id)}, opts...)
	c, err := client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(images.Snapshotter),
		containerd.WithNewSnapshot(id+"-snap", img),
		containerd.WithNewSpec(specOpts...),
	)
	if err != nil {
		t.Fatalf("create container %s: %v", id, err)
	}
	r := &running{container: c, out: &supervisortest.Buffer{}, fifoDir: t.TempDir()}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if r.task != nil {
			r.task.Kill(cctx, syscall.SIGKILL)
			if r.exit != nil {
				select {
				case <-r.exit:
				case <-cctx.Done():
				}
			}
			if _, err := r.task.Delete(cctx, containerd.WithProcessKill); err != nil {
				t.Errorf("delete task %s: %v", id, err)
			}
		}
		var parent string
		if spec, err := r.container.Spec(cctx); err == nil && spec.Linux != nil {
			parent = path.Dir(spec.Linux.CgroupsPath)
		}
		if err := r.container.Delete(cctx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s: %v", id, err)
		}
		// runc leaves the namespace's cgroup parent; it goes with the lab's last container (while others
		// remain, removing it fails and it stays for them).
		if parent != "" && parent != "/" {
			supervisor.RemoveCgroupParents(strings.TrimPrefix(parent, "/"))
		}
	})
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, r.out, r.out), cio.WithFIFODir(r.fifoDir)))
	if err != nil {
		t.Fatalf("create task %s: %v", id, err)
	}
	r.task = task
	// The task is created but not started: its netns exists, lo is down.
	ns, err := netns.GetFromPid(int(task.Pid()))
	if err != nil {
		t.Fatalf("open netns of task %s: %v", id, err)
	}
	h, err := netlink.NewHandleAt(ns)
	ns.Close()
	if err != nil {
		t.Fatalf("netlink handle in task netns: %v", err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	h.Close()
	if err != nil {
		t.Fatalf("bring up lo in task %s: %v", id, err)
	}
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.exit = exit
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task %s: %v", id, err)
	}
	return r
}

// waitExit waits for the task to exit and returns its status and output.
func (r *running) waitExit(t *testing.T, ctx context.Context) (uint32, string) {
	t.Helper()
	select {
	case st := <-r.exit:
		code, _, _ := st.Result()
		r.exit = nil
		waitIO(r.task.IO())
		r.task.Delete(ctx)
		r.task = nil
		return code, r.out.String()
	case <-ctx.Done():
		t.Fatalf("container %s did not exit; output so far:\n%s", r.container.ID(), r.out.String())
	}
	return 0, ""
}

// exec runs args in the running container and returns combined output.
func (r *running) exec(t *testing.T, ctx context.Context, args ...string) (uint32, string) {
	t.Helper()
	spec, err := r.container.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = false
	out := &supervisortest.Buffer{}
	id := fmt.Sprintf("exec%d", time.Now().UnixNano())
	p, err := r.task.Exec(ctx, id, &pspec, cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(r.fifoDir)))
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	ch, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatalf("start exec %v: %v", args, err)
	}
	var code uint32
	select {
	case st := <-ch:
		code, _, _ = st.Result()
	case <-ctx.Done():
		t.Fatalf("exec %v timed out", args)
	}
	waitIO(p.IO())
	p.Delete(ctx)
	return code, out.String()
}

// waitIO waits (5 s at most) until a process's output is copied: Delete cancels the copy first, and output
// still in the FIFO when it does is lost (an exec's whole output, now and then). A process that left a child
// holding its stdout would keep the copy going; the bound covers that.
func waitIO(io cio.IO) {
	if io == nil {
		return
	}
	done := make(chan struct{})
	go func() { io.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// retryExec runs args until the output contains want (servers need a moment
// to listen).
func (r *running) retryExec(t *testing.T, ctx context.Context, want string, args ...string) string {
	t.Helper()
	var out string
	for i := 0; i < 50; i++ {
		_, out = r.exec(t, ctx, args...)
		if strings.Contains(out, want) {
			return out
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%v never printed %q; last output:\n%s\ncontainer output:\n%s", args, want, out, r.out.String())
	return ""
}

// serveTestDNS answers A 127.0.0.1 for every name under pilab.test on
// 127.0.0.1:53; it runs inside a test container (bind-mounted test binary).
func serveTestDNS() int {
	if err := serveDNS(); err != nil {
		fmt.Fprintln(os.Stderr, "test dns:", err)
		return 1
	}
	return 0
}

// serveDNS serves serveTestDNS's answers until it fails.
func serveDNS() error {
	dns.HandleFunc("pilab.test.", func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qu := range q.Question {
			if qu.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qu.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})
	return (&dns.Server{Addr: "127.0.0.1:53", Net: "udp"}).ListenAndServe()
}
