package billing

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func sec(n int) time.Duration { return time.Duration(n) * time.Second }

func pod(name, size string, start time.Time, d time.Duration) Usage {
	return Usage{Account: "alice", Kind: KindPod, Name: name, UID: "uid-" + name, Size: size, Start: start, End: start.Add(d)}
}

func wantExact(t *testing.T, what string, m Money, exact string) {
	t.Helper()
	if got := m.Exact(); got != exact {
		t.Errorf("%s = %s, want exactly %s", what, got, exact)
	}
}

func TestSizeFor(t *testing.T) {
	for _, c := range []struct {
		bytes int64
		name  string
		ok    bool
	}{
		{0, "S4", true},
		{1, "S1", true},
		{64_000_000, "S1", true}, // 64M (decimal) fits in 64Mi
		{64 * mib, "S1", true},
		{64*mib + 1, "S2", true},
		{128 * mib, "S2", true},
		{256 * mib, "S3", true},
		{512 * mib, "S4", true},
		{512*mib + 1, "M1", true},
		{gib, "M1", true},
		{2 * gib, "M2", true},
		{3 * gib, "M3", true},
		{8 * gib, "L1", true},
		{16 * gib, "L2", true},
		{16*gib + 1, "L2", false},
		{-1, "", false},
	} {
		name, ok := SizeFor(c.bytes)
		if name != c.name || ok != c.ok {
			t.Errorf("SizeFor(%d) = (%q, %v), want (%q, %v)", c.bytes, name, ok, c.name, c.ok)
		}
	}
}

func TestPodRateForEachSize(t *testing.T) {
	// 1000 s, well above the minimum, at each published rate.
	want := map[string]string{
		"S1": "0.00222", "S2": "0.00354", "S3": "0.00564", "S4": "0.009",
		"M1": "0.0144", "M2": "0.0288", "M3": "0.0576", "L1": "0.1152", "L2": "0.2304",
	}
	if len(want) != len(sizes) {
		t.Fatalf("test covers %d sizes, package has %d", len(want), len(sizes))
	}
	for _, s := range Sizes() {
		b := Compute(DefaultPrices(), []Usage{pod("p", s.Name, t0, sec(1000))}, t0.Add(time.Hour))
		if len(b.Lines) != 1 {
			t.Fatalf("%s: %d lines", s.Name, len(b.Lines))
		}
		wantExact(t, s.Name+" for 1000s", b.Lines[0].Amount, want[s.Name])
		if b.Lines[0].Quantity != "16m40s" {
			t.Errorf("%s quantity %q", s.Name, b.Lines[0].Quantity)
		}
	}
	// No size recorded: the default size S4.
	b := Compute(DefaultPrices(), []Usage{pod("p", "", t0, time.Hour)}, t0.Add(time.Hour))
	wantExact(t, "unsized pod for 1h", b.Total, "0.0324")
	if b.Lines[0].Size != "S4" || b.Total.String() != "$0.03" {
		t.Errorf("unsized pod: size %q total %s", b.Lines[0].Size, b.Total)
	}
}

func TestPodMinimumPerStart(t *testing.T) {
	for _, c := range []struct {
		d        time.Duration
		exact    string
		quantity string
	}{
		{sec(5), "0.0001332", "5s (min 1m)"}, // 60 s × 0.00000222
		{0, "0.0001332", "0s (min 1m)"},
		{sec(59) + 200*time.Millisecond, "0.0001332", "1m"}, // a started second is billed
		{sec(60), "0.0001332", "1m"},
		{sec(61), "0.00013542", "1m1s"},
		{sec(60) + time.Nanosecond, "0.00013542", "1m1s"},
		{sec(3723), "0.00826506", "1h2m3s"},
	} {
		b := Compute(DefaultPrices(), []Usage{pod("p", "S1", t0, c.d)}, t0.Add(24*time.Hour))
		wantExact(t, fmt.Sprintf("S1 for %v", c.d), b.Total, c.exact)
		if q := b.Lines[0].Quantity; q != c.quantity {
			t.Errorf("S1 for %v: quantity %q, want %q", c.d, q, c.quantity)
		}
	}
}

func TestPodSeveralStarts(t *testing.T) {
	u := []Usage{
		pod("web", "S2", t0, sec(5)),                                                                // 60 s
		pod("web", "S2", t0.Add(time.Minute), sec(120)),                                             // 120 s
		pod("web", "S2", t0.Add(5*time.Minute), sec(30)),                                            // 60 s
		{Account: "alice", Kind: KindPod, Name: "web", Size: "S2", Start: t0.Add(10 * time.Minute)}, // open, 10 s at `at`: 60 s
	}
	at := t0.Add(10*time.Minute + sec(10))
	b := Compute(DefaultPrices(), u, at)
	if len(b.Lines) != 4 {
		t.Fatalf("%d lines, want one per start", len(b.Lines))
	}
	wantExact(t, "four starts", b.Total, "0.001062") // 300 s × 0.00000354
	if !b.Lines[3].End.IsZero() {
		t.Errorf("open start shows End %v", b.Lines[3].End)
	}
	for i := 1; i < len(b.Lines); i++ {
		if !b.Lines[i-1].Start.Before(b.Lines[i].Start) {
			t.Errorf("lines not in start order: %v", b.Lines)
		}
	}
}

