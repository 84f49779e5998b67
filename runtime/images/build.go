package images

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Suite is the Debian release lab images are built from.
const Suite = "bookworm"

// recipeFormat is bumped whenever the way recipes turn into images changes
// (tar filtering, mmdebstrap options), so stale images get rebuilt.
const recipeFormat = "pilab-recipe/1"

// commonOpts are mmdebstrap options every lab image uses: keep images small
// (no docs, man pages, locales) and builds fast (no fsync, no translations).
var commonOpts = []string{
	"--mode=root",
	"--format=tar",
	"--skip=output/dev",
	"--aptopt=Acquire::Languages \"none\"",
	"--dpkgopt=force-unsafe-io",
	"--dpkgopt=path-exclude=/usr/share/man/*",
	"--dpkgopt=path-exclude=/usr/share/info/*",
	"--dpkgopt=path-exclude=/usr/share/lintian/*",
	"--dpkgopt=path-exclude=/usr/share/locale/*",
	"--dpkgopt=path-exclude=/usr/share/doc/*",
	"--dpkgopt=path-include=/usr/share/doc/*/copyright",
}

// Build builds lab images with mmdebstrap from Debian packages and stores
// them as docker.io/library/NAME:latest. names empty means all. An image
// whose recipe hash label matches is skipped unless force. One line per step
// goes to progress (plus mmdebstrap's own output when progress is a TTY).
func (s *Store) Build(ctx context.Context, names []string, force bool, progress io.Writer) error {
	if progress == nil {
		progress = io.Discard
	}
	all := recipes()
	var todo []recipe
	if len(names) == 0 {
		todo = all
	} else {
		byName := map[string]recipe{}
		for _, r := range all {
			byName[r.Name] = r
		}
		seen := map[string]bool{}
		for _, n := range names {
			r, ok := byName[n]
			if !ok {
				return fmt.Errorf("unknown lab image %q; known: %s", n, strings.Join(LabImages(), ", "))
			}
			if !seen[n] {
				seen[n] = true
				todo = append(todo, r)
			}
		}
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return errors.New("mmdebstrap not found in PATH; install it: apt-get install mmdebstrap")
	}
	if strings.ContainsAny(s.workDir, " \t\n\"'") || s.workDir == "" {
		return fmt.Errorf("image work dir %q must be set and contain no spaces or quotes (mmdebstrap hooks take it unquoted)", s.workDir)
	}

	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	unlock, err := s.lockWorkDir(ctx, progress)
	if err != nil {
		return err
	}
	defer unlock()

	sources := hostSources()
	for i, r := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.buildOne(ctx, r, sources, force, progress, fmt.Sprintf("[%d/%d] ", i+1, len(todo))); err != nil {
			return err
		}
	}
	return nil
}

