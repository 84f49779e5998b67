package billing

import (
	"encoding/json"
	"testing"
)

func TestParseMoney(t *testing.T) {
	for in, exact := range map[string]string{
		"0.00000222": "0.00000222",
		"$0.03":      "0.03",
		" 1 ":        "1",
		"1.50":       "1.5",
		"1e-7":       "0.0000001",
		"2.5E+2":     "250",
		".5":         "0.5",
		"-$2":        "-2",
		"-0.25":      "-0.25",
		"1/3":        "1/3",
		"2/4":        "0.5",
		"2/6":        "1/3",
	} {
		m, err := ParseMoney(in)
		if err != nil {
			t.Errorf("ParseMoney(%q): %v", in, err)
			continue
		}
		if got := m.Exact(); got != exact {
			t.Errorf("ParseMoney(%q).Exact() = %q, want %q", in, got, exact)
		}
	}
	for _, in := range []string{"", "abc", "0x10", "1,5", "$", "1/0", "1.2.3", "Inf", "NaN", "1/3.0", "--1"} {
		if m, err := ParseMoney(in); err == nil {
			t.Errorf("ParseMoney(%q) = %s, want an error", in, m.Exact())
		}
	}
}

func TestMoneyRoundsHalfUp(t *testing.T) {
	for _, c := range []struct {
		in, cents string
		n         int64
	}{
		{"0", "$0.00", 0},
		{"0.005", "$0.01", 1},
		{"0.004999999", "$0.00", 0},
		{"0.015", "$0.02", 2},
		{"0.025", "$0.03", 3}, // half up, not half even
		{"1/3", "$0.33", 33},
		{"2/3", "$0.67", 67},
		{"1234.5", "$1234.50", 123450},
		{"-0.005", "-$0.01", -1}, // ties away from zero
		{"-0.004", "$0.00", 0},
	} {
		m := MustMoney(c.in)
		if got := m.String(); got != c.cents {
			t.Errorf("%s.String() = %q, want %q", c.in, got, c.cents)
		}
		if got := m.Cents(); got != c.n {
			t.Errorf("%s.Cents() = %d, want %d", c.in, got, c.n)
		}
	}
	if got := MustMoney("0.0001332").Format(6); got != "$0.000133" {
		t.Errorf("Format(6) = %q", got)
	}
	if got := MustMoney("0.0000005").Format(6); got != "$0.000001" {
		t.Errorf("Format(6) of a tie = %q", got)
	}
	if got := MustMoney("2.5").Format(0); got != "$3" {
		t.Errorf("Format(0) = %q", got)
	}
	if got := (Money{}).String(); got != "$0.00" {
		t.Errorf("zero Money = %q", got)
	}
}

func TestMoneyArithmeticIsExact(t *testing.T) {
	// $0.03/h by the second: 3601 s has no finite decimal form.
	m := MustMoney("0.03").MulFrac(3601, 3600)
	if got := m.Exact(); got != "3601/120000" {
		t.Fatalf("0.03×3601/3600 = %s", got)
	}
	// 3600 such thirds of a cent add back up to exactly $108.03.
	var sum Money
	for i := 0; i < 3600; i++ {
		sum = sum.Add(m)
	}
	if got := sum.Exact(); got != "108.03" {
		t.Fatalf("sum = %s, want 108.03", got)
	}
	a := MustMoney("0.1")
	_ = a.Add(MustMoney("0.2"))
	if a.Exact() != "0.1" {
		t.Fatalf("Add mutated its receiver: %s", a.Exact())
	}
}

func TestMoneyJSON(t *testing.T) {
	for _, s := range []string{"0", "0.0001332", "3601/120000", "-2"} {
		b, err := json.Marshal(MustMoney(s))
		if err != nil {
			t.Fatal(err)
		}
		var back Money
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if back.Cmp(MustMoney(s)) != 0 {
			t.Errorf("%s -> %s -> %s", s, b, back.Exact())
		}
	}
	var m Money
	if err := json.Unmarshal([]byte(`0.25`), &m); err != nil || m.Exact() != "0.25" {
		t.Errorf("JSON number: %v %s", err, m.Exact())
	}
	if err := json.Unmarshal([]byte(`"ten"`), &m); err == nil {
		t.Errorf("JSON \"ten\" accepted")
	}
}
