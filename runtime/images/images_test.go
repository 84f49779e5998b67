package images_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/runtime/images"
	"github.com/pilab/pi/runtime/supervisor"
)

func TestNames(t *testing.T) {
	cases := map[string]string{
		"nginx":                        "docker.io/library/nginx:latest",
		"nginx:1.25":                   "docker.io/library/nginx:1.25",
		"stefanprodan/podinfo":         "docker.io/stefanprodan/podinfo:latest",
		"ghcr.io/stefanprodan/podinfo": "ghcr.io/stefanprodan/podinfo:latest",
		"127.0.0.1:5000/lab/x:v1":      "127.0.0.1:5000/lab/x:v1",
	}
	for in, want := range cases {
		got, err := images.Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
		if back := images.ShortName(got); back != strings.TrimSuffix(strings.TrimPrefix(in, "docker.io/library/"), ":latest") {
			t.Errorf("ShortName(%q) = %q", got, back)
		}
	}
	if _, err := images.Normalize("Bad Name"); err == nil {
		t.Error("Normalize accepted an invalid name")
	}
	if got := images.LabImages(); strings.Join(got, ",") != "busybox,httpd,nginx,podinfo" {
		t.Errorf("LabImages() = %v", got)
	}
}

func tinyTar(t *testing.T, greeting string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755, ModTime: now})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/greeting", Mode: 0o644, Size: int64(len(greeting)), ModTime: now})
	io.WriteString(tw, greeting)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "hello", Linkname: "etc/greeting", ModTime: now})
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readFromImage mounts a read-only view of the image's rootfs and reads a file.
func readFromImage(t *testing.T, ctx context.Context, client *containerd.Client, img containerd.Image, file string) string {
	t.Helper()
	diffs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sn := client.SnapshotService(images.Snapshotter)
	key := fmt.Sprintf("view-%d", time.Now().UnixNano())
	mounts, err := sn.View(ctx, key, identity.ChainID(diffs).String())
	if err != nil {
		t.Fatalf("view snapshot of %s: %v", img.Name(), err)
	}
	defer sn.Remove(ctx, key)
	var out []byte
	err = mount.WithTempMount(ctx, mounts, func(root string) error {
		var err error
		out, err = os.ReadFile(filepath.Join(root, file))
		return err
	})
	if err != nil {
		t.Fatalf("read %s from %s: %v", file, img.Name(), err)
	}
	return string(out)
}

func TestImportRootfs(t *testing.T) {
	store, sup := newStore(t)
	client := sup.Client()
	ctx := ctxFor(t, 2*time.Minute)

	layer := tinyTar(t, "hi\n")
	cfg := ocispec.ImageConfig{Cmd: []string{"/hello"}, Env: []string{"A=b"}, Labels: map[string]string{"cfg": "label"}}
	if err := store.ImportRootfs(ctx, "tiny", bytes.NewReader(layer), cfg, map[string]string{"x": "y"}); err != nil {
		t.Fatalf("ImportRootfs: %v", err)
	}
	img, err := store.Resolve(ctx, "tiny")
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if img.Name() != "docker.io/library/tiny:latest" || img.Labels()["x"] != "y" {
		t.Errorf("image %s labels %v", img.Name(), img.Labels())
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(layer)
	if len(spec.RootFS.DiffIDs) != 1 || spec.RootFS.DiffIDs[0] != digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:])) {
		t.Errorf("diffIDs %v, want sha256 of the tar", spec.RootFS.DiffIDs)
	}
	if spec.Config.Cmd[0] != "/hello" || spec.Config.Labels["cfg"] != "label" || spec.OS != "linux" || spec.Created == nil {
		t.Errorf("config %+v", spec)
	}
	mf, err := readManifest(ctx, client, img)
	if err != nil {
		t.Fatal(err)
	}
	if len(mf.Layers) != 1 || mf.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip || mf.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest %+v", mf)
	}
	if got := readFromImage(t, ctx, client, img, "etc/greeting"); got != "hi\n" {
		t.Errorf("etc/greeting in unpacked image = %q", got)
	}

	list, err := store.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if l := list[0]; l.Name != "tiny" || l.Lab || l.Size <= 0 || l.Digest != img.Target().Digest.String() || time.Since(l.Created) > time.Minute {
		t.Errorf("List entry %+v", l)
	}

	// Re-importing re-points the name.
	if err := store.ImportRootfs(ctx, "tiny", bytes.NewReader(tinyTar(t, "bye\n")), cfg, nil); err != nil {
		t.Fatal(err)
	}
	img2, err := store.Resolve(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	if img2.Target().Digest == img.Target().Digest {
		t.Error("re-import did not change the image")
	}
	if got := readFromImage(t, ctx, client, img2, "etc/greeting"); got != "bye\n" {
		t.Errorf("after re-import etc/greeting = %q", got)
	}

	// A broken layer creates no image.
	err = store.ImportRootfs(ctx, "broken", strings.NewReader("this is not a tar archive, not even close........"), cfg, nil)
	if err == nil {
		t.Error("ImportRootfs accepted a non-tar layer")
	}
	if _, err := store.Resolve(ctx, "broken"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("failed import left an image: %v", err)
	}
}