func TestServiceMinimumHour(t *testing.T) {
	svc := func(uid string, start time.Time, d time.Duration) Usage {
		return Usage{Account: "alice", Kind: KindService, Name: "web", UID: uid, Start: start, End: start.Add(d)}
	}
	at := t0.Add(48 * time.Hour)
	for _, c := range []struct {
		d        time.Duration
		exact    string
		quantity string
	}{
		{0, "0.03", "0s (min 1h)"},
		{10 * time.Minute, "0.03", "10m (min 1h)"},
		{time.Hour, "0.03", "1h"},
		{sec(3601), "3601/120000", "1h1s"}, // per second beyond the hour
		{2 * time.Hour, "0.06", "2h"},
		{25 * time.Hour, "0.75", "1d1h"},
	} {
		b := Compute(DefaultPrices(), []Usage{svc("u1", t0, c.d)}, at)
		wantExact(t, fmt.Sprintf("service for %v", c.d), b.Total, c.exact)
		if q := b.Lines[0].Quantity; q != c.quantity {
			t.Errorf("service for %v: quantity %q, want %q", c.d, q, c.quantity)
		}
	}
	// One Service (one UID) in two records shares one minimum; the shortfall
	// goes on its earliest record.
	b := Compute(DefaultPrices(), []Usage{svc("u1", t0.Add(time.Hour), 20*time.Minute), svc("u1", t0, 10*time.Minute)}, at)
	wantExact(t, "one service, two records", b.Total, "0.03")
	wantExact(t, "earliest record", b.Lines[0].Amount, "0.02") // 10 m + 30 m top-up
	wantExact(t, "later record", b.Lines[1].Amount, "0.01")
	// Two Services (a delete and re-create gets a new UID) each pay the minimum.
	b = Compute(DefaultPrices(), []Usage{svc("u1", t0, 10*time.Minute), svc("u2", t0.Add(time.Hour), 10*time.Minute)}, at)
	wantExact(t, "two services", b.Total, "0.06")
	// Without a UID each record stands alone.
	b = Compute(DefaultPrices(), []Usage{svc("", t0, 10*time.Minute), svc("", t0.Add(time.Hour), 10*time.Minute)}, at)
	wantExact(t, "two UID-less records", b.Total, "0.06")
}

func TestFIPCharges(t *testing.T) {
	fip := func(start, end time.Time) Usage {
		return Usage{Account: "alice", Kind: KindFIP, Name: "ip1", Start: start, End: end}
	}
	month := t0.AddDate(0, 1, 0) // Feb 1: no clamping involved
	for _, c := range []struct {
		name     string
		end, at  time.Time
		cents    string
		quantity string
	}{
		{"at allocation", time.Time{}, t0, "$1.00", "1 month"},
		{"a second later", time.Time{}, t0.Add(time.Second), "$1.00", "1 month"},
		{"a second before the anniversary", time.Time{}, month.Add(-time.Second), "$1.00", "1 month"},
		{"at the anniversary", time.Time{}, month, "$2.00", "2 months"},
		{"one month and a second", time.Time{}, month.Add(time.Second), "$2.00", "2 months"},
		{"a year", time.Time{}, t0.AddDate(1, 0, 0), "$13.00", "13 months"},
		{"released before the anniversary", month.Add(-time.Hour), t0.AddDate(0, 6, 0), "$1.00", "1 month"},
		{"released at the anniversary", month, t0.AddDate(0, 6, 0), "$1.00", "1 month"},
		{"released after the anniversary", month.Add(time.Second), t0.AddDate(0, 6, 0), "$2.00", "2 months"},
		{"release after at", t0.AddDate(0, 6, 0), month, "$2.00", "2 months"},
	} {
		b := Compute(DefaultPrices(), []Usage{fip(t0, c.end)}, c.at)
		if b.Total.String() != c.cents || b.Lines[0].Quantity != c.quantity {
			t.Errorf("%s: %s %q, want %s %q", c.name, b.Total, b.Lines[0].Quantity, c.cents, c.quantity)
		}
	}
}

