package billing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Size is a pod size: the memory a pod may use, which sets its price.
type Size struct {
	Name   string
	Memory int64 // bytes (binary units: 64 MB means 64 MiB)
}

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// sizes is ordered smallest first; SizeFor relies on that.
var sizes = []Size{
	{"S1", 64 * mib}, {"S2", 128 * mib}, {"S3", 256 * mib}, {"S4", 512 * mib},
	{"M1", 1 * gib}, {"M2", 2 * gib}, {"M3", 4 * gib},
	{"L1", 8 * gib}, {"L2", 16 * gib},
}

// DefaultSize is the size of a pod whose containers set no memory limit.
const DefaultSize = "S4"

// Sizes returns the pod sizes, smallest first.
func Sizes() []Size { return append([]Size(nil), sizes...) }

func sizeNames() string {
	names := make([]string, len(sizes))
	for i, s := range sizes {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

func knownSize(name string) bool {
	for _, s := range sizes {
		if s.Name == name {
			return true
		}
	}
	return false
}

// SizeFor returns the smallest size whose memory is at least memoryLimitBytes, the
// sum of a pod's containers' memory limits. 0 (no limit) gives DefaultSize.
// Above the largest size it returns ("L2", false): the pod does not fit, and
// rejecting it is the caller's job. A negative sum gives ("", false).
func SizeFor(memoryLimitBytes int64) (name string, ok bool) {
	switch {
	case memoryLimitBytes < 0:
		return "", false
	case memoryLimitBytes == 0:
		return DefaultSize, true
	}
	for _, s := range sizes {
		if memoryLimitBytes <= s.Memory {
			return s.Name, true
		}
	}
	return sizes[len(sizes)-1].Name, false
}

// Prices is the price list. The JSON tags are what sigs.k8s.io/yaml reads, so they
// are also the field names of the YAML price file.
type Prices struct {
	Pod     PodPrices     `json:"pod"`
	Service ServicePrices `json:"service"`
	FIP     FIPPrices     `json:"fip"`
}

// PodPrices: pods are billed per second by size, each start at least Minimum.
type PodPrices struct {
	Minimum   Duration         `json:"minimum"`
	PerSecond map[string]Money `json:"perSecond"` // by size name; every size must have a price
}

// ServicePrices: a Service is billed per second at PerHour/3600, at least Minimum over its life.
type ServicePrices struct {
	Minimum Duration `json:"minimum"`
	PerHour Money    `json:"perHour"`
}

// FIPPrices: a Floating IP costs PerMonth at allocation and again at each monthly
// anniversary of the allocation while it is held.
type FIPPrices struct {
	PerMonth Money `json:"perMonth"`
}

// Duration is a time.Duration written as Go duration text ("60s", "1h") in the
// price file and in JSON.
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as Go duration text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// UnmarshalJSON reads Go duration text.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"60s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// defaultPodPerSecond is the price list, as exact decimals.
var defaultPodPerSecond = map[string]string{
	"S1": "0.00000222", "S2": "0.00000354", "S3": "0.00000564", "S4": "0.000009",
	"M1": "0.0000144", "M2": "0.0000288", "M3": "0.0000576",
	"L1": "0.0001152", "L2": "0.0002304",
}

// DefaultPrices returns Pi's published prices.
func DefaultPrices() Prices {
	per := make(map[string]Money, len(defaultPodPerSecond))
	for k, v := range defaultPodPerSecond {
		per[k] = MustMoney(v)
	}
	return Prices{
		Pod:     PodPrices{Minimum: Duration{60 * time.Second}, PerSecond: per},
		Service: ServicePrices{Minimum: Duration{time.Hour}, PerHour: MustMoney("0.03")},
		FIP:     FIPPrices{PerMonth: Dollars(1)},
	}
}

// Validate checks that every size has a price, that no price is negative and
// that the minimums are whole, non-negative seconds. Errors name the field.
func (p Prices) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	checkMin := func(field string, d Duration) {
		if d.Duration < 0 || d.Duration%time.Second != 0 {
			bad(field, "%s is not a whole, non-negative number of seconds; write e.g. 60s", d.Duration)
		}
	}
	checkPrice := func(field string, m Money) {
		if m.Sign() < 0 {
			bad(field, "price %s is negative; prices must be 0 or more", m.Exact())
		}
	}
	checkMin("pod.minimum", p.Pod.Minimum)
	for _, s := range sizes {
		m, ok := p.Pod.PerSecond[s.Name]
		if !ok {
			bad("pod.perSecond."+s.Name, "no price for size %s; every size (%s) needs one", s.Name, sizeNames())
			continue
		}
		checkPrice("pod.perSecond."+s.Name, m)
	}
	var extra []string
	for name := range p.Pod.PerSecond {
		if !knownSize(name) {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		bad("pod.perSecond."+name, "unknown size %q; sizes are %s", name, sizeNames())
	}
	checkMin("service.minimum", p.Service.Minimum)
	checkPrice("service.perHour", p.Service.PerHour)
	checkPrice("fip.perMonth", p.FIP.PerMonth)
	return errors.Join(errs...)
}

// LoadPrices reads the YAML price file at path. Fields the file leaves out keep
// their default; unknown fields, duplicate keys, malformed amounts and negative
// prices are errors naming the file and the field. It creates nothing: a missing
// file is an error (see WriteDefaultPrices).
func LoadPrices(path string) (Prices, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Prices{}, fmt.Errorf("read price file: %w (create it with the defaults by starting the daemon, or write one by hand)", err)
	}
	p, err := parsePrices(data)
	if err != nil {
		return Prices{}, fmt.Errorf("price file %s: %w (fix it, or delete it to get the defaults back)", path, err)
	}
	return p, nil
}

// parsePrices decodes YAML by walking the document itself rather than through
// encoding/json: json's errors do not say which field was unknown or malformed,
// and sigs.k8s.io/yaml's string coercion would round numbers to float32.
// YAMLToJSONStrict (no target type) keeps each number as the shortest float64
// text, which is the decimal the user wrote for anything up to 15 digits.
func parsePrices(data []byte) (Prices, error) {
	p := DefaultPrices()
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		// yaml.v2 lists several problems on separate lines; keep one line.
		return p, fmt.Errorf("not valid YAML: %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return p, fmt.Errorf("not valid YAML: %w", err)
	}
	top, err := object("", doc, "pod", "service", "fip")
	if err != nil {
		return p, err
	}
	if pod, err := object("pod", top["pod"], "minimum", "perSecond"); err != nil {
		return p, err
	} else {
		if err := durationField("pod.minimum", pod, &p.Pod.Minimum); err != nil {
			return p, err
		}
		per, err := object("pod.perSecond", pod["perSecond"])
		if err != nil {
			return p, err
		}
		for _, name := range slices.Sorted(maps.Keys(per)) {
			field := "pod.perSecond." + name
			if !knownSize(name) {
				return p, fmt.Errorf("%s: unknown size %q; sizes are %s", field, name, sizeNames())
			}
			m, err := money(field, per[name])
			if err != nil {
				return p, err
			}
			p.Pod.PerSecond[name] = m
		}
	}
	if svc, err := object("service", top["service"], "minimum", "perHour"); err != nil {
		return p, err
	} else {
		if err := durationField("service.minimum", svc, &p.Service.Minimum); err != nil {
			return p, err
		}
		if err := moneyField("service.perHour", svc, &p.Service.PerHour); err != nil {
			return p, err
		}
	}
	if fip, err := object("fip", top["fip"], "perMonth"); err != nil {
		return p, err
	} else if err := moneyField("fip.perMonth", fip, &p.FIP.PerMonth); err != nil {
		return p, err
	}
	return p, p.Validate()
}

// object checks that v is a mapping (null counts as empty) whose keys are all in
// allowed (any key if allowed is empty).
func object(field string, v any, allowed ...string) (map[string]any, error) {
	if v == nil {
		return map[string]any{}, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		where := field
		if where == "" {
			where = "top level"
		}
		return nil, fmt.Errorf("%s: want a mapping of fields, found %s", where, describe(v))
	}
	if len(allowed) > 0 {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !slices.Contains(allowed, k) {
				return nil, fmt.Errorf("%s: unknown field; allowed here: %s", join(field, k), strings.Join(allowed, ", "))
			}
		}
	}
	return m, nil
}