// lockWorkDir serialises builds of the same work dir across processes and
// labs (the apt cache is not safe for concurrent mmdebstrap runs) and clears
// temp dirs left by a build that was killed.
func (s *Store) lockWorkDir(ctx context.Context, progress io.Writer) (func(), error) {
	for _, d := range []string{s.cacheDir("archives"), s.cacheDir("lists"), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create image work dir: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(s.workDir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	// Poll rather than block so that a waiting build can be cancelled.
	for waited := false; ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if !waited {
			fmt.Fprintf(progress, "waiting for another image build to finish (lock %s)\n", f.Name())
			waited = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	s.clearTmp()
	// A build killed mid-way (cancelled, and mmdebstrap slower than its grace to clean up) leaves its temp
	// dir behind; the lock holder clears it before letting the next build in.
	return func() { s.clearTmp(); unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// clearTmp empties the build temp dir. Safe only under the build lock: mmdebstrap runs in a private mount
// namespace, so nothing is mounted below a dead build's temp dir.
func (s *Store) clearTmp() {
	if ents, err := os.ReadDir(s.tmpDir()); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(s.tmpDir(), e.Name()))
		}
	}
}

func (s *Store) cacheDir(kind string) string { return filepath.Join(s.workDir, "apt", kind) }
func (s *Store) tmpDir() string              { return filepath.Join(s.workDir, "tmp") }

// plan is a recipe resolved against this machine: mmdebstrap arguments,
// extra files and the hash of all of it.
type plan struct {
	recipe
	packages []string
	args     []string // recipe-specific mmdebstrap args (hashed)
	exePath  string
	exeHash  string
	hash     string
}

func makePlan(r recipe, sources []string) (*plan, error) {
	p := &plan{recipe: r}
	p.Files = append(append([]file(nil), commonFiles...), r.Files...)
	pkgs := append([]string(nil), r.Packages...)
	if r.WithExecutable {
		// /proc/self/exe is the running binary even if a rebuild replaced
		// the file on disk since pi started.
		exe := "/proc/self/exe"
		if _, err := os.Stat(exe); err != nil {
			if exe, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("find the pi executable to embed: %w", err)
			}
		}
		p.exePath = exe
		var err error
		if p.exeHash, err = fileSHA256(exe); err != nil {
			return nil, fmt.Errorf("hash %s: %w", exe, err)
		}
		dyn, err := isDynamic(exe)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", exe, err)
		}
		if dyn && !slices.Contains(pkgs, "libc6") {
			// A cgo-linked pi needs the C library in the image.
			pkgs = append(pkgs, "libc6")
		}
	}
	p.packages = pkgs
	p.args = append(p.args, "--variant="+r.Variant)
	if len(pkgs) > 0 {
		p.args = append(p.args, "--include="+strings.Join(pkgs, ","))
	}
	for _, h := range r.Hooks {
		p.args = append(p.args, "--"+h.Stage+"-hook="+h.Cmd)
	}
	h := sha256.New()
	json.NewEncoder(h).Encode(struct {
		Format  string
		Common  []string
		Args    []string
		Suite   string
		Sources []string
		Files   []file
		Drop    []string
		Exe     string
		Config  any
	}{recipeFormat, commonOpts, p.args, Suite, sources, p.Files, r.Drop, p.exeHash, r.Config})
	p.hash = hex.EncodeToString(h.Sum(nil))
	return p, nil
}

func (s *Store) buildOne(ctx context.Context, r recipe, sources []string, force bool, progress io.Writer, prefix string) error {
	ctx = s.ctx(ctx)
	ref, _ := Normalize(r.Name)
	p, err := makePlan(r, sources)
	if err != nil {
		return fmt.Errorf("build %s: %w", r.Name, err)
	}
	if !force {
		if img, err := s.get(ctx, ref); err == nil && img != nil && img.Labels[LabelRecipe] == p.hash {
			ci, err := s.client.GetImage(ctx, ref)
			if err == nil && s.ensureUnpacked(ctx, ci) == nil {
				fmt.Fprintf(progress, "%s%s: up to date (recipe %s)\n", prefix, r.Name, p.hash[:12])
				return nil
			}
		}
	}
	start := time.Now()
	fmt.Fprintf(progress, "%s%s: building with mmdebstrap --variant=%s (%s)\n", prefix, r.Name, r.Variant, strings.Join(p.packages, ", "))

	layer, wait, err := s.runMmdebstrap(ctx, p, sources, progress)
	if err != nil {
		return fmt.Errorf("build %s: %w", r.Name, err)
	}
	labels := map[string]string{LabelLabImage: "true", LabelRecipe: p.hash}
	ierr := s.ImportRootfs(ctx, ref, layer, r.Config, labels)
	layer.Close()
	werr := wait()
	// A failed mmdebstrap explains a failed import; otherwise the importer's
	// error is the cause and the tar side only saw a closed pipe.
	var merr *mmdebstrapError
	switch {
	case errors.As(werr, &merr):
		return fmt.Errorf("build %s: %w", r.Name, werr)
	case ierr != nil:
		return fmt.Errorf("build %s: %w", r.Name, ierr)
	case werr != nil:
		return fmt.Errorf("build %s: %w", r.Name, werr)
	}
	size := int64(0)
	digest := ""
	if img, err := s.client.GetImage(ctx, ref); err == nil {
		size = s.size(ctx, img)
		digest = shortDigest(img.Target().Digest)
	}
	fmt.Fprintf(progress, "%s%s: built in %s, %s (sha256:%s)\n", prefix, r.Name, time.Since(start).Round(100*time.Millisecond), humanSize(size), digest)
	return nil
}

