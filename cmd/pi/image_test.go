package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestProgressRendererPlain: off a terminal (a pipe, CI), build progress lines are thinned to one per phase plus
// one every plainProgressEvery; other lines pass unchanged and nothing draws in place.
func TestProgressRendererPlain(t *testing.T) {
	var out bytes.Buffer
	r := newProgressRenderer(&out, false)
	now := time.Unix(1e9, 0)
	r.now = func() time.Time { return now }
	for _, step := range []struct {
		after time.Duration
		line  string
	}{
		{0, "[1/1] nginx: building with mmdebstrap --variant=essential (nginx-light, curl)"},
		{0, "progress: [1/1] nginx: download 1 packages, 0.1/22.3 MB"},
		{time.Second, "progress: [1/1] nginx: download 20 packages, 5.0/22.3 MB"},
		{time.Second, "progress: [1/1] nginx: download 40 packages, 10.0/22.3 MB"},
		{4 * time.Second, "progress: [1/1] nginx: download 60 packages, 22.3/22.3 MB"},
		{0, "progress: [1/1] nginx: extract"},
		{0, "progress: [1/1] nginx: install 1/98 packages"},
		{0, "progress: [1/1] nginx: install 2/98 packages"},
		{0, "[1/1] nginx: built in 11.1s (setup 1.2s), 80.2 MB (sha256:c8ee79148606)"},
	} {
		now = now.Add(step.after)
		r.Line(step.line)
	}
	r.Close()
	want := `[1/1] nginx: building with mmdebstrap --variant=essential (nginx-light, curl)
progress: [1/1] nginx: download 1 packages, 0.1/22.3 MB
progress: [1/1] nginx: download 60 packages, 22.3/22.3 MB
progress: [1/1] nginx: extract
progress: [1/1] nginx: install 1/98 packages
[1/1] nginx: built in 11.1s (setup 1.2s), 80.2 MB (sha256:c8ee79148606)
`
	if out.String() != want {
		t.Errorf("plain output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestProgressRendererTerminal: on a terminal a progress line is one bar line redrawn in place; a plain line
// clears it first, and Close leaves no half-drawn bar.
func TestProgressRendererTerminal(t *testing.T) {
	var out bytes.Buffer
	r := newProgressRenderer(&out, true)
	r.width = func() int { return 100 }
	r.Line("progress: [1/2] nginx: download 30 packages, 11.0/22.0 MB")
	bar := out.String()
	if !strings.HasPrefix(bar, "\r\x1b[2K[1/2] nginx  download ") || strings.Contains(bar, "\n") {
		t.Fatalf("bar = %q; want it drawn in place", bar)
	}
	if !strings.Contains(bar, strings.Repeat("█", 20)+strings.Repeat("░", 20)+" 11.0/22.0 MB, 30 packages") {
		t.Errorf("bar = %q; want a half-full 40-cell bar and the counts", bar)
	}
	r.Line("progress: [1/2] nginx: extract")
	if got := out.String()[len(bar):]; got != "\r\x1b[2K[1/2] nginx  extract" {
		t.Errorf("phase without totals drawn as %q", got)
	}
	out.Reset()
	r.Line("[1/2] nginx: built in 11.1s")
	if out.String() != "\r\x1b[2K[1/2] nginx: built in 11.1s\n" {
		t.Errorf("plain line under a bar: %q", out.String())
	}
	out.Reset()
	r.Line("progress: [2/2] busybox: install 3/6 packages")
	r.Close()
	if !strings.HasSuffix(out.String(), "\r\x1b[2K") {
		t.Errorf("Close left the bar: %q", out.String())
	}
	// A narrow terminal gets no bar but still the counts, cut to its width.
	out.Reset()
	r.width = func() int { return 30 }
	r.Line("progress: [1/2] nginx: download 30 packages, 11.0/22.0 MB")
	if s := strings.TrimPrefix(out.String(), "\r\x1b[2K"); strings.Contains(s, "█") || len([]rune(s)) > 29 {
		t.Errorf("narrow terminal: %q", s)
	}
}
