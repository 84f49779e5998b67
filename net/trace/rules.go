package trace

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Rule is the rule a trace message names, as read back from the namespace.
type Rule struct {
	Handle  uint64
	Comment string // the comment pilab (or anyone) wrote on the rule; "" if none
	// Text is a short nft-like rendering of the rule's expressions. It covers
	// what pilab's rules use (payload/meta/ct matches, set and map lookups,
	// numgen, dnat/snat/masquerade, counters, verdicts); other expressions
	// appear by their kind, e.g. "<exthdr>".
	Text string
}

// ruleCache maps (family, table, chain, handle) to rules of one namespace.
// A chain is read from the kernel the first time one of its rules is traced
// and again when a handle is missing (the chain changed since).
type ruleCache struct {
	mu     sync.Mutex
	conn   *nftables.Conn
	chains map[chainKey]map[uint64]*Rule
}

type chainKey struct {
	family       uint8
	table, chain string
}

func (rc *ruleCache) lookup(family uint8, table, chain string, handle uint64) (*Rule, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	k := chainKey{family, table, chain}
	if r, ok := rc.chains[k][handle]; ok {
		return r, nil
	}
	rules, err := rc.conn.GetRules(
		&nftables.Table{Name: table, Family: nftables.TableFamily(family)},
		&nftables.Chain{Name: chain})
	if err != nil {
		return nil, fmt.Errorf("read rules of chain %s of table %s (family %d): %w", chain, table, family, err)
	}
	m := make(map[uint64]*Rule, len(rules))
	for _, r := range rules {
		m[r.Handle] = &Rule{Handle: r.Handle, Comment: ruleComment(r), Text: RenderRule(r)}
	}
	if rc.chains == nil {
		rc.chains = map[chainKey]map[uint64]*Rule{}
	}
	rc.chains[k] = m
	if r, ok := m[handle]; ok {
		return r, nil
	}
	return nil, fmt.Errorf("rule handle %d not in chain %s of table %s (deleted since the packet passed it?)", handle, chain, table)
}

// ruleComment is the NFTNL_UDATA_RULE_COMMENT TLV of the rule's userdata.
func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// operand describes what an expression loaded into a register, so that a later
// cmp or lookup on that register can be printed as "ip daddr 10.0.0.1".
type operand struct {
	name string
	kind valueKind
	// prefix is the length of the network mask an address was masked with (nft's "ip saddr 10.0.0.0/8"),
	// 0 if none.
	prefix int
	// flags is the mask ct state was masked with: "(ct state & mask) != 0" is nft's "ct state established,related".
	flags []byte
}

type valueKind int

const (
	kindHex valueKind = iota
	kindAddr
	kindPort
	kindProto
	kindIfname
	kindCtState
	kindU32
)

