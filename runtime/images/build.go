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
const recipeFormat = "pilab-recipe/2"

// commonOpts are mmdebstrap options every lab image uses. Builds are fast (no
// fsync, no translations) and verbose: apt's "Get:" and dpkg's "Setting up"
// lines are what the build's progress is read from (see buildTracker).
//
// Documentation, man pages and locales are left out by filterRootfs (see
// dropped), not by dpkg path-exclude options: with those, mmdebstrap pipes
// every essential package through mmtarfilter, a Python script started once
// per package, and extracting the ~90 essential packages took 11-25 s instead
// of 2-3 s on 2 cores (measured for issue 14).
var commonOpts = []string{
	"--mode=root",
	"--format=tar",
	"--skip=output/dev",
	"--verbose",
	"--aptopt=Acquire::Languages \"none\"",
	"--dpkgopt=force-unsafe-io",
}

// mergedUsrHooks sets up merged /usr the way debootstrap does and installs
// usr-is-merged, so apt satisfies init-system-helpers' "usrmerge |
// usr-is-merged" without the usrmerge package, which pulls in perl (about
// 55 MB installed and a third of an essential build's install time). It ships
// with mmdebstrap.
const mergedUsrHooks = "/usr/share/mmdebstrap/hooks/merged-usr"

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
	s.seedLists(hostAptLists, sources)
	for i, r := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.buildOne(ctx, r, sources, force, progress, i+1, len(todo)); err != nil {
			return err
		}
	}
	return nil
}

