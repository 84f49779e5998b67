package scenarios

import (
	"strings"
	"testing"
)

// FuzzParse: no scenario file makes the parser panic, and an error names the file.
//
// Run with a bounded minimization: the seeds are whole workshops, and with the default 60 s the fuzzer
// spends a short run minimizing one new input (execs stay flat), e.g.
// go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 60s -fuzzminimizetime 200x ./scenarios
func FuzzParse(f *testing.F) {
	entries, err := builtinFS.ReadDir(".")
	if err != nil {
		f.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") {
			b, err := builtinFS.ReadFile(e.Name())
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			n++
		}
	}
	if n == 0 {
		f.Fatal("no built-in scenarios to seed the corpus")
	}
	f.Add([]byte("title: A typo\nsteps:\n  - title: One\n    comands:\n      - pi get pods\n"))
	f.Add([]byte("title: t\nsteps:\n  - title: s\n    commands:\n      - pi get pods | grep web\n      - sh: 'wget -qO- x | head'\n        pod: nginx\n      - sh: ls\n    checks:\n      - mach: x\n"))
	f.Add([]byte("title: t\nsteps:\n  - title: s\n    commands:\n      - run: pi get pods -o wide\n        capture:\n          IP: '(10\\.\\S+)'\n      - pi exec a -- curl -s {{.IP}}\n      - write: service.yml\n        replace: {a: b}\n    checks:\n      - match: x\n        within: 5s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := Parse(data, "fuzz.yaml", builtinFS)
		if err != nil {
			// Every problem names the file, also when a file has several (errors.Join of them).
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "fuzz.yaml") {
					t.Fatalf("error does not name the file: %v", e)
				}
			}
			return
		}
		if sc == nil || sc.Source != "fuzz.yaml" {
			t.Fatalf("parsed without a source: %+v", sc)
		}
	})
}