func TestAnniversaryMonthEnd(t *testing.T) {
	jan31 := time.Date(2024, 1, 31, 10, 30, 0, 0, time.UTC)
	for n, want := range map[int]string{
		0:  "2024-01-31T10:30:00Z",
		1:  "2024-02-29T10:30:00Z", // leap year
		2:  "2024-03-31T10:30:00Z", // back to the 31st, not stuck on the 29th
		3:  "2024-04-30T10:30:00Z",
		11: "2024-12-31T10:30:00Z",
		13: "2025-02-28T10:30:00Z",
		-1: "2023-12-31T10:30:00Z",
	} {
		if got := fmtTime(Anniversary(jan31, n)); got != want {
			t.Errorf("Anniversary(Jan 31, %d) = %s, want %s", n, got, want)
		}
	}
	if got := fmtTime(Anniversary(time.Date(2025, 1, 30, 0, 0, 0, 0, time.UTC), 1)); got != "2025-02-28T00:00:00Z" {
		t.Errorf("Jan 30 + 1 = %s", got)
	}

	// Through Compute: allocated Jan 31 2025 10:30.
	start := time.Date(2025, 1, 31, 10, 30, 0, 0, time.UTC)
	u := []Usage{{Account: "a", Kind: KindFIP, Name: "ip", Start: start}}
	for at, cents := range map[string]string{
		"2025-02-28T10:29:59Z": "$1.00",
		"2025-02-28T10:30:00Z": "$2.00",
		"2025-03-30T23:59:59Z": "$2.00",
		"2025-03-31T10:30:00Z": "$3.00",
		"2025-04-30T10:30:00Z": "$4.00",
		"2026-01-31T10:30:00Z": "$13.00",
		"2026-02-28T10:30:00Z": "$14.00",
	} {
		tm, _ := time.Parse(time.RFC3339, at)
		if got := Compute(DefaultPrices(), u, tm).Total.String(); got != cents {
			t.Errorf("FIP from Jan 31 at %s: %s, want %s", at, got, cents)
		}
	}

	// Calendar months are those of the allocation's location: allocated Mar 1
	// 00:30 at +02:00 (Feb 28 22:30 UTC), the anniversary is Apr 1 00:30 +02:00,
	// not Mar 28 as in UTC.
	plus2 := time.FixedZone("plus2", 2*3600)
	u = []Usage{{Account: "a", Kind: KindFIP, Name: "ip", Start: time.Date(2025, 3, 1, 0, 30, 0, 0, plus2)}}
	if got := Compute(DefaultPrices(), u, time.Date(2025, 3, 30, 0, 0, 0, 0, time.UTC)).Total.String(); got != "$1.00" {
		t.Errorf("FIP allocated Mar 1 +02:00, on Mar 30: %s, want $1.00", got)
	}
	if got := Compute(DefaultPrices(), u, time.Date(2025, 3, 31, 22, 30, 0, 0, time.UTC)).Total.String(); got != "$2.00" {
		t.Errorf("FIP allocated Mar 1 +02:00, on Apr 1 +02:00: %s, want $2.00", got)
	}
}

func TestProjection(t *testing.T) {
	u := []Usage{
		{Account: "alice", Kind: KindPod, Name: "web", Size: "S4", Start: t0},                             // running
		{Account: "alice", Kind: KindPod, Name: "job", Size: "S4", Start: t0, End: t0.Add(3 * time.Hour)}, // ends later
		{Account: "alice", Kind: KindService, Name: "web", UID: "s1", Start: t0},                          // held
		{Account: "alice", Kind: KindFIP, Name: "ip", Start: t0},                                          // held
		{Account: "alice", Kind: KindPod, Name: "later", Size: "L2", Start: t0.Add(5 * time.Hour)},        // not started yet
		{Account: "bob", Kind: KindService, Name: "api", UID: "s2", Start: t0.Add(time.Hour), End: t0.Add(90 * time.Hour)},
	}
	// Now is t0+2h: web 2h, job 2h (its End is after `at`), service 2h, FIP $1, bob 1h.
	b := Compute(DefaultPrices(), u, t0.Add(2*time.Hour))
	wantExact(t, "alice at +2h", b.Accounts["alice"], "1.1896") // 0.0648 + 0.0648 + 0.06 + 1
	wantExact(t, "bob at +2h", b.Accounts["bob"], "0.03")
	wantExact(t, "total at +2h", b.Total, "1.2196")
	if len(b.Lines) != 5 {
		t.Fatalf("%d lines at +2h, want 5 (the pod starting at +5h is not billed yet)", len(b.Lines))
	}
	for _, l := range b.Lines {
		if l.Name == "job" && !l.End.IsZero() {
			t.Errorf("job ends after `at` but shows End %v", l.End)
		}
	}

	// Projected to 40 days later.
	at := t0.Add(40 * 24 * time.Hour)
	b = Compute(DefaultPrices(), u, at)
	// web 960h × 0.0324 = 31.104; job 3h = 0.0972; service 960h × 0.03 = 28.8;
	// FIP $2 (Feb 1 passed); later 955h at L2 0.0002304×3438000 s = 792.1152;
	// bob 89h = 2.67.
	wantExact(t, "alice at +40d", b.Accounts["alice"], "854.1164")
	wantExact(t, "bob at +40d", b.Accounts["bob"], "2.67")
	if b.Total.String() != "$856.79" || !b.At.Equal(at) {
		t.Errorf("total at +40d %s at %v", b.Total, b.At)
	}

	// Projection to the past drops what had not started.
	if b := Compute(DefaultPrices(), u, t0.Add(-time.Second)); len(b.Lines) != 0 || !b.Total.IsZero() {
		t.Errorf("bill before anything started: %+v", b)
	}
}

