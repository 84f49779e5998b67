package billing

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func goldenBill() Bill {
	return Compute(DefaultPrices(), goldenUsage(), t0.Add(40*24*time.Hour))
}

func goldenUsage() []Usage {
	return []Usage{
		{Account: "alice", Kind: KindPod, Name: "web", UID: "p-1", Size: "S1", Start: t0, End: t0.Add(5 * time.Second)},
		{Account: "alice", Kind: KindPod, Name: "web", UID: "p-1", Size: "S1", Start: t0.Add(time.Minute)},
		{Account: "alice", Kind: KindService, Name: "web", UID: "s-1", Start: t0, End: t0.Add(10 * time.Minute)},
		{Account: "alice", Kind: KindFIP, Name: "web-ip", UID: "f-1", Start: t0},
		{Account: "bob", Kind: KindPod, Name: "db", UID: "p-2", Size: "M1", Start: t0.Add(time.Hour), End: t0.Add(3*time.Hour + 12*time.Second)},
		{Account: "bob", Kind: KindPod, Name: "cache", UID: "p-3", Size: "Z9", Start: t0},
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestPrintGolden(t *testing.T) {
	b := goldenBill()
	var out bytes.Buffer
	b.Print(&out, false)
	checkGolden(t, "bill.golden", out.Bytes())
	out.Reset()
	b.Print(&out, true)
	checkGolden(t, "bill-wide.golden", out.Bytes())
	out.Reset()
	Compute(DefaultPrices(), nil, t0).Print(&out, false)
	checkGolden(t, "bill-empty.golden", out.Bytes())
}

// `pi bill` shows one account: its lines and one TOTAL row, not its subtotal and then the same overall
// total again.
func TestPrintOneAccountOneTotal(t *testing.T) {
	var alice []Usage
	for _, u := range goldenUsage() {
		if u.Account == "alice" {
			alice = append(alice, u)
		}
	}
	b := Compute(DefaultPrices(), alice, t0.Add(40*24*time.Hour))
	var out bytes.Buffer
	b.Print(&out, false)
	if n := strings.Count(out.String(), "TOTAL"); n != 1 {
		t.Errorf("a bill of one account has %d TOTAL rows, want 1:\n%s", n, out.String())
	}
	checkGolden(t, "bill-one-account.golden", out.Bytes())
}

func TestDefaultPriceFileGolden(t *testing.T) {
	checkGolden(t, "prices.yaml.golden", RenderPrices(DefaultPrices()))
}

// The daemon computes bills and the CLI prints them, so a Bill must cross the
// API as JSON without losing a fraction of a cent.
func TestBillJSONRoundTrip(t *testing.T) {
	b := goldenBill()
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Bill
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	var x, y bytes.Buffer
	b.Print(&x, true)
	back.Print(&y, true)
	if x.String() != y.String() || back.Total.Cmp(b.Total) != 0 || back.Accounts["alice"].Cmp(b.Accounts["alice"]) != 0 {
		t.Errorf("bill changed over JSON:\n%s\n%s", x.String(), y.String())
	}
}
