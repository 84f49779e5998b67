package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestProgressLineRoundTrip(t *testing.T) {
	for _, p := range []Progress{
		{Image: "nginx", Phase: PhaseSetup},
		{Step: 1, Steps: 2, Image: "nginx", Phase: PhaseDownload, Done: 37, Bytes: 12_300_000, TotalBytes: 38_000_000},
		{Step: 2, Steps: 2, Image: "busybox", Phase: PhaseInstall, Done: 61, Total: 98},
		{Image: "podinfo", Phase: PhaseLists, Bytes: 9_400_000},
		{Image: "httpd", Phase: PhaseLayer, Bytes: 45_200_000},
		{Image: "nginx", Phase: PhaseDownload, Bytes: 0, TotalBytes: 22_300_000},
	} {
		line := p.String()
		if !strings.HasPrefix(line, ProgressPrefix) {
			t.Errorf("%+v: line %q lacks the prefix", p, line)
		}
		got, ok := ParseProgress(line)
		if !ok || got != p {
			t.Errorf("ParseProgress(%q) = %+v, %v; want %+v", line, got, ok, p)
		}
	}
	if got := (Progress{Step: 1, Steps: 2, Image: "nginx", Phase: PhaseDownload, Done: 37, Bytes: 12_300_000, TotalBytes: 38_000_000}).String(); got != "progress: [1/2] nginx: download 37 packages, 12.3/38.0 MB" {
		t.Errorf("String = %q", got)
	}
	for _, l := range []string{
		"[1/1] nginx: built in 11.1s (setup 1.2s), 80.2 MB (sha256:c8ee79148606)",
		"[1/1] nginx: building with mmdebstrap --variant=essential (nginx-light, curl)",
		"progress: nginx download lots",
		"waiting for the image build lock held by lab pi (pid 1, `pi daemon`) since 10:00:00 (/x)",
	} {
		if p, ok := ParseProgress(l); ok {
			t.Errorf("ParseProgress(%q) = %+v; want no progress line", l, p)
		}
	}
	if f, ok := (Progress{Bytes: 5, TotalBytes: 10}).Fraction(); !ok || f != 0.5 {
		t.Errorf("Fraction of bytes = %v, %v", f, ok)
	}
	if f, ok := (Progress{Done: 3, Total: 4}).Fraction(); !ok || f != 0.75 {
		t.Errorf("Fraction of packages = %v, %v", f, ok)
	}
	if _, ok := (Progress{Phase: PhaseExtract}).Fraction(); ok {
		t.Error("a phase without totals has a fraction")
	}
}

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

// feedLog writes a recorded mmdebstrap --verbose log (nginx, this machine, issue 14) to the tracker in random
// chunks, as a pipe would deliver it, then plays pi's own phases.
func feedLog(t *testing.T, tr *buildTracker, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	tr.Phase(PhaseSetup)
	for len(b) > 0 {
		n := min(len(b), 1+rng.Intn(300))
		tr.Write(b[:n])
		b = b[n:]
	}
	tr.LayerBytes(40_000_000)
	tr.LayerBytes(80_000_000)
	tr.Phase(PhaseImport)
}