// runMmdebstrap starts mmdebstrap writing a tar to stdout and returns the
// filtered layer stream. The stream only ends cleanly (EOF) once mmdebstrap
// has exited successfully, so a failed build can never become an image.
// wait must be called after the layer has been consumed or closed.
func (s *Store) runMmdebstrap(ctx context.Context, p *plan, sources []string, progress io.Writer) (io.ReadCloser, func() error, error) {
	args := append([]string{}, commonOpts...)
	args = append(args, p.args...)
	// The persistent apt cache: debs and package lists are synced in before
	// apt runs and out again before mmdebstrap's cleanup empties them.
	outStage := "customize"
	if p.Variant == "extract" {
		outStage = "extract" // no customize stage in extract mode
	} else {
		args = append(args, "--skip=essential/unlink") // keep essential debs for sync-out
	}
	args = append(args,
		`--setup-hook=mkdir -p "$1/var/cache/apt/archives" "$1/var/lib/apt/lists"`,
		"--setup-hook=sync-in "+s.cacheDir("archives")+" /var/cache/apt/archives/",
		"--setup-hook=sync-in "+s.cacheDir("lists")+" /var/lib/apt/lists/",
		"--"+outStage+"-hook=sync-out /var/cache/apt/archives "+s.cacheDir("archives"),
		"--"+outStage+"-hook=sync-out /var/lib/apt/lists "+s.cacheDir("lists"),
	)
	args = append(args, Suite, "-")
	args = append(args, sources...)

	cmd := exec.Command("mmdebstrap", args...)
	if memAvailable() >= tmpfsMinMem {
		// Building in RAM halves build time on slow disks. The tmpfs is
		// mounted inside the private mount namespace below, so it vanishes
		// with mmdebstrap whatever happens.
		cmd = exec.Command("/bin/sh", append([]string{"-c",
			`mount -t tmpfs -o size=` + tmpfsSize + `,mode=0700 pilab-build "$TMPDIR" && exec mmdebstrap "$@"`,
			"sh"}, args...)...)
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+s.tmpDir())
	// A private mount namespace: whatever mmdebstrap mounts in its chroot
	// (proc, sys, dev) disappears with it, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true}
	stderr := &tailBuffer{max: 16 << 10}
	var errOut io.Writer = stderr
	if isTerminal(progress) {
		errOut = io.MultiWriter(stderr, &prefixWriter{w: progress, prefix: "    "})
	}
	cmd.Stderr = errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start mmdebstrap: %w", err)
	}
	// Cancellation: SIGTERM lets mmdebstrap clean its temp dir.
	stopWatch := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-stopWatch:
			case <-time.After(20 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		case <-stopWatch:
		}
	}()

	pr, pw := io.Pipe()
	var (
		once    sync.Once
		waitErr error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		ferr := filterRootfs(stdout, pw, p)
		if ferr != nil {
			// We stopped reading (the importer gave up, or the tar is bad):
			// stop mmdebstrap instead of letting it block on a full pipe.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			io.Copy(io.Discard, stdout)
		}
		werr := cmd.Wait()
		close(stopWatch)
		switch {
		case ctx.Err() != nil:
			waitErr = &mmdebstrapError{fmt.Sprintf("mmdebstrap interrupted: %v", ctx.Err())}
		case errors.Is(ferr, io.ErrClosedPipe):
			// The importer failed first and reports why.
			waitErr = fmt.Errorf("layer import stopped: %w", ferr)
		case werr != nil:
			msg := fmt.Sprintf("mmdebstrap failed (%v)", werr)
			if ferr != nil {
				msg += " after a broken tar stream (" + ferr.Error() + ")"
			}
			waitErr = &mmdebstrapError{msg + "; last output:\n" + strings.TrimSpace(stderr.String()) + "\nis the Debian mirror reachable? try: apt-get update"}
		case ferr != nil:
			waitErr = fmt.Errorf("process rootfs tar from mmdebstrap: %w", ferr)
		}
		if waitErr != nil {
			pw.CloseWithError(waitErr)
			return
		}
		pw.Close()
	}()
	wait := func() error {
		once.Do(func() { <-done })
		return waitErr
	}
	return pr, wait, nil
}

