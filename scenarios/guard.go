package scenarios

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/manifest"
	"k8s.io/apimachinery/pkg/types"
)

// A scenario run leaves the learner's own objects alone. It knows what it made by UID: the objects of the
// kinds a learner creates that appear while one of its commands runs (listed before and after the command).
// Before a command creates, changes or deletes a named object, the runner looks the object up: one the run
// did not make stops the step with a message saying what to do. The cleanup deletes only what the run made.

// ParsedCommand is a pi command line as pi's own flag parser reads it.
type ParsedCommand struct {
	Path  []string            // the subcommand: ["create", "deployment"], ["run"], ["delete"]
	Args  []string            // positional arguments, up to "--"
	Flags map[string][]string // values by long flag name; a boolean flag given is ["true"]
}

// Flag returns the last value of a flag, "" when not given.
func (p ParsedCommand) Flag(name string) string {
	if v := p.Flags[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// trackedKinds are the kinds a learner makes and a scenario may make: what the run's ownership covers.
// Pods and replica sets of a deployment are the deployment's (their ownerReferences say so).
var trackedKinds = []string{"Service", "Deployment", "ReplicaSet", "Pod", "FloatingIP"}

// objRef names an object of the account.
type objRef struct {
	Kind string // api kind name: "Pod"
	Name string
}

func (o objRef) String() string {
	k, _ := api.LookupKind(o.Kind)
	return fmt.Sprintf("%s %q", k.Singular, o.Name)
}

// effects says which named objects a command makes and which it changes or deletes.
type effects struct {
	creates []objRef
	changes []objRef
	verb    string // "delete", "scale", ... for messages
}

// guard holds what one run made.
type guard struct {
	cl      *client.Client
	account string
	parse   func([]string) (ParsedCommand, error)

	mu    sync.Mutex
	owned map[types.UID]objRef // every object the run made, whether or not it still exists
	order []types.UID          // in the order they appeared, for the cleanup (reversed)
	byCmd map[[2]int][]types.UID
	// outputs of commands that made objects, replayed when a step re-run finds them still there.
	outputs map[[2]int]Result
}

func newGuard(cl *client.Client, account string, parse func([]string) (ParsedCommand, error)) *guard {
	if parse == nil {
		parse = ParseCommandLine
	}
	return &guard{cl: cl, account: account, parse: parse, owned: map[types.UID]objRef{}, byCmd: map[[2]int][]types.UID{}, outputs: map[[2]int]Result{}}
}

// snapshot lists the account's objects of the tracked kinds by UID.
func (g *guard) snapshot(ctx context.Context) (map[types.UID]objRef, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out := map[types.UID]objRef{}
	for _, name := range trackedKinds {
		k, _ := api.LookupKind(name)
		objs, err := g.cl.List(ctx, k, client.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list the %s of account %q to know what the scenario makes: %w", k.Plural, g.account, err)
		}
		for _, o := range objs {
			if len(o.GetOwnerReferences()) > 0 {
				continue
			}
			out[o.GetUID()] = objRef{Kind: k.Name, Name: o.GetName()}
		}
	}
	return out, nil
}

// record makes the objects in after that were not in before the run's, and command key's.
func (g *guard) record(key [2]int, before, after map[types.UID]objRef, res Result) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var made []types.UID
	for uid, ref := range after {
		if _, ok := before[uid]; ok {
			continue
		}
		if _, ok := g.owned[uid]; !ok {
			g.owned[uid] = ref
			g.order = append(g.order, uid)
		}
		made = append(made, uid)
	}
	if len(made) > 0 {
		slices.Sort(made)
		g.byCmd[key] = made
		g.outputs[key] = res
	}
}

func (g *guard) isOwned(uid types.UID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.owned[uid]
	return ok
}

// madeBy returns what command key made the last time it ran, and its output then.
func (g *guard) madeBy(key [2]int) ([]types.UID, Result) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.byCmd[key]), g.outputs[key]
}

