package billing

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// samePrices compares exactly, field by field (Money holds pointers).
func samePrices(t *testing.T, got, want Prices) {
	t.Helper()
	if got.Pod.Minimum != want.Pod.Minimum || got.Service.Minimum != want.Service.Minimum {
		t.Errorf("minimums: got %v/%v, want %v/%v", got.Pod.Minimum, got.Service.Minimum, want.Pod.Minimum, want.Service.Minimum)
	}
	if len(got.Pod.PerSecond) != len(want.Pod.PerSecond) {
		t.Errorf("pod prices: got %d sizes, want %d", len(got.Pod.PerSecond), len(want.Pod.PerSecond))
	}
	for k, w := range want.Pod.PerSecond {
		if g, ok := got.Pod.PerSecond[k]; !ok || g.Cmp(w) != 0 {
			t.Errorf("pod.perSecond.%s = %s, want %s", k, g.Exact(), w.Exact())
		}
	}
	if got.Service.PerHour.Cmp(want.Service.PerHour) != 0 {
		t.Errorf("service.perHour = %s, want %s", got.Service.PerHour.Exact(), want.Service.PerHour.Exact())
	}
	if got.FIP.PerMonth.Cmp(want.FIP.PerMonth) != 0 {
		t.Errorf("fip.perMonth = %s, want %s", got.FIP.PerMonth.Exact(), want.FIP.PerMonth.Exact())
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "prices.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultPrices(t *testing.T) {
	p := DefaultPrices()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	wantExact(t, "S1", p.Pod.PerSecond["S1"], "0.00000222")
	wantExact(t, "L2", p.Pod.PerSecond["L2"], "0.0002304")
	wantExact(t, "service", p.Service.PerHour, "0.03")
	wantExact(t, "fip", p.FIP.PerMonth, "1")
	if p.Pod.Minimum.Duration != time.Minute || p.Service.Minimum.Duration != time.Hour {
		t.Errorf("minimums %v %v", p.Pod.Minimum, p.Service.Minimum)
	}
	// Each call is independent: changing one does not change the defaults.
	p.Pod.PerSecond["S1"] = Dollars(5)
	wantExact(t, "S1 after a caller's change", DefaultPrices().Pod.PerSecond["S1"], "0.00000222")
}

func TestWriteDefaultPrices(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "prices.yaml")
	if err := WriteDefaultPrices(path); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatalf("reading back the default file: %v", err)
	}
	samePrices(t, p, DefaultPrices())
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only prices.yaml (temp file left behind?)", len(entries))
	}

	// An existing file, even an invalid one, is the user's: never overwritten.
	if err := os.WriteFile(path, []byte("service:\n  perHour: 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteDefaultPrices(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "service:\n  perHour: 9\n" {
		t.Errorf("existing file overwritten: %q", b)
	}

	err = WriteDefaultPrices(filepath.Join(dir, "missing", "prices.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("write into a missing directory: %v", err)
	}
}

func TestRenderPricesRoundTrips(t *testing.T) {
	p := DefaultPrices()
	p.Pod.PerSecond["M1"] = MustMoney("0.0000001") // YAML/JSON write this as 1e-07
	p.Service.PerHour = MustMoney("1/7")           // no decimal form: written as a quoted fraction
	p.Pod.Minimum = Duration{90 * time.Second}
	back, err := parsePrices(RenderPrices(p))
	if err != nil {
		t.Fatalf("%v\n%s", err, RenderPrices(p))
	}
	samePrices(t, back, p)
}

func TestLoadPricesMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prices.yaml")
	_, err := LoadPrices(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadPrices of a missing file: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadPrices created %s", path)
	}
}