// A build needs a few hundred MB (chroot, apt cache copy, lists); build in
// RAM only when there is plenty to spare.
var tmpfsMinMem int64 = 4 << 30

const tmpfsSize = "2g"

// memAvailable returns MemAvailable from /proc/meminfo in bytes, 0 if unknown.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

type mmdebstrapError struct{ msg string }

func (e *mmdebstrapError) Error() string { return e.msg }

// dropPrefixes are removed from every lab image: documentation (extract
// builds bypass dpkg's path-exclude) and files describing the build host.
var dropPrefixes = []string{
	"dev/", // only the contents: /dev stays as the mount point
	"usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/locale",
	"var/cache/apt/archives/partial", "var/lib/apt/lists/partial",
}

var dropFiles = map[string]bool{
	// Host files copied in by mmdebstrap; the container runtime provides
	// its own (and the host's names must not leak into images).
	"etc/resolv.conf":             true,
	"etc/hostname":                true,
	"var/cache/apt/archives/lock": true,
	"var/lib/apt/lists/lock":      true,
}

func dropped(name string) bool {
	if dropFiles[name] {
		return true
	}
	for _, p := range dropPrefixes {
		if strings.HasSuffix(p, "/") && strings.HasPrefix(name, p) ||
			name == p || strings.HasPrefix(name, p+"/") {
			return true
		}
	}
	// Keep license files, drop the rest of /usr/share/doc.
	if strings.HasPrefix(name, "usr/share/doc/") {
		return !strings.HasSuffix(name, "/copyright") && strings.Count(name, "/") > 3
	}
	return false
}

func recipeDrops(drop []string, name string) bool {
	for _, d := range drop {
		d = strings.TrimPrefix(path.Clean(d), "/")
		if name == d || strings.HasPrefix(name, d+"/") {
			return true
		}
	}
	return false
}

// filterRootfs copies mmdebstrap's tar to w as a layer: names without "./",
// no root entry, without dropped paths, recipe files replacing packaged
// ones, and the recipe files (and executable) appended.
func filterRootfs(r io.Reader, w io.Writer, p *plan) error {
	files := append([]file(nil), p.Files...)
	if p.WithExecutable {
		files = append(files, file{Path: "/usr/local/bin/podinfo", Mode: 0o755})
	}
	override := map[string]bool{}
	for _, f := range files {
		override[strings.TrimPrefix(path.Clean(f.Path), "/")] = true
	}
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	skipped := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if name == "" || dropped(name) || override[name] || recipeDrops(p.Drop, name) {
			skipped[name] = true
			continue
		}
		if hdr.Typeflag == tar.TypeLink {
			target := strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")
			if skipped[target] {
				continue
			}
			hdr.Linkname = target
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs[name] = true
			hdr.Name = name + "/"
		} else {
			hdr.Name = name
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	// mmdebstrap may still be writing padding; the caller waits for it.
	now := time.Now()
	sort.SliceStable(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		name := strings.TrimPrefix(path.Clean(f.Path), "/")
		// Parents first, for files in directories no package created.
		var parents []string
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: now}); err != nil {
				return err
			}
			dirs[d] = true
		}
		hdr := &tar.Header{Name: name, Mode: f.Mode, ModTime: now, Uname: "root", Gname: "root"}
		switch {
		case f.Dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
			dirs[name] = true
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		case name == "usr/local/bin/podinfo" && p.WithExecutable:
			if err := addHostFile(tw, hdr, p.exePath, p.exeHash); err != nil {
				return err
			}
			continue
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, f.Data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	// Drain the end-of-archive padding so mmdebstrap can exit.
	_, err := io.Copy(io.Discard, r)
	return err
}