// lookup returns the UID of a named object, "" when it does not exist.
func (g *guard) lookup(ctx context.Context, ref objRef) (types.UID, error) {
	k, ok := api.LookupKind(ref.Kind)
	if !ok {
		return "", fmt.Errorf("unknown kind %q", ref.Kind)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o, err := g.cl.Get(ctx, k, ref.Name)
	if client.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up %s in account %q: %w", ref, g.account, err)
	}
	return o.GetUID(), nil
}

// NotOwnedError says a step would touch an object the run did not make.
type NotOwnedError struct {
	Ref     objRef
	Account string
	Verb    string // "create" for a name already taken
}

func (e *NotOwnedError) Error() string {
	if e.Verb == "create" {
		return fmt.Sprintf("%s already exists in account %q and was not made by this scenario; delete it, or run with --account NEW to play in a throwaway account", e.Ref, e.Account)
	}
	return fmt.Sprintf("this step would %s %s in account %q, which this scenario did not make; the scenario leaves it alone (run with --account NEW to play in a throwaway account)", e.Verb, e.Ref, e.Account)
}

// check refuses a command that creates a name the learner holds or changes an object the run did not make.
func (g *guard) check(ctx context.Context, eff effects) error {
	for _, ref := range eff.creates {
		uid, err := g.lookup(ctx, ref)
		if err != nil {
			return err
		}
		if uid != "" && !g.isOwned(uid) {
			return &NotOwnedError{Ref: ref, Account: g.account, Verb: "create"}
		}
	}
	for _, ref := range eff.changes {
		uid, err := g.lookup(ctx, ref)
		if err != nil {
			return err
		}
		if uid != "" && !g.isOwned(uid) {
			return &NotOwnedError{Ref: ref, Account: g.account, Verb: eff.verb}
		}
	}
	return nil
}

// effectsOf reads what a pi command line makes and changes. Commands that only read (get, wait, exec, logs,
// describe, rollout status) have no effects. dir resolves -f files.
func (g *guard) effectsOf(ctx context.Context, args []string, dir string) (effects, error) {
	p, err := g.parse(args)
	if err != nil {
		// pi refuses the same line with its own message, having done nothing.
		return effects{}, nil
	}
	if len(p.Path) == 0 {
		return effects{}, nil
	}
	eff := effects{verb: p.Path[0]}
	files := func() ([]manifest.Doc, error) {
		var paths []string
		for _, f := range p.Flags["filename"] {
			if f != "-" && !filepath.IsAbs(f) {
				f = filepath.Join(dir, f)
			}
			paths = append(paths, f)
		}
		return manifest.Read(paths, strings.NewReader(""))
	}
	switch strings.Join(p.Path, " ") {
	case "run":
		if len(p.Args) > 0 {
			eff.creates = append(eff.creates, objRef{"Pod", p.Args[0]})
		}
	case "create deployment":
		if len(p.Args) > 0 {
			eff.creates = append(eff.creates, objRef{"Deployment", p.Args[0]})
		}
	case "create", "apply":
		docs, err := files()
		if err != nil {
			return eff, err
		}
		for _, d := range docs {
			ref := objRef{d.Kind.Name, d.Object.GetName()}
			if p.Path[0] == "create" {
				eff.creates = append(eff.creates, ref)
			} else {
				// apply makes what is missing and changes what is there: both need the run's own objects.
				eff.changes = append(eff.changes, ref)
			}
		}
	case "expose":
		name := p.Flag("name")
		if name == "" {
			refs := namedRefs(p.Args)
			if len(refs) > 0 {
				name = refs[0].Name
			}
		}
		if name != "" {
			eff.creates = append(eff.creates, objRef{"Service", name})
		}
	case "delete":
		if len(p.Flags["filename"]) > 0 {
			docs, err := files()
			if err != nil {
				return eff, err
			}
			for _, d := range docs {
				eff.changes = append(eff.changes, objRef{d.Kind.Name, d.Object.GetName()})
			}
			break
		}
		if sel, all := p.Flag("selector"), p.Flag("all") == "true"; (sel != "" || all) && len(p.Args) > 0 {
			// A selector names no object: the ones it matches now are what it would delete.
			for _, t := range strings.Split(p.Args[0], ",") {
				k, ok := api.LookupKind(t)
				if !ok {
					continue
				}
				objs, err := g.cl.List(ctx, k, client.ListOptions{LabelSelector: sel})
				if err != nil {
					return eff, fmt.Errorf("list the %s `%s` would delete: %w", k.Plural, strings.Join(args, " "), err)
				}
				for _, o := range objs {
					if len(o.GetOwnerReferences()) == 0 {
						eff.changes = append(eff.changes, objRef{k.Name, o.GetName()})
					}
				}
			}
			break
		}
		eff.changes = namedRefs(p.Args)
	case "scale", "set image", "name fip", "account delete":
		eff.changes = namedRefs(p.Args)
		if p.Path[0] == "name" && len(p.Args) > 0 {
			eff.changes = []objRef{{"FloatingIP", p.Args[0]}}
		}
		if p.Path[0] == "account" && len(p.Args) > 0 {
			eff.changes = []objRef{{"Account", p.Args[0]}}
		}
		if p.Path[0] == "set" {
			eff.verb = "change the image of"
		}
	}
	return eff, nil
}