func TestBuildTrackerReadsMmdebstrap(t *testing.T) {
	for _, tc := range []struct {
		log                        string
		fetched                    int
		needBytes                  int64
		minListBytes, maxListBytes int64
		installed, toInstall       int
		wantLines                  []string
	}{{
		// Cold: the package lists and 99 .debs are downloaded (60 essential, usr-is-merged, 38 more).
		log: "mmdebstrap-nginx-cold.log", fetched: 99, needBytes: 22_300_000 + 5616 + 9_673_000,
		minListBytes: 9_400_000, maxListBytes: 9_500_000, installed: 100, toInstall: 98,
		wantLines: []string{
			"progress: nginx: lists 9.4 MB",
			"progress: nginx: download 60 packages, 22.3/22.3 MB",
			"progress: nginx: extract",
			"progress: nginx: install 100/100 packages",
			"progress: nginx: layer 80.0 MB",
			"progress: nginx: import",
		},
	}, {
		// Warm: everything comes from the apt cache; apt prints its plan twice then, counted once.
		log: "mmdebstrap-nginx-warm.log", fetched: 0, needBytes: 0,
		minListBytes: 240_000, maxListBytes: 242_000, installed: 100, toInstall: 98,
		wantLines: []string{
			"progress: nginx: download",
			"progress: nginx: install 100/100 packages",
		},
	}} {
		t.Run(tc.log, func(t *testing.T) {
			var out bytes.Buffer
			tr := newBuildTracker(&out, Progress{Image: "nginx"})
			clock := &fakeClock{t: time.Unix(1e9, 0), step: time.Millisecond}
			tr.now = clock.now
			feedLog(t, tr, tc.log)
			if tr.fetched != tc.fetched || tr.needBytes != tc.needBytes || tr.installed != tc.installed || tr.toInstall != tc.toInstall {
				t.Errorf("fetched %d, need %d B, installed %d of %d; want %d, %d B, %d of %d",
					tr.fetched, tr.needBytes, tr.installed, tr.toInstall, tc.fetched, tc.needBytes, tc.installed, tc.toInstall)
			}
			if tc.fetched > 0 && (tr.fetchBytes < tc.needBytes*99/100 || tr.fetchBytes > tc.needBytes*101/100) {
				t.Errorf("fetched %d B; apt said it needs %d B", tr.fetchBytes, tc.needBytes)
			}
			if tr.listBytes < tc.minListBytes || tr.listBytes > tc.maxListBytes {
				t.Errorf("package lists %d B; want %d-%d", tr.listBytes, tc.minListBytes, tc.maxListBytes)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			for _, l := range lines {
				if _, ok := ParseProgress(l); !ok {
					t.Errorf("tracker wrote a line that is no progress line: %q", l)
				}
			}
			for _, w := range tc.wantLines {
				if !strings.Contains(out.String(), w+"\n") {
					t.Errorf("no line %q in:\n%s", w, out.String())
				}
			}
			bd := tr.Breakdown()
			if !regexp.MustCompile(`^setup [0-9.]+s, lists [0-9.]+s, download [0-9.]+s, extract [0-9.]+s, install [0-9.]+s, layer [0-9.]+s, import [0-9.]+s$`).MatchString(bd) {
				t.Errorf("Breakdown = %q; want every phase once, in order", bd)
			}
		})
	}
}

// TestBuildTrackerThrottles: a burst of dpkg lines within one phase becomes one progress line per interval; a
// phase change is written at once, after the last state of the phase it ends.
func TestBuildTrackerThrottles(t *testing.T) {
	var out bytes.Buffer
	tr := newBuildTracker(&out, Progress{Step: 1, Steps: 1, Image: "nginx"})
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	tr.now = clock.now
	tr.Write([]byte("I: installing essential packages...\n0 upgraded, 50 newly installed, 0 to remove and 0 not upgraded.\n"))
	for i := range 50 {
		clock.step = 0
		if i%10 == 9 {
			clock.t = clock.t.Add(600 * time.Millisecond)
		}
		fmt.Fprintf(tr, "Setting up pkg%d (1.0) ...\n", i)
	}
	tr.Write([]byte("I: creating tarball...\n"))
	want := []string{
		"progress: [1/1] nginx: install",
		"progress: [1/1] nginx: install 10/50 packages",
		"progress: [1/1] nginx: install 20/50 packages",
		"progress: [1/1] nginx: install 30/50 packages",
		"progress: [1/1] nginx: install 40/50 packages",
		"progress: [1/1] nginx: install 50/50 packages",
		"progress: [1/1] nginx: layer",
	}
	if got := strings.Split(strings.TrimSpace(out.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("progress lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestLockHolderMessage: a build that waits for the build lock, and one that gives up waiting, say which lab and
// process hold it and since when.
func TestLockHolderMessage(t *testing.T) {
	dir := t.TempDir()
	a, b := New(nil, "laba", dir), New(nil, "labb", dir)
	unlock, err := a.lockWorkDir(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Format("15:04:05")
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	var progress bytes.Buffer
	_, err = b.lockWorkDir(ctx, &progress)
	holder := fmt.Sprintf("held by lab laba (pid %d, `%s`) since %s (%s)", os.Getpid(), selfCommand(), since, filepath.Join(dir, "build.lock"))
	if want := "waiting for the image build lock " + holder + "\n"; progress.String() != want {
		t.Errorf("waiting build printed %q; want %q", progress.String(), want)
	}
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "gave up waiting for the image build lock "+holder) {
		t.Errorf("build that gave up waiting: %v; want it to name the holder: %s", err, holder)
	}
	if c := selfCommand(); !strings.HasPrefix(c, "images.test") {
		t.Errorf("selfCommand = %q; want the test binary's name", c)
	}

	// Released: the record is gone, the next holder writes its own.
	unlock()
	if h := readLockHolder(filepath.Join(dir, "build.lock")); h != nil {
		t.Errorf("released lock still names a holder: %+v", h)
	}
	unlock, err = b.lockWorkDir(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if h := readLockHolder(filepath.Join(dir, "build.lock")); h == nil || h.Lab != "labb" || h.PID != os.Getpid() {
		t.Errorf("holder record after labb took the lock: %+v", h)
	}

	// A record left by a process that is gone names nobody.
	stale := filepath.Join(t.TempDir(), "build.lock")
	os.WriteFile(stale, []byte(`{"lab":"old","pid":2147483646,"command":"pi daemon","since":"2024-01-01T00:00:00Z"}`), 0o600)
	if got := readLockHolder(stale).describe(stale); got != "held by another process ("+stale+")" {
		t.Errorf("stale record: %q", got)
	}
}

// TestSeedLists: an empty lists cache takes the host's package lists of the build's sources (indices and release
// files, with their times, for apt's If-Modified-Since), nothing of other repositories; a filled one is left alone.
func TestSeedLists(t *testing.T) {
	host, wd := t.TempDir(), t.TempDir()
	old := time.Date(2025, 5, 20, 0, 0, 0, 0, time.UTC)
	for _, n := range []string{
		"deb.debian.org_debian_dists_bookworm_InRelease",
		"deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
		"deb.debian.org_debian_dists_bookworm_main_dep11_Components-amd64.yml.gz",
		"deb.debian.org_debian-security_dists_bookworm-security_InRelease",
		"deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
		"packages.cloud.google.com_apt_dists_cloud-sdk-bookworm_InRelease",
		"lock",
	} {
		p := filepath.Join(host, n)
		os.WriteFile(p, []byte(n), 0o644)
		os.Chtimes(p, old, old)
	}
	s := New(nil, "lab", wd)
	os.MkdirAll(s.cacheDir("lists"), 0o755)
	sources := []string{
		"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main",
		"deb http://deb.debian.org/debian-security/ bookworm-security main",
	}
	s.seedLists(host, sources)
	var got []string
	ents, _ := os.ReadDir(s.cacheDir("lists"))
	for _, e := range ents {
		got = append(got, e.Name())
		if st, err := os.Stat(filepath.Join(s.cacheDir("lists"), e.Name())); err != nil || !st.ModTime().Equal(old) {
			t.Errorf("%s: modification time not kept: %v", e.Name(), err)
		}
	}
	want := []string{
		"deb.debian.org_debian-security_dists_bookworm-security_InRelease",
		"deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
		"deb.debian.org_debian_dists_bookworm_InRelease",
		"deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("seeded:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A cache with lists of its own keeps them.
	os.WriteFile(filepath.Join(host, "deb.debian.org_debian_dists_bookworm_InRelease"), []byte("newer"), 0o644)
	s.seedLists(host, sources)
	if b, _ := os.ReadFile(filepath.Join(s.cacheDir("lists"), "deb.debian.org_debian_dists_bookworm_InRelease")); string(b) == "newer" {
		t.Error("seedLists overwrote a filled lists cache")
	}
}

// TestListsStamp: package lists a build updated moments ago are fresh, old ones are not, and none are without a stamp.
func TestListsStamp(t *testing.T) {
	s := New(nil, "lab", t.TempDir())
	os.MkdirAll(filepath.Dir(s.listsStamp()), 0o755)
	if s.listsFresh() {
		t.Error("fresh without a stamp")
	}
	touch(s.listsStamp())
	if !s.listsFresh() {
		t.Error("not fresh right after an update")
	}
	old := time.Now().Add(-listsFreshFor - time.Second)
	os.Chtimes(s.listsStamp(), old, old)
	if s.listsFresh() {
		t.Error("fresh after listsFreshFor")
	}
	touch(s.listsStamp())
	if !s.listsFresh() {
		t.Error("touch did not renew the stamp")
	}
}
