package images

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Build phases, in the order a build goes through them. mmdebstrap's own
// steps map onto them (see buildTracker.line); layer and import are pi's.
const (
	PhaseSetup    = "setup"    // mmdebstrap's setup: the chroot skeleton, the apt cache copied in
	PhaseLists    = "lists"    // apt-get update: the Debian package indices
	PhaseDownload = "download" // apt fetching .debs (or taking them from the cache)
	PhaseExtract  = "extract"  // mmdebstrap unpacking the essential packages
	PhaseInstall  = "install"  // dpkg installing and configuring packages
	PhaseLayer    = "layer"    // the rootfs tar streamed into a gzip layer in containerd
	PhaseImport   = "import"   // containerd unpacking the layer for overlayfs
)

// ProgressPrefix starts every machine-readable progress line a build writes.
// The lines are plain text, so a log or a pipe shows them as they are; `pi
// image build` on a terminal turns them into a progress bar instead.
const ProgressPrefix = "progress: "

// Progress is one build's state as a progress line carries it.
type Progress struct {
	Step, Steps int    // [Step/Steps] when several images are built; 0 if not
	Image       string // image name
	Phase       string // one of the Phase constants
	Done, Total int    // packages fetched or installed; Total 0 if unknown
	Bytes       int64  // bytes fetched (download, lists) or written (layer)
	TotalBytes  int64  // bytes to fetch; 0 if unknown
}

// String renders the line, e.g.
// "progress: [1/2] nginx: download 37/109 packages, 12.3/38.0 MB".
func (p Progress) String() string {
	var b strings.Builder
	b.WriteString(ProgressPrefix)
	if p.Steps > 0 {
		fmt.Fprintf(&b, "[%d/%d] ", p.Step, p.Steps)
	}
	fmt.Fprintf(&b, "%s: %s", p.Image, p.Phase)
	sep := " "
	if p.Done > 0 || p.Total > 0 {
		fmt.Fprintf(&b, " %d", p.Done)
		if p.Total > 0 {
			fmt.Fprintf(&b, "/%d", p.Total)
		}
		b.WriteString(" packages")
		sep = ", "
	}
	if p.Bytes > 0 || p.TotalBytes > 0 {
		fmt.Fprintf(&b, "%s%.1f", sep, float64(p.Bytes)/1e6)
		if p.TotalBytes > 0 {
			fmt.Fprintf(&b, "/%.1f", float64(p.TotalBytes)/1e6)
		}
		b.WriteString(" MB")
	}
	return b.String()
}

// Fraction is how far the current phase is, in [0, 1], and whether that is
// known (a phase without totals has no fraction).
func (p Progress) Fraction() (float64, bool) {
	var f float64
	switch {
	case p.TotalBytes > 0:
		f = float64(p.Bytes) / float64(p.TotalBytes)
	case p.Total > 0:
		f = float64(p.Done) / float64(p.Total)
	default:
		return 0, false
	}
	return min(max(f, 0), 1), true
}

var progressLine = regexp.MustCompile(`^` + regexp.QuoteMeta(ProgressPrefix) +
	`(?:\[(\d+)/(\d+)\] )?([^\s:]+): ([a-z]+)(?: (\d+)(?:/(\d+))? packages)?(?:,? ([0-9.]+)(?:/([0-9.]+))? MB)?$`)

// ParseProgress reads a line String wrote; ok is false for any other line.
func ParseProgress(line string) (p Progress, ok bool) {
	m := progressLine.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
	if m == nil {
		return Progress{}, false
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	mb := func(s string) int64 { f, _ := strconv.ParseFloat(s, 64); return int64(f*1e6 + 0.5) }
	return Progress{
		Step: atoi(m[1]), Steps: atoi(m[2]), Image: m[3], Phase: m[4],
		Done: atoi(m[5]), Total: atoi(m[6]), Bytes: mb(m[7]), TotalBytes: mb(m[8]),
	}, true
}

// buildTracker follows one image build: it reads mmdebstrap's --verbose
// output (apt's "Need to get", "Get:", dpkg's "Setting up" lines and
// mmdebstrap's "I:" step lines), keeps the time spent in each phase, and
// writes progress lines: at once when the phase changes, else at most every
// interval.
type buildTracker struct {
	mu       sync.Mutex
	out      io.Writer
	base     Progress // Step, Steps, Image
	interval time.Duration
	now      func() time.Time

	phase      string
	phaseStart time.Time
	spent      map[string]time.Duration
	order      []string

	listBytes             int64
	fetched               int
	fetchBytes, needBytes int64
	installed, toInstall  int
	layerBytes            int64

	seenPlan map[string]bool

	lastEmit time.Time
	lastLine string
	dirty    bool
	partial  []byte // an unfinished line of mmdebstrap output
}

func newBuildTracker(out io.Writer, base Progress) *buildTracker {
	return &buildTracker{out: out, base: base, interval: 500 * time.Millisecond, now: time.Now,
		spent: map[string]time.Duration{}, seenPlan: map[string]bool{}}
}

// Write takes mmdebstrap's stderr.
func (t *buildTracker) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, b...)
	for {
		i := strings.IndexByte(string(t.partial), '\n')
		if i < 0 {
			break
		}
		t.line(strings.TrimRight(string(t.partial[:i]), "\r"))
		t.partial = t.partial[i+1:]
	}
	t.maybeEmit(false)
	return len(b), nil
}