// RenderRule prints a rule's expressions in a short nft-like form.
func RenderRule(r *nftables.Rule) string {
	regs := map[uint32]operand{}
	imm := map[uint32][]byte{}
	var lastImm uint32 // the register the last immediate loaded (0: none)
	var out []string
	// loaded lists the registers filled since the last consumer, in order: a
	// lookup on a concatenation reads several consecutive registers.
	var loaded []uint32
	// load records what a register now holds; an expression that rewrites a register in place (a
	// bitwise mask) replaces its earlier entry rather than adding a second operand.
	load := func(reg uint32, o operand) {
		regs[reg] = o
		delete(imm, reg)
		loaded = slices.DeleteFunc(loaded, func(r uint32) bool { return r == reg })
		loaded = append(loaded, reg)
	}
	concat := func(sreg uint32) (string, []operand) {
		var names []string
		var ops []operand
		for _, reg := range loaded {
			if reg >= sreg {
				names = append(names, regs[reg].name)
				ops = append(ops, regs[reg])
			}
		}
		loaded = nil
		if len(names) == 0 {
			return fmt.Sprintf("reg %d", sreg), nil
		}
		return strings.Join(names, " . "), ops
	}
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				out = append(out, "payload write")
				continue
			}
			load(e.DestRegister, payloadOperand(e))
		case *expr.Meta:
			o := metaOperand(e.Key)
			if e.SourceRegister {
				out = append(out, fmt.Sprintf("%s set %s", o.name, natArg(e.Register, regs, imm, o.kind)))
				continue
			}
			load(e.Register, o)
		case *expr.Ct:
			o := ctOperand(e)
			if !e.SourceRegister && e.Register == 0 && lastImm != 0 {
				// A `ct ... set`: google/nftables reads its source register (NFTA_CT_SREG) back as no
				// register at all, and no ct load writes to the verdict register, so the value is the one
				// an immediate just loaded (as nft writes `ct zone set 1`).
				out = append(out, fmt.Sprintf("%s set %s", o.name, natArg(lastImm, regs, imm, o.kind)))
				continue
			}
			if e.SourceRegister {
				out = append(out, fmt.Sprintf("%s set %s", o.name, natArg(e.Register, regs, imm, o.kind)))
				continue
			}
			load(e.Register, o)
		case *expr.Bitwise:
			o := regs[e.SourceRegister]
			if n, ok := prefixLen(e.Mask); ok && o.kind == kindAddr && !slices.ContainsFunc(e.Xor, func(b byte) bool { return b != 0 }) {
				// An address under a network mask: nft prints the compared value as a prefix.
				o.prefix = n
				load(e.DestRegister, o)
				continue
			}
			if o.kind == kindCtState && !slices.ContainsFunc(e.Xor, func(b byte) bool { return b != 0 }) {
				// A test of ct state's bits: nft names them.
				o.flags = e.Mask
				load(e.DestRegister, o)
				continue
			}
			o.name = fmt.Sprintf("%s & 0x%s", o.name, hex.EncodeToString(e.Mask))
			if slices.ContainsFunc(e.Xor, func(b byte) bool { return b != 0 }) {
				o.name += " ^ 0x" + hex.EncodeToString(e.Xor)
			}
			if o.kind != kindAddr { // a masked address still reads best as an address (a prefix)
				o.kind = kindHex
			}
			load(e.DestRegister, o)
		case *expr.Cmp:
			o := regs[e.Register]
			name, _ := concat(e.Register)
			op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ",
				expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}[e.Op]
			if o.flags != nil {
				// (ct state & flags) != 0 is "any of these"; == 0 is "none of them".
				zero := !slices.ContainsFunc(e.Data, func(b byte) bool { return b != 0 })
				switch {
				case zero && e.Op == expr.CmpOpNeq:
					out = append(out, fmt.Sprintf("%s %s", name, formatValue(o.flags, kindCtState)))
					continue
				case zero && e.Op == expr.CmpOpEq:
					out = append(out, fmt.Sprintf("%s & (%s) == 0", name, formatValue(o.flags, kindCtState)))
					continue
				}
				name = fmt.Sprintf("%s & (%s)", name, formatValue(o.flags, kindCtState))
			}
			if op == "" && strings.Contains(name, " & ") {
				op = "== " // nft writes the equality of a masked value out: meta mark & 0x00400000 == 0x00000000
			}
			v := formatValue(e.Data, o.kind)
			if o.prefix > 0 {
				v += fmt.Sprintf("/%d", o.prefix)
			}
			out = append(out, fmt.Sprintf("%s %s%s", name, op, v))
		case *expr.Range:
			o := regs[e.Register]
			name, _ := concat(e.Register)
			out = append(out, fmt.Sprintf("%s %s-%s", name, formatValue(e.FromData, o.kind), formatValue(e.ToData, o.kind)))
		case *expr.Lookup:
			name, _ := concat(e.SourceRegister)
			neg := ""
			if e.Invert {
				neg = "!= "
			}
			if e.IsDestRegSet {
				if e.DestRegister == 0 {
					out = append(out, fmt.Sprintf("%s vmap @%s", name, e.SetName))
				} else {
					out = append(out, fmt.Sprintf("%s map @%s", name, e.SetName))
					load(e.DestRegister, operand{name: fmt.Sprintf("%s map @%s", name, e.SetName)})
					loaded = nil
				}
				continue
			}
			out = append(out, fmt.Sprintf("%s %s@%s", name, neg, e.SetName))
		case *expr.Numgen:
			kind := "inc"
			if e.Type == unix.NFT_NG_RANDOM {
				kind = "random"
			}
			s := fmt.Sprintf("numgen %s mod %d", kind, e.Modulus)
			if e.Offset != 0 {
				s += fmt.Sprintf(" offset %d", e.Offset)
			}
			load(e.Register, operand{name: s, kind: kindU32})
		case *expr.Immediate:
			imm[e.Register] = e.Data
			lastImm = e.Register
			delete(regs, e.Register)
			loaded = slices.DeleteFunc(loaded, func(r uint32) bool { return r == e.Register })
		case *expr.NAT:
			verb := "snat"
			if e.Type == expr.NATTypeDestNAT {
				verb = "dnat"
			}
			to := ""
			if e.RegAddrMin != 0 {
				to = natArg(e.RegAddrMin, regs, imm, kindAddr)
			}
			if e.RegProtoMin != 0 {
				to += ":" + natArg(e.RegProtoMin, regs, imm, kindPort)
			}
			out = append(out, strings.TrimSpace(verb+" to "+to))
		case *expr.Masq:
			out = append(out, "masquerade")
		case *expr.Redir:
			out = append(out, "redirect")
		case *expr.Counter:
			out = append(out, "counter")
		case *expr.Log:
			out = append(out, "log")
		case *expr.Reject:
			out = append(out, "reject")
		case *expr.Notrack:
			out = append(out, "notrack")
		case *expr.Verdict:
			v := Verdict{Code: int32(e.Kind), Chain: e.Chain}
			out = append(out, v.String())
		default:
			out = append(out, fmt.Sprintf("<%T>", e))
		}
	}
	s := strings.Join(out, " ")
	return strings.ReplaceAll(s, "*expr.", "")
}