func readManifest(ctx context.Context, client *containerd.Client, img containerd.Image) (ocispec.Manifest, error) {
	var mf ocispec.Manifest
	b, err := content.ReadBlob(ctx, client.ContentStore(), img.Target())
	if err == nil {
		err = json.Unmarshal(b, &mf)
	}
	return mf, err
}

func TestResolveAndRemoveMissing(t *testing.T) {
	store, _ := newStore(t)
	ctx := ctxFor(t, time.Minute)
	_, err := store.Resolve(ctx, "nope")
	want := `image "nope" not found locally; run: pi image build nope | pi image pull nope | pi image import FILE`
	if err == nil || err.Error() != want {
		t.Errorf("Resolve(nope) = %v\nwant %s", err, want)
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Resolve error is not ErrNotFound: %v", err)
	}
	if err := store.Remove(ctx, "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Remove(nope) = %v", err)
	}
	if err := store.Build(ctx, []string{"busybox", "mysql"}, false, nil); err == nil || !strings.Contains(err.Error(), "known: busybox, httpd, nginx, podinfo") {
		t.Errorf("Build(unknown) = %v", err)
	}
}

// TestImportArchives exports a small image as an OCI archive (with and
// without a name) and as a docker-save style archive, and imports each.
func TestImportArchives(t *testing.T) {
	store, sup := newStore(t)
	client := sup.Client()
	ctx := ctxFor(t, 2*time.Minute)
	if err := store.ImportRootfs(ctx, "lab/tiny:v1", bytes.NewReader(tinyTar(t, "v1\n")), ocispec.ImageConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	img, err := store.Resolve(ctx, "lab/tiny:v1")
	if err != nil {
		t.Fatal(err)
	}
	var named bytes.Buffer
	if err := client.Export(ctx, &named, archive.WithImage(client.ImageService(), img.Name()), archive.WithPlatform(platforms.Default())); err != nil {
		t.Fatalf("export: %v", err)
	}
	var unnamed bytes.Buffer
	if err := client.Export(ctx, &unnamed, archive.WithManifest(img.Target()), archive.WithSkipDockerManifest()); err != nil {
		t.Fatalf("export unnamed: %v", err)
	}
	dockerSave := dockerOnly(t, named.Bytes())

	for _, tc := range []struct {
		name    string
		archive []byte
		want    string
	}{
		{"oci", named.Bytes(), "docker.io/lab/tiny:v1"},
		{"docker-save", dockerSave, "docker.io/lab/tiny:v1"},
		{"oci-unnamed", unnamed.Bytes(), "docker.io/library/imported-" + img.Target().Digest.Encoded()[:12] + ":latest"},
	} {
		if err := store.Remove(ctx, "lab/tiny:v1"); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatal(err)
		}
		refs, err := store.Import(ctx, bytes.NewReader(tc.archive))
		if err != nil {
			t.Fatalf("%s: Import: %v", tc.name, err)
		}
		if len(refs) != 1 || refs[0] != tc.want {
			t.Fatalf("%s: Import refs = %v, want [%s]", tc.name, refs, tc.want)
		}
		got, err := store.Resolve(ctx, refs[0])
		if err != nil {
			t.Fatalf("%s: Resolve(%s): %v", tc.name, refs[0], err)
		}
		if ok, _ := got.IsUnpacked(ctx, images.Snapshotter); !ok {
			t.Errorf("%s: imported image not unpacked", tc.name)
		}
		if s := readFromImage(t, ctx, client, got, "etc/greeting"); s != "v1\n" {
			t.Errorf("%s: content %q", tc.name, s)
		}
	}
	if _, err := store.Import(ctx, strings.NewReader("garbage")); err == nil {
		t.Error("Import accepted garbage")
	}
}