// namedRefs reads "TYPE NAME..." or "TYPE/NAME..." (and "TYPE1,TYPE2 NAME") as kubectl does.
func namedRefs(args []string) []objRef {
	var out []objRef
	if len(args) == 0 {
		return nil
	}
	if strings.Contains(args[0], "/") {
		for _, a := range args {
			t, n, ok := strings.Cut(a, "/")
			if k, known := api.LookupKind(t); ok && known {
				out = append(out, objRef{k.Name, n})
			}
		}
		return out
	}
	for _, t := range strings.Split(args[0], ",") {
		k, ok := api.LookupKind(t)
		if !ok {
			continue
		}
		for _, n := range args[1:] {
			if strings.Contains(n, "=") {
				continue // set image's CONTAINER=IMAGE
			}
			out = append(out, objRef{k.Name, n})
		}
	}
	return out
}

// valueFlags are the flags of pi that take a value, for ParseCommandLine (pi itself passes its own parser
// in Options.Parse; this one serves tests and tools without the pi command tree).
var valueFlags = map[string]string{
	"f": "filename", "filename": "filename", "l": "selector", "selector": "selector", "o": "output", "output": "output",
	"c": "container", "container": "container", "image": "image", "port": "port", "replicas": "replicas", "name": "name",
	"labels": "labels", "type": "type", "target-port": "target-port", "load-balancer-ip": "load-balancer-ip",
	"timeout": "timeout", "for": "for", "account": "account", "lab": "lab", "socket": "socket", "env": "env",
}

// ParseCommandLine reads a pi command line (without "pi") knowing pi's verbs only by their shape: the words
// before the first flag or argument that is not a known subcommand.
func ParseCommandLine(args []string) (ParsedCommand, error) {
	p := ParsedCommand{Flags: map[string][]string{}}
	sub := map[string][]string{"create": {"deployment", "fip"}, "set": {"image"}, "rollout": {"status"}, "account": {"create", "delete"}, "name": {"fip"}, "config": {"use-account", "current-account"}, "image": {"build", "ls", "import", "pull", "rm"}}
	inPath := true
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return p, nil
		case strings.HasPrefix(a, "-") && len(a) > 1:
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			long, takes := valueFlags[name]
			if !takes {
				long = name
			}
			switch {
			case hasVal:
			case takes && i+1 < len(args):
				i++
				val = args[i]
			default:
				val = "true"
			}
			p.Flags[long] = append(p.Flags[long], val)
		case inPath && (len(p.Path) == 0 || slices.Contains(sub[p.Path[0]], a) && len(p.Path) == 1):
			p.Path = append(p.Path, a)
		default:
			inPath = false
			p.Args = append(p.Args, a)
		}
	}
	return p, nil
}

// leftover lists what the run made that is still there (now: a snapshot), in the order a cleanup deletes
// them: services before what they point at, Floating IPs last, and the newest of a kind first.
func (g *guard) leftover(now map[types.UID]objRef) []types.UID {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []types.UID
	for _, kind := range trackedKinds {
		for i := len(g.order) - 1; i >= 0; i-- {
			uid := g.order[i]
			if ref, ok := now[uid]; ok && ref.Kind == kind {
				out = append(out, uid)
			}
		}
	}
	return out
}
