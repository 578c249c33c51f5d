package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var table = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

var hooks = map[string]*nftables.ChainHook{
	"prerouting": nftables.ChainHookPrerouting,
	"output":     nftables.ChainHookOutput,
}

// Apply installs the rules of cfg in the current network namespace,
// replacing whatever an earlier Apply installed. It needs CAP_NET_ADMIN.
func Apply(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	conn, err := nftables.New()
	if err != nil {
		return explain("installing", err)
	}
	// One batch, one transaction: add the table (a no-op if it exists),
	// delete it with everything in it, and add it afresh. Applying twice
	// leaves one copy of the rules, and no connection is ever made while
	// only half of them are in place.
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)
	accept := nftables.ChainPolicyAccept
	for _, ch := range cfg.chains() {
		c := conn.AddChain(&nftables.Chain{
			Name:     ch.name,
			Table:    table,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  hooks[ch.hook],
			Priority: nftables.ChainPriorityNATDest,
			Policy:   &accept,
		})
		for _, r := range ch.rules {
			conn.AddRule(&nftables.Rule{Table: table, Chain: c, Exprs: r.exprs()})
		}
	}
	if err := conn.Flush(); err != nil {
		return explain("installing", err)
	}
	return nil
}

// Remove deletes our table, and so every rule Apply installed. Removing
// when nothing is installed is not an error.
func Remove() error {
	conn, err := nftables.New()
	if err != nil {
		return explain("removing", err)
	}
	// Adding first makes the delete valid whether or not the table exists.
	conn.AddTable(table)
	conn.DelTable(table)
	if err := conn.Flush(); err != nil {
		return explain("removing", err)
	}
	return nil
}

// explain adds what an operator needs to know to the kernel's terse errno.
func explain(doing string, err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s nftables table inet %s: %w (this needs the NET_ADMIN capability in the pod's network namespace)", doing, TableName, err)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAFNOSUPPORT), errors.Is(err, unix.EPROTONOSUPPORT):
		return fmt.Errorf("%s nftables table inet %s: %w (the kernel needs nf_tables with NAT for the inet family: Linux 5.2 or later, modules nf_tables and nft_chain_nat)", doing, TableName, err)
	}
	return fmt.Errorf("%s nftables table inet %s: %w", doing, TableName, err)
}

// Registers: everything here fits in register 1.
const reg = 1

// exprs turns a rule into the kernel's expressions, the same ones nft
// generates for the rule's text.
func (r rule) exprs() []expr.Any {
	var e []expr.Any
	switch m := r.match.(type) {
	case tcpMatch:
		e = isTCP()
	case dportMatch:
		e = append(isTCP(), &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		if m.First == m.Last {
			e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binaryutil.BigEndian.PutUint16(m.First)})
		} else {
			e = append(e, &expr.Range{Op: expr.CmpOpEq, Register: reg,
				FromData: binaryutil.BigEndian.PutUint16(m.First), ToData: binaryutil.BigEndian.PutUint16(m.Last)})
		}
	case skuidMatch:
		e = []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(uint32(m))},
		}
	case oifnameMatch:
		name := make([]byte, unix.IFNAMSIZ) // compared as a NUL-padded IFNAMSIZ buffer
		copy(name, m)
		e = []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: name},
		}
	case daddrMatch:
		e = daddr(netip.Prefix(m))
	default:
		panic(fmt.Sprintf("redirect: no expressions for match %T", m))
	}
	if r.redirect == 0 {
		return append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	}
	// REDIRECT: to the primary address of the incoming interface in
	// prerouting, to 127.0.0.1 or ::1 in output; the port from the register.
	return append(e,
		&expr.Immediate{Register: reg, Data: binaryutil.BigEndian.PutUint16(r.redirect)},
		&expr.Redir{RegisterProtoMin: reg},
	)
}

func isTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// daddr matches the destination address in a prefix. An inet table sees both
// families, so the family is checked first, as nft does.
func daddr(p netip.Prefix) []expr.Any {
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(16) // daddr in the IPv4 header
	if p.Addr().Is6() {
		proto, offset = unix.NFPROTO_IPV6, 24 // and in the IPv6 header
	}
	addr := p.Addr().AsSlice()
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{proto}},
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
	}
	if p.Bits() < p.Addr().BitLen() {
		e = append(e, &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: uint32(len(addr)),
			Mask: prefixMask(p.Bits(), len(addr)), Xor: make([]byte, len(addr))})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: addr})
}

// prefixMask returns n bytes whose first bits bits are set.
func prefixMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return m
}