// dockerOnly strips the OCI index from an exported archive, leaving the
// docker-save layout (manifest.json + blobs).
func dockerOnly(t *testing.T, in []byte) []byte {
	tr := tar.NewReader(bytes.NewReader(in))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	sawManifest := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "index.json" || h.Name == "oci-layout" {
			continue
		}
		sawManifest = sawManifest || h.Name == "manifest.json"
		tw.WriteHeader(h)
		io.Copy(tw, tr)
	}
	tw.Close()
	if !sawManifest {
		t.Fatal("export has no docker manifest.json")
	}
	return out.Bytes()
}

// TestPull pulls from a registry served by the test on loopback, and checks
// the error for an unreachable one.
func TestPull(t *testing.T) {
	store, sup := newStore(t)
	client := sup.Client()
	ctx := ctxFor(t, 2*time.Minute)
	if err := store.ImportRootfs(ctx, "src", bytes.NewReader(tinyTar(t, "pulled\n")), ocispec.ImageConfig{}, nil); err != nil {
		t.Fatal(err)
	}
	src, _ := store.Resolve(ctx, "src")
	reg := httptest.NewServer(registry(t, ctx, client, src, "lab/tiny", "v2"))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")

	var progress bytes.Buffer
	ref := host + "/lab/tiny:v2"
	if err := store.Pull(ctx, ref, &progress); err != nil {
		t.Fatalf("Pull: %v\n%s", err, progress.String())
	}
	for _, want := range []string{"pulling " + ref, "fetch manifest", "fetched layer", "pulled sha256:"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	img, err := store.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Target().Digest != src.Target().Digest {
		t.Errorf("pulled digest %s, served %s", img.Target().Digest, src.Target().Digest)
	}
	if s := readFromImage(t, ctx, client, img, "etc/greeting"); s != "pulled\n" {
		t.Errorf("pulled content %q", s)
	}

	// Nothing listens on port 1 of loopback: that is what offline looks like.
	err = store.Pull(ctx, "127.0.0.1:1/lab/none:v1", nil)
	if err == nil || !strings.Contains(err.Error(), "registry unreachable") || !strings.Contains(err.Error(), "pi image import FILE") {
		t.Errorf("Pull from unreachable registry: %v", err)
	}
	err = store.Pull(ctx, host+"/lab/missing:v1", nil)
	if err == nil || strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Pull of a missing image: %v (should say not found, not unreachable)", err)
	}
}

// registry serves one image read-only over the registry v2 API.
func registry(t *testing.T, ctx context.Context, client *containerd.Client, img containerd.Image, repo, tag string) http.Handler {
	cs := client.ContentStore()
	target := img.Target()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/v2/" || p == "/v2":
			w.WriteHeader(200)
			return
		case strings.HasPrefix(p, "/v2/"+repo+"/manifests/"):
			ref := strings.TrimPrefix(p, "/v2/"+repo+"/manifests/")
			if ref != tag && ref != target.Digest.String() {
				http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, 404)
				return
			}
			serveBlob(w, r, ctx, cs, target)
			return
		case strings.HasPrefix(p, "/v2/"+repo+"/blobs/"):
			d, err := digest.Parse(strings.TrimPrefix(p, "/v2/"+repo+"/blobs/"))
			if err != nil {
				http.Error(w, "bad digest", 400)
				return
			}
			info, err := cs.Info(ctx, d)
			if err != nil {
				http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, 404)
				return
			}
			serveBlob(w, r, ctx, cs, ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: info.Size})
			return
		}
		http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN"}]}`, 404)
	})
}