func TestPriceFileOverride(t *testing.T) {
	path := writeFile(t, `# only what differs from the defaults
pod:
  minimum: 30s
  perSecond:
    S1: 0.00001
    L2: "0.0003"
service:
  perHour: 0.06
fip:
  perMonth: $2.50
`)
	p, err := LoadPrices(path)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultPrices()
	want.Pod.Minimum = Duration{30 * time.Second}
	want.Pod.PerSecond["S1"] = MustMoney("0.00001")
	want.Pod.PerSecond["L2"] = MustMoney("0.0003")
	want.Service.PerHour = MustMoney("0.06")
	want.FIP.PerMonth = MustMoney("2.5")
	samePrices(t, p, want)

	u := []Usage{
		pod("a", "S1", t0, sec(5)),   // 30 s minimum now: 0.0003
		pod("b", "S2", t0, sec(100)), // default S2 rate: 0.000354
		{Account: "alice", Kind: KindService, Name: "s", UID: "s", Start: t0, End: t0.Add(10 * time.Minute)}, // 1h at 0.06
		{Account: "alice", Kind: KindFIP, Name: "ip", Start: t0},                                             // 2.5
	}
	wantExact(t, "bill with the override", Compute(p, u, t0.Add(time.Hour)).Total, "2.560654")

	// Numbers keep the exact decimal the user wrote, however YAML stores them.
	p, err = LoadPrices(writeFile(t, "pod:\n  perSecond:\n    S1: 0.0000001\n    S2: 123456789.123456\n"))
	if err != nil {
		t.Fatal(err)
	}
	wantExact(t, "S1 from 0.0000001", p.Pod.PerSecond["S1"], "0.0000001")
	wantExact(t, "S2 from 123456789.123456", p.Pod.PerSecond["S2"], "123456789.123456")

	// An empty file overrides nothing.
	p, err = LoadPrices(writeFile(t, "# nothing\n"))
	if err != nil {
		t.Fatal(err)
	}
	samePrices(t, p, DefaultPrices())
}

func TestMalformedPriceFile(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string // substrings of the error, after the file path
	}{
		{"bad amount", "service:\n  perHour: abc\n", []string{"service.perHour", `"abc" is not a dollar amount`}},
		{"unknown field", "service:\n  perHoure: 1\n", []string{"service.perHoure: unknown field", "perHour"}},
		{"unknown top field", "perHour: 1\n", []string{"perHour: unknown field", "pod, service, fip"}},
		{"unknown size", "pod:\n  perSecond:\n    X9: 1\n", []string{"pod.perSecond.X9", "unknown size", "S1, S2"}},
		{"negative", "fip:\n  perMonth: -1\n", []string{"fip.perMonth", "negative"}},
		{"duration as number", "pod:\n  minimum: 60\n", []string{"pod.minimum", "want a duration", "number 60"}},
		{"bad duration", "service:\n  minimum: an hour\n", []string{"service.minimum", `"an hour" is not a duration`}},
		{"fractional minimum", "pod:\n  minimum: 1.5s\n", []string{"pod.minimum", "whole"}},
		{"negative minimum", "pod:\n  minimum: -1m\n", []string{"pod.minimum", "non-negative"}},
		{"section is a list", "service: [1, 2]\n", []string{"service: want a mapping", "a list"}},
		{"top is a list", "- 1\n", []string{"top level: want a mapping"}},
		{"amount is a list", "pod:\n  perSecond:\n    S1: [1]\n", []string{"pod.perSecond.S1", "a list"}},
		{"amount is a bool", "service:\n  perHour: yes\n", []string{"service.perHour", "true"}},
		{"empty amount", "service:\n  perHour:\n", []string{"service.perHour", "nothing"}},
		{"duplicate key", "fip:\n  perMonth: 1\nfip:\n  perMonth: 2\n", []string{"not valid YAML", "fip"}},
		{"syntax", "pod:\n\tminimum: 60s\n", []string{"not valid YAML", "line 2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.yaml)
			_, err := LoadPrices(path)
			if err == nil {
				t.Fatalf("LoadPrices accepted:\n%s", c.yaml)
			}
			msg := err.Error()
			for _, w := range append([]string{"price file " + path + ": "}, c.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
		})
	}
}