// prefixLen says whether mask is a network mask (ones, then zeros) and its length.
func prefixLen(mask []byte) (int, bool) {
	n, zeros := 0, false
	for _, b := range mask {
		for bit := 7; bit >= 0; bit-- {
			one := b&(1<<bit) != 0
			if one && zeros {
				return 0, false
			}
			if one {
				n++
			} else {
				zeros = true
			}
		}
	}
	return n, n > 0 && n < 8*len(mask)
}

// natArg prints a NAT operand: an immediate value, or what a map lookup put there.
func natArg(reg uint32, regs map[uint32]operand, imm map[uint32][]byte, kind valueKind) string {
	if v, ok := imm[reg]; ok {
		return formatValue(v, kind)
	}
	if o, ok := regs[reg]; ok {
		return o.name
	}
	return fmt.Sprintf("reg %d", reg)
}

func payloadOperand(e *expr.Payload) operand {
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		switch {
		case e.Offset == 12 && e.Len == 4:
			return operand{name: "ip saddr", kind: kindAddr}
		case e.Offset == 16 && e.Len == 4:
			return operand{name: "ip daddr", kind: kindAddr}
		case e.Offset == 9 && e.Len == 1:
			return operand{name: "ip protocol", kind: kindProto}
		}
		return operand{name: fmt.Sprintf("@nh,%d,%d", e.Offset*8, e.Len*8), kind: kindHex}
	case expr.PayloadBaseTransportHeader:
		switch {
		case e.Offset == 0 && e.Len == 2:
			return operand{name: "th sport", kind: kindPort}
		case e.Offset == 2 && e.Len == 2:
			return operand{name: "th dport", kind: kindPort}
		}
		return operand{name: fmt.Sprintf("@th,%d,%d", e.Offset*8, e.Len*8), kind: kindHex}
	}
	return operand{name: fmt.Sprintf("@ll,%d,%d", e.Offset*8, e.Len*8), kind: kindHex}
}