// addHostFile copies a host file into the tar, checking it is still the
// file that was hashed into the recipe.
func addHostFile(tw *tar.Writer, hdr *tar.Header, src, wantHash string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tw, h), f); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != wantHash {
		return fmt.Errorf("%s changed during the build; run the build again", src)
	}
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func isDynamic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// hostSources returns one-line apt sources for Suite taken from the host's
// Debian archive entries (deb822 .sources and one-line .list files), so
// builds use the same (reachable) mirror as the host. Third-party
// repositories are ignored: their suites are not Debian's. Falls back to
// deb.debian.org.
func hostSources() []string {
	var out []string
	add := func(uri, suite, comps, signedBy string) {
		if suite != Suite && !strings.HasPrefix(suite, Suite+"-") {
			return
		}
		opt := ""
		if signedBy != "" && !strings.Contains(signedBy, "\n") {
			if _, err := os.Stat(signedBy); err == nil {
				opt = "[signed-by=" + signedBy + "] "
			}
		}
		line := fmt.Sprintf("deb %s%s %s %s", opt, uri, suite, comps)
		for _, l := range out {
			if l == line {
				return
			}
		}
		out = append(out, line)
	}
	var files []string
	if _, err := os.Stat("/etc/apt/sources.list"); err == nil {
		files = append(files, "/etc/apt/sources.list")
	}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.HasSuffix(f, ".sources") {
			for _, para := range parseDeb822(string(b)) {
				if para["enabled"] == "no" || !strings.Contains(" "+para["types"]+" ", " deb ") {
					continue
				}
				comps := strings.Join(strings.Fields(para["components"]), " ")
				for _, uri := range strings.Fields(para["uris"]) {
					for _, suite := range strings.Fields(para["suites"]) {
						add(uri, suite, comps, para["signed-by"])
					}
				}
			}
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = strings.TrimSpace(line[:i])
			}
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[0] != "deb" {
				continue
			}
			signedBy := ""
			if strings.HasPrefix(fields[1], "[") {
				opts := []string{}
				for len(fields) > 1 {
					o := fields[1]
					fields = append(fields[:1], fields[2:]...)
					opts = append(opts, strings.Trim(o, "[]"))
					if strings.HasSuffix(o, "]") {
						break
					}
				}
				for _, o := range opts {
					if v, ok := strings.CutPrefix(o, "signed-by="); ok {
						signedBy = v
					}
				}
			}
			if len(fields) < 4 {
				continue
			}
			add(fields[1], fields[2], strings.Join(fields[3:], " "), signedBy)
		}
	}
	if len(out) == 0 {
		out = []string{
			"deb http://deb.debian.org/debian " + Suite + " main",
			"deb http://deb.debian.org/debian " + Suite + "-updates main",
			"deb http://deb.debian.org/debian-security " + Suite + "-security main",
		}
	}
	return out
}

// parseDeb822 parses apt's deb822 format into paragraphs with lower-case
// keys; continuation lines are joined with newlines.
func parseDeb822(s string) []map[string]string {
	var paras []map[string]string
	cur := map[string]string{}
	last := ""
	flush := func() {
		if len(cur) > 0 {
			paras = append(paras, cur)
		}
		cur, last = map[string]string{}, ""
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && last != "" {
			cur[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		last = strings.ToLower(strings.TrimSpace(k))
		cur[last] = strings.TrimSpace(v)
	}
	flush()
	return paras
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// prefixWriter indents each line.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, c := range b {
		if !p.mid {
			out = append(out, p.prefix...)
			p.mid = true
		}
		out = append(out, c)
		if c == '\n' {
			p.mid = false
		}
	}
	_, err := p.w.Write(out)
	return len(b), err
}