func serveBlob(w http.ResponseWriter, r *http.Request, ctx context.Context, cs content.Store, desc ocispec.Descriptor) {
	b, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", desc.MediaType)
	w.Header().Set("Docker-Content-Digest", desc.Digest.String())
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}

// TestBusybox builds the smallest lab image with real mmdebstrap and runs it.
func TestBusybox(t *testing.T) {
	images.RequireBuild(t)
	store, sup := newStore(t)
	client := sup.Client()
	ctx := ctxFor(t, 5*time.Minute)

	var progress bytes.Buffer
	start := time.Now()
	if err := store.Build(ctx, []string{"busybox"}, false, &progress); err != nil {
		t.Fatalf("Build busybox: %v\n%s", err, progress.String())
	}
	t.Logf("busybox build: %s\n%s", time.Since(start).Round(time.Millisecond), progress.String())
	if !regexp.MustCompile(`(?m)^\[1/1\] busybox: building with mmdebstrap --variant=extract \(busybox, libc6, netcat-openbsd, libbsd0, libmd0\)$`).MatchString(progress.String()) ||
		!regexp.MustCompile(`(?m)^\[1/1\] busybox: built in .*, [0-9.]+ MB \(sha256:[0-9a-f]{12}\)$`).MatchString(progress.String()) {
		t.Errorf("unexpected progress:\n%s", progress.String())
	}

	progress.Reset()
	start = time.Now()
	if err := store.Build(ctx, []string{"busybox"}, false, &progress); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "busybox: up to date (recipe ") {
		t.Errorf("second build did not skip busybox:\n%s", progress.String())
	}
	t.Logf("rebuild (up to date) took %s", time.Since(start).Round(time.Millisecond))

	list, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bb *images.Image
	for i := range list {
		if list[i].Name == "busybox" {
			bb = &list[i]
		}
	}
	if bb == nil || !bb.Lab || bb.Ref != "docker.io/library/busybox:latest" || bb.Size < 1<<20 || bb.Size > 20<<20 || !strings.HasPrefix(bb.Digest, "sha256:") {
		t.Fatalf("busybox in List: %+v (all: %+v)", bb, list)
	}
	t.Logf("busybox image: %s unpacked", sizeMB(bb.Size))

	img, err := store.Resolve(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if img.Labels()[images.LabelLabImage] != "true" || len(img.Labels()[images.LabelRecipe]) != 64 {
		t.Errorf("labels %v", img.Labels())
	}
	// wget to "localhost" exercises glibc's resolver (NSS) in the image.
	script := `echo hello from busybox; id -u; for a in sh wget nc ping ip nslookup; do which $a; done; ` +
		`mkdir /tmp/www && echo served > /tmp/www/index.html && httpd -p 127.0.0.1:8080 -h /tmp/www && ` +
		`wget -qO- http://localhost:8080/ && ` +
		// and through DNS: a test DNS server on the container's loopback.
		`(pilab-test-dns &) && sleep 0.5 && echo "nameserver 127.0.0.1" > /etc/resolv.conf && ` +
		`nslookup web.pilab.test && wget -qO- http://web.pilab.test:8080/; ` +
		`if test -e /usr/share/man; then echo MAN-LEAKED; fi; ls -ld /tmp`
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, ctx, client, img, "bb1", oci.WithProcessArgs("sh", "-c", script), oci.WithMounts([]specs.Mount{{
		Destination: "/usr/local/bin/pilab-test-dns", Type: "bind", Source: exe, Options: []string{"rbind", "ro"},
	}}))
	code, out := r.waitExit(t, ctx)
	if code != 0 {
		t.Fatalf("container exit %d:\n%s", code, out)
	}
	for _, want := range []string{"hello from busybox\n0\n", "/bin/sh", "/bin/wget", "/bin/nc", "/bin/ping", "/sbin/ip", "Name:\tweb.pilab.test\nAddress: 127.0.0.1", "drwxrwxrwt"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "served\n"); n != 2 {
		t.Errorf("wget by localhost and by DNS name: %d of 2 answers:\n%s", n, out)
	}
	for _, bad := range []string{"LEAKED"} {
		if strings.Contains(out, bad) {
			t.Errorf("output has %q:\n%s", bad, out)
		}
	}

	// Export as an archive, remove, import: the image runs again.
	var buf bytes.Buffer
	if err := client.Export(ctx, &buf, archive.WithImage(client.ImageService(), img.Name()), archive.WithPlatform(platforms.Default())); err != nil {
		t.Fatal(err)
	}
	if err := store.Remove(ctx, "busybox"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := store.Resolve(ctx, "busybox"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Resolve after Remove: %v", err)
	}
	refs, err := store.Import(ctx, &buf)
	if err != nil || len(refs) != 1 || refs[0] != "docker.io/library/busybox:latest" {
		t.Fatalf("Import = %v, %v", refs, err)
	}
	img, err = store.Resolve(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	r = run(t, ctx, client, img, "bb2", oci.WithProcessArgs("echo", "imported"))
	if code, out := r.waitExit(t, ctx); code != 0 || out != "imported\n" {
		t.Errorf("imported busybox: exit %d %q", code, out)
	}
}

func sizeMB(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// TestBuildAll builds every lab image and checks each one serves what the
// workshops expect. It takes minutes on a cold apt cache; -short skips it
// outside CI.
func TestBuildAll(t *testing.T) {
	images.RequireBuild(t)
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: not building all lab images")
	}
	store, sup := newStore(t)
	client := sup.Client()
	ctx := ctxFor(t, 15*time.Minute)

	var progress bytes.Buffer
	start := time.Now()
	if err := store.Build(ctx, nil, false, &progress); err != nil {
		t.Fatalf("Build: %v\n%s", err, progress.String())
	}
	t.Logf("build all: %s\n%s", time.Since(start).Round(time.Millisecond), progress.String())
	progress.Reset()
	start = time.Now()
	if err := store.Build(ctx, nil, false, &progress); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(progress.String(), "up to date"); n != 4 {
		t.Errorf("second build: %d images up to date, want 4:\n%s", n, progress.String())
	}
	t.Logf("second build (all up to date): %s", time.Since(start).Round(time.Millisecond))

	list, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range list {
		t.Logf("image %-8s %8s  %s", im.Name, sizeMB(im.Size), im.Digest[:19])
		if !im.Lab {
			t.Errorf("%s not labelled as lab image", im.Name)
		}
	}
	if len(list) != 4 {
		t.Fatalf("List has %d images, want 4: %+v", len(list), list)
	}

	t.Run("nginx", func(t *testing.T) {
		img, err := store.Resolve(ctx, "nginx")
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, ctx, client, img, "nginx1")
		out := r.retryExec(t, ctx, "Welcome to nginx!", "curl", "-sS", "http://127.0.0.1/")
		if !strings.Contains(out, "<title>Welcome to nginx!</title>") {
			t.Errorf("page:\n%s", out)
		}
		waitFor(t, "nginx access log on stdout", func() bool { return strings.Contains(r.out.String(), `"GET / HTTP/1.1" 200`) }, r)
		// A directory without an index is an [error] in nginx's error log.
		if code, out := r.exec(t, ctx, "sh", "-c", "mkdir /var/www/html/d && curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/d/"); code != 0 || out != "403" {
			t.Errorf("GET /d/: exit %d %q", code, out)
		}
		waitFor(t, "nginx error log on stderr", func() bool {
			return strings.Contains(r.out.String(), `directory index of "/var/www/html/d/" is forbidden`)
		}, r)
		// nginx's stop signal must stop it gracefully and quickly.
		stopWithImageSignal(t, ctx, r, img)
	})

	t.Run("httpd", func(t *testing.T) {
		img, err := store.Resolve(ctx, "httpd")
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, ctx, client, img, "httpd1")
		out := r.retryExec(t, ctx, "It works!", "curl", "-sS", "http://127.0.0.1/")
		if out != "<html><body><h1>It works!</h1></body></html>\n" {
			t.Errorf("page = %q", out)
		}
		waitFor(t, "apache access log on stdout", func() bool { return strings.Contains(r.out.String(), `"GET / HTTP/1.1" 200`) }, r)
		stopWithImageSignal(t, ctx, r, img)
	})

	t.Run("podinfo", func(t *testing.T) {
		img, err := store.Resolve(ctx, "podinfo")
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, ctx, client, img, "podinfo-7f9c")
		out := r.retryExec(t, ctx, "greetings from podinfo", "wget", "-qO-", "http://127.0.0.1:9898/")
		var info map[string]string
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("podinfo / is not JSON: %v\n%s", err, out)
		}
		if info["hostname"] != "podinfo-7f9c" || !strings.HasPrefix(info["message"], "greetings from podinfo v6.") {
			t.Errorf("podinfo info %v", info)
		}
		if _, out := r.exec(t, ctx, "wget", "-qO-", "http://127.0.0.1:9898/healthz"); !strings.Contains(out, `"status": "OK"`) {
			t.Errorf("/healthz: %s", out)
		}
		if !strings.Contains(r.out.String(), "Starting podinfo") {
			t.Errorf("podinfo log: %s", r.out.String())
		}
		stopWithImageSignal(t, ctx, r, img)
	})
}

