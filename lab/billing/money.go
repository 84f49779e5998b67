package billing

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// Money is an exact amount of US dollars.
//
// Prices such as $0.03 per hour charged per second have no finite decimal
// expansion per second, so amounts are exact rationals and are rounded only when
// shown: String rounds to the cent, half up (ties away from zero). A bill's totals
// are exact sums rounded once at the end, never sums of rounded lines.
//
// The zero value is $0. A Money is immutable: every operation returns a new value,
// so Money (and Prices holding it) may be shared between goroutines.
type Money struct {
	r *big.Rat // nil means zero; never mutated after construction
}

// decimalRE is what ParseMoney accepts besides "a/b": optional sign, digits with an
// optional fraction, optional exponent. big.Rat.SetString alone would also take
// hex and other forms no one means in a price file.
var decimalRE = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$`)
var fractionRE = regexp.MustCompile(`^[+-]?[0-9]+/[0-9]+$`)

// ParseMoney parses a dollar amount: a decimal ("0.00000222", "1", "2.5e-6"),
// optionally with a leading "$", or an exact fraction "a/b" as written by
// Money.Exact for amounts that have no finite decimal form.
func ParseMoney(s string) (Money, error) {
	t := strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(t, "-$") {
		neg, t = true, t[2:]
	} else {
		t = strings.TrimPrefix(t, "$")
	}
	if !decimalRE.MatchString(t) && !fractionRE.MatchString(t) {
		return Money{}, fmt.Errorf("%q is not a dollar amount; write a decimal such as 0.03", s)
	}
	r, ok := new(big.Rat).SetString(t)
	if !ok {
		// SetString rejects only a zero denominator here.
		return Money{}, fmt.Errorf("%q is not a dollar amount; write a decimal such as 0.03", s)
	}
	if neg {
		r.Neg(r)
	}
	return Money{r: r}, nil
}

// MustMoney is ParseMoney for constants; it panics on a malformed amount.
func MustMoney(s string) Money {
	m, err := ParseMoney(s)
	if err != nil {
		panic("billing.MustMoney: " + err.Error())
	}
	return m
}

// Dollars returns n whole dollars.
func Dollars(n int64) Money { return Money{r: new(big.Rat).SetInt64(n)} }

func (m Money) rat() *big.Rat {
	if m.r == nil {
		return new(big.Rat)
	}
	return m.r
}

// Rat returns a copy of the exact amount.
func (m Money) Rat() *big.Rat { return new(big.Rat).Set(m.rat()) }

// Add returns m + o.
func (m Money) Add(o Money) Money { return Money{r: new(big.Rat).Add(m.rat(), o.rat())} }

// Mul returns m × n.
func (m Money) Mul(n int64) Money {
	return Money{r: new(big.Rat).Mul(m.rat(), new(big.Rat).SetInt64(n))}
}

// MulFrac returns m × num / den exactly; it panics if den is 0.
func (m Money) MulFrac(num, den int64) Money {
	return Money{r: new(big.Rat).Mul(m.rat(), big.NewRat(num, den))}
}

// Cmp compares m and o: -1, 0 or +1.
func (m Money) Cmp(o Money) int { return m.rat().Cmp(o.rat()) }

// Sign returns -1, 0 or +1.
func (m Money) Sign() int { return m.rat().Sign() }

// IsZero reports whether m is exactly $0.
func (m Money) IsZero() bool { return m.Sign() == 0 }

// roundedUnits returns m × 10^decimals rounded half up (ties away from zero).
func (m Money) roundedUnits(decimals int) *big.Int {
	r := m.rat()
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)
	num := new(big.Int).Abs(r.Num())
	num.Mul(num, scale)
	// floor((2·num + den) / (2·den)) = floor(num/den + 1/2)
	num.Lsh(num, 1)
	num.Add(num, r.Denom())
	den := new(big.Int).Lsh(r.Denom(), 1)
	q := num.Quo(num, den)
	if r.Sign() < 0 {
		q.Neg(q)
	}
	return q
}

// Cents returns the amount in cents, rounded half up.
func (m Money) Cents() int64 { return m.roundedUnits(2).Int64() }

// Format renders the amount rounded half up to the given number of decimals,
// e.g. Format(6) = "$0.000133".
func (m Money) Format(decimals int) string {
	if decimals < 0 {
		decimals = 0
	}
	u := m.roundedUnits(decimals)
	sign := ""
	if u.Sign() < 0 {
		sign = "-"
		u.Neg(u)
	}
	digits := u.String()
	if decimals == 0 {
		return sign + "$" + digits
	}
	if len(digits) <= decimals {
		digits = strings.Repeat("0", decimals-len(digits)+1) + digits
	}
	cut := len(digits) - decimals
	return sign + "$" + digits[:cut] + "." + digits[cut:]
}

// String renders the amount to the cent, rounded half up: "$12.34".
func (m Money) String() string { return m.Format(2) }

// Exact renders the exact amount without "$": the shortest decimal when one
// exists ("0.0001332", "1"), else the reduced fraction ("1/3").
func (m Money) Exact() string {
	r := m.rat()
	if n, ok := finiteDecimals(r.Denom()); ok {
		s := r.FloatString(n)
		if n > 0 {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s
	}
	return r.Num().String() + "/" + r.Denom().String()
}

// finiteDecimals reports how many decimals represent 1/den exactly, if any:
// den must be 2^a·5^b, and then max(a, b) decimals suffice.
func finiteDecimals(den *big.Int) (int, bool) {
	d := new(big.Int).Set(den)
	two, five := big.NewInt(2), big.NewInt(5)
	var a, b int
	m := new(big.Int)
	for {
		q, r := new(big.Int).QuoRem(d, two, m)
		if r.Sign() != 0 {
			break
		}
		d, a = q, a+1
	}
	for {
		q, r := new(big.Int).QuoRem(d, five, m)
		if r.Sign() != 0 {
			break
		}
		d, b = q, b+1
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		return 0, false
	}
	return max(a, b), true
}

// MarshalJSON writes the exact amount as a JSON string (see Exact), so a bill
// sent over the API loses nothing and no client reads it as a float.
func (m Money) MarshalJSON() ([]byte, error) { return json.Marshal(m.Exact()) }

// UnmarshalJSON accepts a JSON string or number in any form ParseMoney takes.
func (m *Money) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	v, err := ParseMoney(s)
	if err != nil {
		return err
	}
	*m = v
	return nil
}
