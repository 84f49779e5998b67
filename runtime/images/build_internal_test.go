package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/supervisor/supervisortest"
)

func TestParseDeb822(t *testing.T) {
	in := `# comment
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 xyz
`
	paras := parseDeb822(in)
	if len(paras) != 2 {
		t.Fatalf("got %d paragraphs: %v", len(paras), paras)
	}
	if paras[0]["suites"] != "bookworm bookworm-updates" || paras[0]["types"] != "deb deb-src" {
		t.Errorf("first paragraph %v", paras[0])
	}
	if !strings.Contains(paras[1]["signed-by"], "\n-----BEGIN PGP") {
		t.Errorf("continuation lines not joined: %q", paras[1]["signed-by"])
	}
}

func TestHostSources(t *testing.T) {
	src := hostSources()
	if len(src) == 0 {
		t.Fatal("no sources")
	}
	for _, l := range src {
		f := strings.Fields(l)
		if f[0] != "deb" || !strings.Contains(l, " "+Suite) {
			t.Errorf("source %q is not a %s one-line deb entry", l, Suite)
		}
		if strings.Contains(l, "nodesource") || strings.Contains(l, "google") {
			t.Errorf("third-party source kept: %q", l)
		}
	}
	t.Logf("sources: %q", src)
}

func TestDropped(t *testing.T) {
	for name, want := range map[string]bool{
		"dev":                                   false,
		"dev/null":                              true,
		"usr/share/man":                         true,
		"usr/share/man/man1/ls.1.gz":            true,
		"usr/share/manifest":                    false,
		"usr/share/doc":                         false,
		"usr/share/doc/curl":                    false,
		"usr/share/doc/curl/copyright":          false,
		"usr/share/doc/curl/changelog.gz":       true,
		"usr/share/doc/busybox-static/examples": true,
		"etc/resolv.conf":                       true,
		"etc/hostname":                          true,
		"etc/hosts":                             false,
		"usr/share/nginx/html/index.html":       false,
	} {
		if got := dropped(name); got != want {
			t.Errorf("dropped(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestFilterRootfs(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	add := func(h *tar.Header, data string) {
		h.Size = int64(len(data))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		tw.WriteHeader(h)
		io.WriteString(tw, data)
	}
	add(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	add(&tar.Header{Name: "./etc/hostname", Mode: 0o644}, "buildhost\n")
	add(&tar.Header{Name: "./etc/motd", Mode: 0o644}, "packaged\n")
	add(&tar.Header{Name: "./usr/share/man/x.1", Mode: 0o644}, "man")
	add(&tar.Header{Name: "./usr/bin/a", Mode: 0o755}, "binary")
	add(&tar.Header{Name: "./usr/bin/b", Typeflag: tar.TypeLink, Linkname: "./usr/bin/a"}, "")
	add(&tar.Header{Name: "./usr/share/man/y.1", Typeflag: tar.TypeLink, Linkname: "./usr/share/man/x.1"}, "")
	tw.Close()
	in.Write(make([]byte, 4096)) // trailing padding, as tar writers emit

	p := &plan{recipe: recipe{Files: []file{
		{Path: "/etc/motd", Mode: 0o644, Data: "ours\n"},
		{Path: "/var/log/app/out.log", Link: "/dev/stdout"},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
	}}}
	var out bytes.Buffer
	if err := filterRootfs(&in, &out, p); err != nil {
		t.Fatal(err)
	}
	got := map[string]*tar.Header{}
	content := map[string]string{}
	var order []string
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[h.Name], content[h.Name] = h, string(b)
		order = append(order, h.Name)
	}
	for _, name := range []string{"./", "etc/hostname", "usr/share/man/x.1", "usr/share/man/y.1"} {
		if got[name] != nil {
			t.Errorf("%s should be dropped; entries %v", name, order)
		}
	}
	if content["etc/motd"] != "ours\n" || strings.Count(strings.Join(order, " "), "etc/motd") != 1 {
		t.Errorf("etc/motd not replaced exactly once: %q %v", content["etc/motd"], order)
	}
	if h := got["usr/bin/b"]; h == nil || h.Linkname != "usr/bin/a" {
		t.Errorf("hard link not normalised: %+v", h)
	}
	if h := got["var/log/app/out.log"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/dev/stdout" {
		t.Errorf("symlink: %+v", h)
	}
	if got["var/"] == nil || got["var/log/"] == nil || got["var/log/app/"] == nil {
		t.Errorf("missing parent dirs for added files: %v", order)
	}
	if h := got["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp dir: %+v", h)
	}
}

// TestBuildFailure makes mmdebstrap fail (a package Debian does not have)
// and checks the error and that no image appears.
func TestBuildFailure(t *testing.T) {
	RequireBuild(t)
	sup := supervisortest.Start(t)
	s := New(sup.Client(), sup.Lab(), SharedWorkDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	unlock, err := s.lockWorkDir(ctx, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	r := recipe{Name: "broken", Variant: "extract", Packages: []string{"pilab-no-such-package"}}
	var progress bytes.Buffer
	err = s.buildOne(ctx, r, hostSources(), false, &progress, 0, 0)
	var merr *mmdebstrapError
	if !errors.As(err, &merr) || !strings.Contains(err.Error(), "pilab-no-such-package") {
		t.Fatalf("error = %v; want an mmdebstrap error naming the package", err)
	}
	if _, err := s.Resolve(ctx, "broken"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("failed build left an image: %v", err)
	}
}

// TestBuildCancel cancels a build midway: Build returns promptly, and no
// mmdebstrap process, mount or temp dir is left.
func TestBuildCancel(t *testing.T) {
	t.Run("tmpfs", func(t *testing.T) { testBuildCancel(t, 0) })
	t.Run("disk", func(t *testing.T) { testBuildCancel(t, 1<<62) })
}

func testBuildCancel(t *testing.T, minMem int64) {
	defer func(old int64) { tmpfsMinMem = old }(tmpfsMinMem)
	tmpfsMinMem = minMem
	RequireBuild(t)
	sup := supervisortest.Start(t)
	wd := SharedWorkDir(t)
	s := New(sup.Client(), sup.Lab(), wd)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancel 2 s into mmdebstrap, not 4 s after Build was called: other tests' builds (go test runs packages
	// in parallel) may hold the shared build lock for longer than that, and a cancel while waiting for the
	// lock is another path ("gave up waiting for the image build lock").
	start := time.Now()
	started := &onLine{marker: "nginx: building with mmdebstrap", fn: func() {
		start = time.Now()
		time.AfterFunc(2*time.Second, cancel)
	}}
	// The first build fills the shared apt cache; a cancelled build must not take anything out of it.
	if err := s.Build(context.Background(), []string{"nginx"}, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(context.Background(), "nginx"); err != nil {
		t.Fatal(err)
	}
	debs := func() int { m, _ := filepath.Glob(filepath.Join(s.cacheDir("archives"), "*.deb")); return len(m) }
	before := debs()
	err := s.Build(ctx, []string{"nginx"}, true, started)
	if after := debs(); after < before {
		t.Errorf("the cancelled build took debs out of the shared apt cache: %d before, %d after", before, after)
	}
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Build after cancel = %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Build took %s to return after cancel", d)
	}
	if _, err := s.Resolve(context.Background(), "nginx"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("cancelled build left an image: %v", err)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), wd) {
		t.Errorf("mounts left under %s:\n%s", wd, mounts)
	}
	ents, _ := os.ReadDir(s.tmpDir())
	if len(ents) != 0 {
		t.Errorf("temp dirs left in %s: %v", s.tmpDir(), ents)
	}
	if out, err := exec.Command("pgrep", "-f", "mmdebstrap.*"+wd).Output(); err == nil {
		t.Errorf("mmdebstrap still running: %s", out)
	}
}

// SharedWorkDir is the build work dir all test runs on this machine share ($PI_TEST_IMAGES_WORKDIR, else
// /var/tmp/pilab-test-images), so the apt cache makes repeated builds fast; builds serialise on its lock.
// Exported, in a test file, for the external tests (images_test) too.
func SharedWorkDir(t testing.TB) string {
	d := os.Getenv("PI_TEST_IMAGES_WORKDIR")
	if d == "" {
		d = "/var/tmp/pilab-test-images"
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestConcurrentBuildsShareCache builds busybox in two labs at once on one
// work dir (as the daemon's machine-wide image cache is shared): the second
// waits for the first, and both get a working image.
func TestConcurrentBuildsShareCache(t *testing.T) {
	RequireBuild(t)
	wd := SharedWorkDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress [2]bytes.Buffer
	errs := make(chan error, 2)
	stores := make([]*Store, 2)
	for i := range stores {
		sup := supervisortest.Start(t)
		stores[i] = New(sup.Client(), sup.Lab(), wd)
	}
	for i, s := range stores {
		go func() { errs <- s.Build(ctx, []string{"busybox"}, true, &progress[i]) }()
	}
	for range stores {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(progress[0].String()+progress[1].String(), "waiting for the image build lock held by lab ") {
		t.Errorf("no build waited for the other:\n%s\n%s", progress[0].String(), progress[1].String())
	}
	for _, s := range stores {
		if _, err := s.Resolve(ctx, "busybox"); err != nil {
			t.Error(err)
		}
	}
}

// RequireBuild stops the test (failing in CI, see netnstest.Missing) unless images can be built here: a
// private containerd and mmdebstrap. Exported, in a test file, for the external tests (images_test) too.
func RequireBuild(t testing.TB) {
	t.Helper()
	supervisortest.Require(t)
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		netnstest.Missing(t, "mmdebstrap not installed (apt-get install mmdebstrap)")
	}
}

// onLine calls fn once, when a progress line holding marker is written.
type onLine struct {
	marker string
	fn     func()
	once   sync.Once
}

func (o *onLine) Write(p []byte) (int, error) {
	for _, l := range strings.Split(string(p), "\n") {
		if strings.Contains(l, o.marker) {
			o.once.Do(o.fn)
		}
	}
	return len(p), nil
}