func moneyField(field string, obj map[string]any, dst *Money) error {
	v, ok := obj[field[strings.LastIndexByte(field, '.')+1:]]
	if !ok {
		return nil
	}
	m, err := money(field, v)
	if err != nil {
		return err
	}
	*dst = m
	return nil
}

func money(field string, v any) (Money, error) {
	var s string
	switch t := v.(type) {
	case json.Number:
		s = t.String()
	case string:
		s = t
	default:
		return Money{}, fmt.Errorf("%s: want a dollar amount such as 0.03, found %s", field, describe(v))
	}
	m, err := ParseMoney(s)
	if err != nil {
		return Money{}, fmt.Errorf("%s: %w", field, err)
	}
	return m, nil
}

func durationField(field string, obj map[string]any, dst *Duration) error {
	v, ok := obj[field[strings.LastIndexByte(field, '.')+1:]]
	if !ok {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("%s: want a duration such as 60s or 1h, found %s", field, describe(v))
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%s: %q is not a duration; write e.g. 60s or 1h", field, s)
	}
	dst.Duration = d
	return nil
}

func describe(v any) string {
	switch t := v.(type) {
	case nil:
		return "nothing"
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case json.Number:
		return "the number " + t.String()
	case string:
		return fmt.Sprintf("the text %q", t)
	case bool:
		return fmt.Sprintf("%t", t)
	}
	return fmt.Sprintf("%v", v)
}