func metaOperand(k expr.MetaKey) operand {
	switch k {
	case expr.MetaKeyL4PROTO:
		return operand{name: "meta l4proto", kind: kindProto}
	case expr.MetaKeyIIFNAME:
		return operand{name: "iifname", kind: kindIfname}
	case expr.MetaKeyOIFNAME:
		return operand{name: "oifname", kind: kindIfname}
	case expr.MetaKeyMARK:
		return operand{name: "meta mark", kind: kindU32}
	case expr.MetaKeyNFTRACE:
		return operand{name: "meta nftrace", kind: kindU32}
	case expr.MetaKeyIIF:
		return operand{name: "iif", kind: kindU32}
	case expr.MetaKeyOIF:
		return operand{name: "oif", kind: kindU32}
	case expr.MetaKeyNFPROTO:
		return operand{name: "meta nfproto", kind: kindU32}
	}
	return operand{name: fmt.Sprintf("meta key %d", k), kind: kindHex}
}

func ctOperand(e *expr.Ct) operand {
	dir := ""
	if e.Direction == 1 {
		dir = " reply"
	}
	switch e.Key {
	case expr.CtKeySTATE:
		return operand{name: "ct state", kind: kindCtState}
	case expr.CtKeyMARK:
		return operand{name: "ct mark", kind: kindU32}
	case expr.CtKeySTATUS:
		return operand{name: "ct status", kind: kindHex}
	case expr.CtKeySRC:
		return operand{name: "ct" + dir + " saddr", kind: kindAddr}
	case expr.CtKeyDST:
		return operand{name: "ct" + dir + " daddr", kind: kindAddr}
	case expr.CtKeyPROTOSRC:
		return operand{name: "ct" + dir + " proto-src", kind: kindPort}
	case expr.CtKeyPROTODST:
		return operand{name: "ct" + dir + " proto-dst", kind: kindPort}
	case expr.CtKeyPROTOCOL:
		return operand{name: "ct" + dir + " protocol", kind: kindProto}
	case expr.CtKeyZONE:
		return operand{name: "ct zone", kind: kindU32}
	}
	return operand{name: fmt.Sprintf("ct key %d", e.Key), kind: kindHex}
}

// formatValue prints cmp/immediate data the way the operand's type reads.
func formatValue(b []byte, k valueKind) string {
	switch {
	case k == kindAddr && len(b) == 4:
		return netip.AddrFrom4([4]byte(b)).String()
	case k == kindPort && len(b) == 2:
		return fmt.Sprint(binary.BigEndian.Uint16(b))
	case k == kindProto && len(b) == 1:
		return ProtoName(b[0])
	case k == kindIfname:
		return fmt.Sprintf("%q", strings.TrimRight(string(b), "\x00"))
	case k == kindCtState && len(b) == 4:
		return ctStateNames(binary.NativeEndian.Uint32(b))
	case k == kindU32 && len(b) == 4:
		return fmt.Sprint(binary.NativeEndian.Uint32(b))
	case k == kindU32 && len(b) == 2:
		return fmt.Sprint(binary.NativeEndian.Uint16(b))
	case k == kindU32 && len(b) == 1:
		return fmt.Sprint(b[0])
	}
	return "0x" + hex.EncodeToString(b)
}

func ctStateNames(v uint32) string {
	names := map[uint32]string{expr.CtStateBitINVALID: "invalid", expr.CtStateBitESTABLISHED: "established",
		expr.CtStateBitRELATED: "related", expr.CtStateBitNEW: "new", expr.CtStateBitUNTRACKED: "untracked"}
	var out []string
	for bit, n := range names {
		if v&bit != 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return fmt.Sprintf("0x%x", v)
	}
	return strings.Join(out, ",")
}