var (
	needToGet   = regexp.MustCompile(`^Need to get ([0-9.,]+ [kMG]?B)(?:/[0-9.,]+ [kMG]?B)? of archives`)
	getLine     = regexp.MustCompile(`^Get:\d+ .*\[([0-9.,]+ [kMG]?B)\]$`)
	newlyInst   = regexp.MustCompile(`^\d+ upgraded, (\d+) newly installed`)
	mmdebstrapI = map[string]string{
		"I: running apt-get update...":                          PhaseLists,
		"I: downloading packages with apt...":                   PhaseDownload,
		"I: extracting archives...":                             PhaseExtract,
		"I: installing essential packages...":                   PhaseInstall,
		"I: installing remaining packages inside the chroot...": PhaseInstall,
		"I: creating tarball...":                                PhaseLayer,
	}
)

// line takes one line of mmdebstrap's output. Caller holds mu.
func (t *buildTracker) line(l string) {
	if ph, ok := mmdebstrapI[strings.TrimSpace(l)]; ok {
		t.setPhase(ph)
		return
	}
	if needToGet.MatchString(l) || newlyInst.MatchString(l) {
		// apt prints its plan twice when it has nothing to download; count it once.
		key := fmt.Sprintf("%s|%d|%d", l, t.installed, t.fetched)
		if t.seenPlan[key] {
			return
		}
		t.seenPlan[key] = true
	}
	if m := needToGet.FindStringSubmatch(l); m != nil {
		t.needBytes += aptSize(m[1])
		t.dirty = true
		return
	}
	if m := getLine.FindStringSubmatch(l); m != nil {
		if t.phase == PhaseLists {
			t.listBytes += aptSize(m[1])
		} else {
			// The remaining packages are fetched inside mmdebstrap's install step.
			t.setPhase(PhaseDownload)
			t.fetched++
			t.fetchBytes += aptSize(m[1])
		}
		t.dirty = true
		return
	}
	if m := newlyInst.FindStringSubmatch(l); m != nil {
		n, _ := strconv.Atoi(m[1])
		t.toInstall += n
		t.dirty = true
		return
	}
	if strings.HasPrefix(l, "Unpacking ") || strings.HasPrefix(l, "Setting up ") {
		if t.phase == PhaseDownload {
			t.setPhase(PhaseInstall)
		}
		if strings.HasPrefix(l, "Setting up ") {
			t.installed++
			t.dirty = true
		}
	}
}

// aptSize parses apt's sizes ("151 kB", "22.3 MB", "5616 B"; SI units).
func aptSize(s string) int64 {
	num, unit, _ := strings.Cut(strings.ReplaceAll(s, ",", ""), " ")
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0
	}
	switch unit {
	case "kB":
		f *= 1e3
	case "MB":
		f *= 1e6
	case "GB":
		f *= 1e9
	}
	return int64(f)
}

// Phase moves the build to phase (pi's own phases: layer, import).
func (t *buildTracker) Phase(phase string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setPhase(phase)
	t.maybeEmit(false)
}

// LayerBytes records how much of the rootfs tar went into the layer.
func (t *buildTracker) LayerBytes(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.phase != PhaseLayer {
		t.setPhase(PhaseLayer)
	}
	t.layerBytes = n
	t.dirty = true
	t.maybeEmit(false)
}

func (t *buildTracker) setPhase(phase string) {
	if phase == t.phase {
		return
	}
	// The phase's last state first (throttling may have held it back), so a
	// log shows what each phase ended with.
	t.maybeEmit(true)
	now := t.now()
	t.account(now)
	t.phase, t.phaseStart, t.dirty = phase, now, true
	t.maybeEmit(true)
}

func (t *buildTracker) account(now time.Time) {
	if t.phase == "" {
		return
	}
	if _, ok := t.spent[t.phase]; !ok {
		t.order = append(t.order, t.phase)
	}
	t.spent[t.phase] += now.Sub(t.phaseStart)
	t.phaseStart = now
}

func (t *buildTracker) current() Progress {
	p := t.base
	p.Phase = t.phase
	switch t.phase {
	case PhaseLists:
		p.Bytes = t.listBytes
	case PhaseDownload:
		p.Done, p.Bytes, p.TotalBytes = t.fetched, t.fetchBytes, t.needBytes
	case PhaseInstall:
		p.Done, p.Total = t.installed, max(t.toInstall, t.installed)
	case PhaseLayer:
		p.Bytes = t.layerBytes
	}
	return p
}

func (t *buildTracker) maybeEmit(force bool) {
	if t.phase == "" || !t.dirty {
		return
	}
	now := t.now()
	if !force && now.Sub(t.lastEmit) < t.interval {
		return
	}
	t.lastEmit, t.dirty = now, false
	if line := t.current().String(); line != t.lastLine {
		t.lastLine = line
		fmt.Fprintln(t.out, line)
	}
}

// Breakdown ends the build's timing and says where the time went:
// "lists 1.1s, download 0.9s, extract 2.0s, install 7.0s, layer 2.1s, import 3.0s".
func (t *buildTracker) Breakdown() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.account(t.now())
	var parts []string
	for _, ph := range t.order {
		parts = append(parts, fmt.Sprintf("%s %.1fs", ph, t.spent[ph].Seconds()))
	}
	return strings.Join(parts, ", ")
}

// countingReader reports the bytes read through it, and the end of them.
type countingReader struct {
	r      io.Reader
	n      int64
	report func(n int64, eof bool)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.report(c.n, err == io.EOF)
	return n, err
}