// lockWorkDir serialises builds of the same work dir across processes and
// labs (the apt cache is not safe for concurrent mmdebstrap runs) and clears
// temp dirs left by a build that was killed. The lock file holds who has it
// (lab, pid, command, since), so a build that waits, or gives up waiting,
// says what it waits for.
func (s *Store) lockWorkDir(ctx context.Context, progress io.Writer) (func(), error) {
	if progress == nil {
		progress = io.Discard
	}
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
	var last string
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		// Say it again when the lock changes hands while we wait.
		held := readLockHolder(f.Name()).describe(f.Name())
		if held != last {
			fmt.Fprintf(progress, "waiting for the image build lock %s\n", held)
			last = held
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("gave up waiting for the image build lock %s: %w", held, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	s.clearTmp()
	writeLockHolder(f, lockHolder{Lab: s.namespace, PID: os.Getpid(), Command: selfCommand(), Since: time.Now()})
	// A build killed mid-way (cancelled, and mmdebstrap slower than its grace to clean up) leaves its temp
	// dir behind; the lock holder clears it before letting the next build in.
	return func() {
		s.clearTmp()
		f.Truncate(0)
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// lockHolder is what the build lock file says about the build holding it.
type lockHolder struct {
	Lab     string    `json:"lab"`
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	Since   time.Time `json:"since"`
}

func writeLockHolder(f *os.File, h lockHolder) {
	b, _ := json.Marshal(h)
	// Best effort: the record only explains a wait, the flock is the lock.
	if f.Truncate(0) == nil {
		f.WriteAt(append(b, '\n'), 0)
	}
}

// readLockHolder reads the holder record; nil if there is none, or if its
// process is gone (the holder that just took the lock has not written yet).
func readLockHolder(path string) *lockHolder {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var h lockHolder
	if json.Unmarshal(b, &h) != nil || h.PID <= 0 {
		return nil
	}
	if err := unix.Kill(h.PID, 0); errors.Is(err, unix.ESRCH) {
		return nil
	}
	return &h
}

// describe completes "the image build lock ...": "held by lab pi (pid 812,
// `pi daemon`) since 10:31:02 (/var/cache/pilab/images/build.lock)".
func (h *lockHolder) describe(path string) string {
	if h == nil {
		return fmt.Sprintf("held by another process (%s)", path)
	}
	who := fmt.Sprintf("pid %d", h.PID)
	if h.Command != "" {
		who += ", `" + h.Command + "`"
	}
	lab := ""
	if h.Lab != "" {
		lab = "lab " + h.Lab + " "
	}
	since := h.Since.Local().Format("15:04:05")
	if time.Since(h.Since) > 12*time.Hour {
		since = h.Since.Local().Format(time.DateTime)
	}
	return fmt.Sprintf("held by %s(%s) since %s (%s)", lab, who, since, path)
}

// selfCommand is this process's command as a user would recognise it: the
// program's name and its subcommand ("pi daemon").
func selfCommand() string {
	b, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return filepath.Base(os.Args[0])
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	cmd := filepath.Base(args[0])
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		cmd += " " + args[1]
	}
	return cmd
}

// hostAptLists is where the host's apt keeps its package lists.
var hostAptLists = "/var/lib/apt/lists"

// seedLists fills an empty lists cache from the host's apt lists for the
// same sources (hostSources takes them from the host's apt configuration, so
// the file names match): a first build's apt-get update then only asks the
// mirror whether they changed instead of downloading ~10 MB of package
// indices that the host fetched moments ago for `make deps`. apt checks them
// against the signed InRelease as always; anything missing or stale it
// downloads. Best effort: a failed copy just leaves it to apt.
func (s *Store) seedLists(hostDir string, sources []string) {
	dst := s.cacheDir("lists")
	if m, _ := filepath.Glob(filepath.Join(dst, "*_InRelease")); len(m) > 0 {
		return
	}
	var prefixes []string
	for _, src := range sources {
		f := strings.Fields(src)
		if len(f) > 1 && strings.HasPrefix(f[1], "[") {
			for len(f) > 1 && !strings.HasSuffix(f[1], "]") {
				f = append(f[:1], f[2:]...)
			}
			f = append(f[:1], f[2:]...)
		}
		if len(f) < 3 {
			continue
		}
		_, rest, ok := strings.Cut(f[1], "://")
		if !ok {
			continue
		}
		prefixes = append(prefixes, strings.ReplaceAll(strings.TrimSuffix(rest, "/"), "/", "_")+"_dists_"+f[2]+"_")
	}
	ents, err := os.ReadDir(hostDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		if !strings.HasSuffix(name, "_InRelease") && !strings.HasSuffix(name, "_Release") &&
			!strings.HasSuffix(name, "_Release.gpg") && !strings.Contains(name, "_Packages") {
			continue
		}
		copyFileKeepTime(filepath.Join(hostDir, name), filepath.Join(dst, name))
	}
}

// copyFileKeepTime copies src to dst (through a temp file, renamed), with
// src's modification time: apt asks the mirror If-Modified-Since it.
func copyFileKeepTime(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".pilab-tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(tmp, st.ModTime(), st.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
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

// listsStamp is touched after a build whose apt-get update succeeded.
func (s *Store) listsStamp() string { return filepath.Join(s.workDir, "apt", "lists.updated") }

// listsFreshFor is how long package lists a build updated are used without
// asking the mirror again: the other images of one `pi image build`, or a
// rebuild moments later, skip apt-get update (0.6-0.8 s each here, more on a
// slow link). A failed build removes the stamp, so a mirror that moved on
// within it costs one failed build, whose error says to try again.
var listsFreshFor = 10 * time.Minute

func (s *Store) listsFresh() bool {
	st, err := os.Stat(s.listsStamp())
	return err == nil && time.Since(st.ModTime()) < listsFreshFor
}

func touch(path string) {
	now := time.Now()
	if err := os.Chtimes(path, now, now); errors.Is(err, os.ErrNotExist) {
		if f, err := os.Create(path); err == nil {
			f.Close()
		}
	}
}

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
	for _, d := range r.HookDirs {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("mmdebstrap hook dir for %s: %w (it ships with mmdebstrap: apt-get install --reinstall mmdebstrap)", r.Name, err)
		}
		p.args = append(p.args, "--hook-dir="+d)
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

// buildOne builds image step of steps (steps 0: no "[step/steps] " prefix).
func (s *Store) buildOne(ctx context.Context, r recipe, sources []string, force bool, progress io.Writer, step, steps int) error {
	ctx = s.ctx(ctx)
	prefix := ""
	if steps > 0 {
		prefix = fmt.Sprintf("[%d/%d] ", step, steps)
	}
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

	tr := newBuildTracker(progress, Progress{Step: step, Steps: steps, Image: r.Name})
	tr.Phase(PhaseSetup)
	update := !s.listsFresh()
	layer, wait, err := s.runMmdebstrap(ctx, p, sources, tr, update)
	if err != nil {
		return fmt.Errorf("build %s: %w", r.Name, err)
	}
	labels := map[string]string{LabelLabImage: "true", LabelRecipe: p.hash}
	// The layer is written as mmdebstrap streams its tar; once the tar has
	// ended, containerd unpacks the layer for overlayfs.
	counted := &countingReader{r: layer, report: func(n int64, eof bool) {
		if eof {
			tr.Phase(PhaseImport)
		} else if n > 0 {
			tr.LayerBytes(n)
		}
	}}
	ierr := s.ImportRootfs(ctx, ref, counted, r.Config, labels)
	layer.Close()
	werr := wait()
	if werr != nil || ierr != nil {
		// Whatever failed, the next build asks the mirror again.
		os.Remove(s.listsStamp())
	} else if update {
		touch(s.listsStamp())
	}
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
	fmt.Fprintf(progress, "%s%s: built in %.1fs (%s), %s (sha256:%s)\n", prefix, r.Name, time.Since(start).Seconds(), tr.Breakdown(), humanSize(size), digest)
	return nil
}

// runMmdebstrap starts mmdebstrap writing a tar to stdout and returns the
// filtered layer stream. The stream only ends cleanly (EOF) once mmdebstrap
// has exited successfully, so a failed build can never become an image.
// wait must be called after the layer has been consumed or closed.
func (s *Store) runMmdebstrap(ctx context.Context, p *plan, sources []string, tr *buildTracker, update bool) (io.ReadCloser, func() error, error) {
	args := append([]string{}, commonOpts...)
	args = append(args, p.args...)
	if !update {
		args = append(args, "--skip=update")
	}
	// The persistent apt cache, shared by all images and labs of the work dir:
	// debs and package lists are synced in before apt runs and out again
	// before mmdebstrap's cleanup empties them. Not bind mounts, which would
	// save the copies (about a second): when a build fails or is cancelled,
	// mmdebstrap removes its temp dir with the mounts still in place, and its
	// rm --one-file-system goes through a bind mount of the same file system
	// (the build dir is on disk when memory is short), emptying the cache.
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
	// --verbose output is long (a line per file step of dpkg); the tail is
	// enough to say why a build failed, the tracker turns it into progress.
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stderr = io.MultiWriter(stderr, tr)
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
			waitErr = &mmdebstrapError{msg + "; last output:\n" + lastLines(stderr.String(), 25) + "\nis the Debian mirror reachable (try: apt-get update)? The next build fetches fresh package lists."}
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

// lastLines returns the last n lines of s, trimmed.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