func join(parent, k string) string {
	if parent == "" {
		return k
	}
	return parent + "." + k
}

// RenderPrices returns p as a commented YAML price file that LoadPrices reads back
// to the same prices.
func RenderPrices(p Prices) []byte {
	var b strings.Builder
	b.WriteString(`# Pi prices, in US dollars. Edit this file to change what bills charge;
# the daemon reads it when it computes a bill. Amounts are exact decimals
# (numbers, or quoted text such as "0.00000222"); durations are Go durations
# (60s, 1h). A field left out keeps its default; an unknown field is an error.
# Delete the file and restart the daemon to get the defaults back.

pod:
  # A pod is billed per second by size: the smallest size that holds the sum of
  # its containers' memory limits (no limit: S4). Each start is billed at least
  # this long.
  minimum: `)
	b.WriteString(fmtMinimum(p.Pod.Minimum))
	b.WriteString("\n  perSecond:\n")
	for _, s := range sizes {
		m, ok := p.Pod.PerSecond[s.Name]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "    %s: %-10s # %s\n", s.Name, yamlMoney(m), fmtBytes(s.Memory))
	}
	b.WriteString(`
service:
  # A Service is billed per second at perHour/3600, and at least this long over
  # its life.
  minimum: `)
	b.WriteString(fmtMinimum(p.Service.Minimum))
	fmt.Fprintf(&b, "\n  perHour: %s\n", yamlMoney(p.Service.PerHour))
	b.WriteString(`
fip:
  # A Floating IP costs perMonth when allocated and again at each monthly
  # anniversary of the allocation while it is held (allocated on the 31st: the
  # last day of shorter months).
`)
	fmt.Fprintf(&b, "  perMonth: %s\n", yamlMoney(p.FIP.PerMonth))
	return []byte(b.String())
}

// yamlMoney writes finite decimals as plain numbers (they read back exactly) and
// anything else as a quoted fraction.
func yamlMoney(m Money) string {
	s := m.Exact()
	if strings.Contains(s, "/") {
		return `"` + s + `"`
	}
	return s
}

func fmtMinimum(d Duration) string {
	if d.Duration%time.Second == 0 && d.Duration >= 0 {
		return fmtSeconds(int64(d.Duration / time.Second))
	}
	return d.Duration.String()
}

func fmtBytes(n int64) string {
	if n%gib == 0 {
		return fmt.Sprintf("%d GiB", n/gib)
	}
	return fmt.Sprintf("%d MiB", n/mib)
}

// WriteDefaultPrices writes the default price file at path unless a file is
// already there, which it leaves alone. The file appears whole or not at all: it
// is written beside path and then hard-linked into place, which never replaces
// an existing file. The directory must exist.
func WriteDefaultPrices(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check price file: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write default price file %s: %w (does directory %s exist and is it writable?)", path, err, dir)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(RenderPrices(DefaultPrices()))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write default price file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("write default price file %s: %w", path, err)
	}
	return nil
}
