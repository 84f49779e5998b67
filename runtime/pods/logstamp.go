package pods

// Times for log lines. The shim appends a container's output to its log file as raw bytes (that is what
// lets logs outlive the daemon), so the file holds no times. A stamper records them beside it: every
// stampPoll it looks at the size of each container's current log file and, when it grew, appends
// "SIZE UNIXNANO" to N.times, next to N.log. A line's time is then the first record at or past its end:
// when the stamper first saw the whole line, at most stampPoll after it was written while the daemon ran.
// Output written while no stamper ran (the daemon was down) gets the time it was first seen.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// stampPoll is how often the stamper looks for new output: the precision of log line times.
const stampPoll = 200 * time.Millisecond

// stampers are the running stampers, one per run dir: a process may hold several Runtimes of one lab.
var (
	stampersMu sync.Mutex
	stampers   = map[string]bool{}
)

// startStamper starts, once per run dir and process, the goroutine that records log times. It runs as
// long as the process: the daemon's lifetime.
func (r *Runtime) startStamper() {
	stampersMu.Lock()
	defer stampersMu.Unlock()
	if stampers[r.runDir] {
		return
	}
	stampers[r.runDir] = true
	go stampLoop(filepath.Join(r.runDir, "pods"))
}

func timesPath(logFile string) string { return strings.TrimSuffix(logFile, ".log") + ".times" }

func stampLoop(podsDir string) {
	// sizes are the last recorded sizes, by log file.
	sizes := map[string]int64{}
	for {
		stampOnce(podsDir, sizes, time.Now())
		time.Sleep(stampPoll)
	}
}

// stampOnce records the growth of every container's current log file since the last look.
func stampOnce(podsDir string, sizes map[string]int64, now time.Time) {
	dirs, _ := filepath.Glob(filepath.Join(podsDir, "*", "logs", "*"))
	seen := make(map[string]bool, len(dirs))
	for _, dir := range dirs {
		attempts, err := logAttempts(dir)
		if err != nil || len(attempts) == 0 {
			continue
		}
		// Older attempts' files no longer grow, except in the moment of a restart: look at the last two.
		for _, a := range attempts[max(0, len(attempts)-2):] {
			lf := filepath.Join(dir, strconv.Itoa(a)+".log")
			seen[lf] = true
			fi, err := os.Stat(lf)
			if err != nil {
				continue
			}
			last, ok := sizes[lf]
			if !ok {
				last = lastStamp(timesPath(lf))
			}
			if fi.Size() <= last {
				sizes[lf] = last
				continue
			}
			if appendStamp(timesPath(lf), fi.Size(), now) == nil {
				sizes[lf] = fi.Size()
			}
		}
	}
	for lf := range sizes {
		if !seen[lf] {
			delete(sizes, lf)
		}
	}
}

func appendStamp(path string, size int64, t time.Time) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d %d\n", size, t.UnixNano())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// lastStamp is the size the last record of a times file holds (0: none).
func lastStamp(path string) int64 {
	recs := readStamps(path)
	if len(recs) == 0 {
		return 0
	}
	return recs[len(recs)-1].size
}

type stamp struct {
	size int64
	t    time.Time
}

// readStamps reads a times file; a torn last record (a crash mid-write) is skipped.
func readStamps(path string) []stamp {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []stamp
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		a, b, ok := strings.Cut(sc.Text(), " ")
		size, err1 := strconv.ParseInt(a, 10, 64)
		ns, err2 := strconv.ParseInt(b, 10, 64)
		if ok && err1 == nil && err2 == nil {
			out = append(out, stamp{size, time.Unix(0, ns)})
		}
	}
	return out
}

// stampWriter writes log bytes that start at a known offset of a log file line by line, each line
// prefixed with its time (Timestamps) and dropped if older than Since.
type stampWriter struct {
	w          io.Writer
	timestamps bool
	since      time.Time
	logFile    string
	stamps     []stamp
	pos        int64 // the file offset of the next byte written
	atStart    bool  // the next byte starts a line
	skip       bool  // the current line is dropped
}

func newStampWriter(w io.Writer, logFile string, pos int64, o LogOptions) *stampWriter {
	s := &stampWriter{w: w, timestamps: o.Timestamps, since: o.Since}
	s.reset(logFile, pos)
	return s
}

// reset goes on with another file (a restart's), from offset pos.
func (s *stampWriter) reset(logFile string, pos int64) {
	s.logFile, s.pos, s.atStart, s.skip = logFile, pos, true, false
	s.stamps = readStamps(timesPath(logFile))
}

// timeAt is the time the byte before offset end was first seen.
func (s *stampWriter) timeAt(end int64) time.Time {
	find := func() (time.Time, bool) {
		i := sort.Search(len(s.stamps), func(i int) bool { return s.stamps[i].size >= end })
		if i < len(s.stamps) {
			return s.stamps[i].t, true
		}
		return time.Time{}, false
	}
	if t, ok := find(); ok {
		return t
	}
	// Newer than the last record: read the records again; past them it is being written now.
	s.stamps = readStamps(timesPath(s.logFile))
	if t, ok := find(); ok {
		return t
	}
	return time.Now()
}

func (s *stampWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line = p[:i+1]
		}
		if s.atStart {
			t := s.timeAt(s.pos + int64(len(line)))
			s.skip = !s.since.IsZero() && t.Before(s.since)
			if s.timestamps && !s.skip {
				if _, err := io.WriteString(s.w, t.UTC().Format(time.RFC3339Nano)+" "); err != nil {
					return 0, err
				}
			}
		}
		if !s.skip {
			if _, err := s.w.Write(line); err != nil {
				return 0, err
			}
		}
		s.pos += int64(len(line))
		s.atStart = line[len(line)-1] == '\n'
		p = p[len(line):]
	}
	return n, nil
}

func (s *stampWriter) Flush() { flush(s.w) }

// errLimit ends a log at its byte limit.
var errLimit = errors.New("log byte limit reached")

// limitWriter passes on at most left bytes, then fails with errLimit.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errLimit
	}
	short := int64(len(p)) > l.left
	if short {
		p = p[:l.left]
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	if err == nil && short {
		flush(l.w)
		err = errLimit
	}
	return n, err
}

func (l *limitWriter) Flush() { flush(l.w) }

func flush(w io.Writer) {
	if fl, ok := w.(interface{ Flush() }); ok {
		fl.Flush()
	}
}