func TestTotalRoundsOnceAtTheEnd(t *testing.T) {
	p := DefaultPrices()
	p.Pod.PerSecond["S1"] = MustMoney("0.00005") // a 60 s start: $0.003
	u := []Usage{pod("a", "S1", t0, 0), pod("b", "S1", t0, 0), pod("c", "S1", t0, 0)}
	b := Compute(p, u, t0)
	for _, l := range b.Lines {
		if l.Amount.String() != "$0.00" {
			t.Fatalf("line %s = %s", l.Name, l.Amount)
		}
	}
	if b.Total.String() != "$0.01" { // 0.009, not 0 + 0 + 0
		t.Errorf("total %s (%s), want $0.01", b.Total, b.Total.Exact())
	}
	p.Pod.PerSecond["S1"] = MustMoney("0.0000125") // 400 s: exactly half a cent
	if got := Compute(p, []Usage{pod("a", "S1", t0, sec(400))}, t0.Add(time.Hour)).Total.String(); got != "$0.01" {
		t.Errorf("half a cent = %s, want $0.01 (half up)", got)
	}
}

func TestComputeWarnings(t *testing.T) {
	u := []Usage{
		{Account: "a", Kind: KindPod, Name: "huge", Size: "XL", Start: t0, End: t0.Add(time.Hour)},
		{Account: "a", Kind: "volume", Name: "v", Start: t0},
		{Account: "a", Kind: KindPod, Name: "nostart"},
		{Account: "a", Kind: KindPod, Name: "backwards", Size: "S1", Start: t0, End: t0.Add(-time.Hour)},
	}
	b := Compute(DefaultPrices(), u, t0.Add(2*time.Hour))
	if len(b.Warnings) != 4 {
		t.Fatalf("warnings %q, want 4", b.Warnings)
	}
	wantExact(t, "total", b.Total, "0.0001332") // only the backwards pod's minimum
	if len(b.Lines) != 3 {
		t.Errorf("%d lines, want 3 (no line without a start time)", len(b.Lines))
	}
}

func TestComputeConcurrent(t *testing.T) {
	p := DefaultPrices()
	u := benchUsage(200)
	want := Compute(p, u, t0.Add(30*24*time.Hour))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := Compute(p, u, t0.Add(30*24*time.Hour))
			if got.Total.Cmp(want.Total) != 0 || !reflect.DeepEqual(lineNames(got), lineNames(want)) {
				t.Errorf("concurrent Compute differs: %s vs %s", got.Total.Exact(), want.Total.Exact())
			}
		}()
	}
	wg.Wait()
}

func lineNames(b Bill) []string {
	var s []string
	for _, l := range b.Lines {
		s = append(s, l.Account+"/"+l.Kind+"/"+l.Name+"/"+l.Amount.Exact())
	}
	return s
}

func benchUsage(n int) []Usage {
	u := make([]Usage, 0, n)
	for i := 0; i < n; i++ {
		start := t0.Add(time.Duration(i) * time.Minute)
		acct := fmt.Sprintf("acct%d", i%10)
		switch i % 4 {
		case 0, 1:
			u = append(u, Usage{Account: acct, Kind: KindPod, Name: fmt.Sprintf("p%d", i), Size: sizes[i%len(sizes)].Name, Start: start, End: start.Add(time.Duration(i) * time.Second)})
		case 2:
			u = append(u, Usage{Account: acct, Kind: KindService, Name: fmt.Sprintf("s%d", i), UID: fmt.Sprint(i), Start: start})
		case 3:
			u = append(u, Usage{Account: acct, Kind: KindFIP, Name: fmt.Sprintf("f%d", i), Start: start})
		}
	}
	return u
}

func BenchmarkCompute10k(b *testing.B) {
	p := DefaultPrices()
	u := benchUsage(10000)
	at := t0.Add(365 * 24 * time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		Compute(p, u, at)
	}
}
