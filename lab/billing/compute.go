package billing

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Usage kinds.
const (
	KindPod     = "pod"
	KindService = "service"
	KindFIP     = "fip"
)

// Usage is one billable interval.
//
// A pod has one Usage per start (each start has its own minimum). A Service has
// one Usage for its life; records sharing a UID are one Service and share one
// minimum. A FIP has one Usage from allocation to release.
type Usage struct {
	Account string
	Kind    string // KindPod, KindService or KindFIP
	Name    string
	UID     string
	Size    string    // pods only; "" means DefaultSize
	Start   time.Time // required
	End     time.Time // zero: still running / held
}

// Line is one Usage as billed.
type Line struct {
	Account, Kind, Name, UID, Size string
	Start                          time.Time
	// End is zero when the usage was still open at the bill's time; it was then
	// counted up to Bill.At.
	End      time.Time
	Quantity string // what was billed: "3m12s", "5s (min 1m)", "2 months"
	Rate     string // the unit price: "$0.00000222/s", "$0.03/h", "$1/month"
	Amount   Money  // exact
}

// Bill is the usage of every account priced at one moment.
type Bill struct {
	At       time.Time
	Lines    []Line           // by account, kind (pod, service, fip), name, start
	Total    Money            // exact; String() rounds to the cent
	Accounts map[string]Money // exact total per account
	// Warnings lists usage that could not be priced (unknown kind or size, no
	// start time) or was inconsistent; such lines cost $0.
	Warnings []string
}

// Compute prices usage as of at.
//
// Usage starting after at is ignored; usage still open at at (zero End, or End
// after at) is counted up to at, which is how a bill is projected to a future or
// past time. Durations are rounded up to whole seconds before minimums apply.
// Amounts are exact; Total and Accounts are exact sums.
func Compute(p Prices, usage []Usage, at time.Time) Bill {
	b := Bill{At: at, Accounts: map[string]Money{}}
	type svcGroup struct {
		lines []int // indexes into b.Lines (before sorting) of one Service's records
	}
	svc := map[string]*svcGroup{}
	var svcOrder []string
	var secsOf []int64 // billed seconds per line, for services' top-up
	podRate := map[string]string{}
	for size, m := range p.Pod.PerSecond {
		podRate[size] = "$" + m.Exact() + "/s"
	}
	svcRate := "$" + p.Service.PerHour.Exact() + "/h"
	fipRate := "$" + p.FIP.PerMonth.Exact() + "/month"

	for _, u := range usage {
		if u.Start.IsZero() {
			b.Warnings = append(b.Warnings, fmt.Sprintf("%s %s/%s has no start time; not billed", u.Kind, u.Account, u.Name))
			continue
		}
		if u.Start.After(at) {
			continue
		}
		end, open := u.End, u.End.IsZero() || u.End.After(at)
		if open {
			end = at
		}
		if end.Before(u.Start) {
			b.Warnings = append(b.Warnings, fmt.Sprintf("%s %s/%s ends (%s) before it starts (%s); billed as 0s",
				u.Kind, u.Account, u.Name, fmtTime(u.End), fmtTime(u.Start)))
			end = u.Start
		}
		l := Line{Account: u.Account, Kind: u.Kind, Name: u.Name, UID: u.UID, Start: u.Start}
		if !open {
			l.End = u.End
		}
		secs := ceilSeconds(end.Sub(u.Start))
		switch u.Kind {
		case KindPod:
			l.Size = u.Size
			if l.Size == "" {
				l.Size = DefaultSize
			}
			rate, ok := p.Pod.PerSecond[l.Size]
			if !ok {
				b.Warnings = append(b.Warnings, fmt.Sprintf("pod %s/%s has unknown size %q (sizes: %s); not billed", u.Account, u.Name, l.Size, sizeNames()))
				l.Quantity = fmtSeconds(secs)
				break
			}
			billed := secs
			l.Quantity = fmtSeconds(secs)
			if minSecs := int64(p.Pod.Minimum.Duration / time.Second); secs < minSecs {
				billed = minSecs
				l.Quantity += " (min " + fmtSeconds(minSecs) + ")"
			}
			l.Rate = podRate[l.Size]
			l.Amount = rate.Mul(billed)
		case KindService:
			l.Quantity = fmtSeconds(secs)
			l.Rate = svcRate
			l.Amount = p.Service.PerHour.MulFrac(secs, 3600)
			key := u.Account + "\x00" + u.UID
			if u.UID == "" { // no identity: the record is the Service
				key = fmt.Sprintf("\x01%d", len(b.Lines))
			}
			g := svc[key]
			if g == nil {
				g = &svcGroup{}
				svc[key] = g
				svcOrder = append(svcOrder, key)
			}
			g.lines = append(g.lines, len(b.Lines))
		case KindFIP:
			n := fipCharges(u.Start, u.End, at)
			l.Quantity = fmt.Sprintf("%d month", n)
			if n != 1 {
				l.Quantity += "s"
			}
			l.Rate = fipRate
			l.Amount = p.FIP.PerMonth.Mul(n)
		default:
			b.Warnings = append(b.Warnings, fmt.Sprintf("%s/%s has unknown kind %q (kinds: pod, service, fip); not billed", u.Account, u.Name, u.Kind))
			l.Quantity = fmtSeconds(secs)
		}
		b.Lines = append(b.Lines, l)
		secsOf = append(secsOf, secs)
	}

	// A Service's minimum covers its whole life, so a shortfall is added once,
	// to its earliest record.
	minSvc := int64(p.Service.Minimum.Duration / time.Second)
	for _, key := range svcOrder {
		g := svc[key]
		var total int64
		first := g.lines[0]
		for _, i := range g.lines {
			total += secsOf[i]
			if b.Lines[i].Start.Before(b.Lines[first].Start) {
				first = i
			}
		}
		if total < minSvc {
			l := &b.Lines[first]
			billed := secsOf[first] + minSvc - total
			l.Amount = p.Service.PerHour.MulFrac(billed, 3600)
			l.Quantity += " (min " + fmtSeconds(minSvc) + ")"
		}
	}

	slices.SortStableFunc(b.Lines, func(x, y Line) int {
		return cmp.Or(
			cmp.Compare(x.Account, y.Account),
			cmp.Compare(kindOrder(x.Kind), kindOrder(y.Kind)),
			cmp.Compare(x.Kind, y.Kind),
			cmp.Compare(x.Name, y.Name),
			x.Start.Compare(y.Start),
			cmp.Compare(x.UID, y.UID),
		)
	})
	for _, l := range b.Lines {
		b.Total = b.Total.Add(l.Amount)
		b.Accounts[l.Account] = b.Accounts[l.Account].Add(l.Amount)
	}
	return b
}