func waitFor(t *testing.T, what string, cond func() bool, r *running) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; container output:\n%s", what, r.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopWithImageSignal sends the image's StopSignal (or SIGTERM) and expects
// the server to exit within 10s, as `pi delete pod` will.
func stopWithImageSignal(t *testing.T, ctx context.Context, r *running, img containerd.Image) {
	t.Helper()
	sig, err := containerd.GetOCIStopSignal(ctx, img, "SIGTERM")
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseSignal(sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.task.Kill(ctx, s); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-r.exit:
		r.exit = nil
		t.Logf("%s stopped by %s: exit %d", r.container.ID(), sig, st.ExitCode())
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not stop within 10s of %s", r.container.ID(), sig)
	}
}

func parseSignal(s string) (syscall.Signal, error) {
	switch s {
	case "SIGTERM":
		return syscall.SIGTERM, nil
	case "SIGQUIT":
		return syscall.SIGQUIT, nil
	case "SIGWINCH":
		return syscall.SIGWINCH, nil
	}
	return 0, fmt.Errorf("unexpected stop signal %s", s)
}

// TestShimsSurviveSupervisor checks the supervisor's promise to pods: a
// running container survives Close of the supervisor (pi down) and is found
// again by the next containerd on the same dirs (pi up).
func TestShimsSurviveSupervisor(t *testing.T) {
	images.RequireBuild(t)
	lab := netnstest.Lab()
	dir, err := os.MkdirTemp("/tmp", "pi"+lab+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	o := supervisor.Options{Lab: lab, Root: filepath.Join(dir, "root"), RunDir: filepath.Join(dir, "run"), Log: io.Discard}
	ctx := ctxFor(t, 5*time.Minute)
	sup, err := supervisor.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close() })
	store := images.New(sup.Client(), lab, images.SharedWorkDir(t))
	if err := store.Build(ctx, []string{"busybox"}, false, nil); err != nil {
		t.Fatal(err)
	}
	img, err := store.Resolve(ctx, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	// run's cleanup uses the client it was given; give it one that follows
	// the supervisor across the restart.
	r := run(t, ctx, sup.Client(), img, "survivor", oci.WithProcessArgs("sleep", "600"))
	pid := int(r.task.Pid())

	if err := sup.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("container process %d died with containerd: %v", pid, err)
	}
	sup2, err := supervisor.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	sup = sup2 // the Cleanup above closes the new one (after run's cleanup)
	c, err := sup2.Client().LoadContainer(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatalf("task of survivor after restart: %v", err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running || int(task.Pid()) != pid {
		t.Fatalf("after restart: status %v %v pid %d (was %d)", st.Status, err, task.Pid(), pid)
	}
	// Point run's cleanup at the new containerd.
	r.container, r.task = c, task
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.exit = exit
}