func kindOrder(k string) int {
	switch k {
	case KindPod:
		return 0
	case KindService:
		return 1
	case KindFIP:
		return 2
	}
	return 3
}

// ceilSeconds rounds up: a started second is a billed second.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// Anniversary returns the n-th monthly anniversary of t: the same day of month
// and clock time n calendar months later, in t's location, clamped to the last
// day of a shorter month. It is always computed from t itself, not from the
// previous anniversary, so Jan 31 gives Feb 28 (29 in leap years), Mar 31,
// Apr 30, ... (time.AddDate would roll Jan 31 + 1 month over to Mar 3.)
func Anniversary(t time.Time, n int) time.Time {
	y, m, d := t.Date()
	hh, mm, ss := t.Clock()
	// Day 0 of the month after the target is the target's last day.
	last := time.Date(y, m+time.Month(n)+1, 0, 0, 0, 0, 0, t.Location()).Day()
	return time.Date(y, m+time.Month(n), min(d, last), hh, mm, ss, t.Nanosecond(), t.Location())
}

// fipCharges counts the allocation charge plus every anniversary A with A <= at
// that the FIP was still held at (End zero or A < End). A FIP released exactly at
// an anniversary is not charged again.
func fipCharges(start, end, at time.Time) int64 {
	limit := at
	if !end.IsZero() && !end.After(at) {
		limit = end
	}
	charged := func(a time.Time) bool {
		if a.After(at) {
			return false
		}
		return end.IsZero() || a.Before(end)
	}
	// Anniversary n falls in calendar month start+n, so every n whose month is
	// before limit's month is charged; only the last two need checking.
	sy, sm, _ := start.Date()
	ly, lm, _ := limit.In(start.Location()).Date()
	months := int64(ly-sy)*12 + int64(lm-sm)
	n := int64(1)
	if months > 1 {
		n = months - 1
	}
	charges := n // allocation + anniversaries 1..n-1
	for ; ; n++ {
		if !charged(Anniversary(start, int(n))) {
			return charges
		}
		charges++
	}
}

// fmtSeconds writes a duration exactly with days as the largest unit, leaving out
// zero units: 0s, 5s, 1m, 3m12s, 1h, 2d3h, 1d5s.
func fmtSeconds(s int64) string {
	if s == 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		unit string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if s >= u.n {
			fmt.Fprintf(&b, "%d%s", s/u.n, u.unit)
			s %= u.n
		}
	}
	return b.String()
}

func fmtTime(t time.Time) string { return t.Format(time.RFC3339) }
