package stat

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Row is a workload's golden metrics over a window, as `viz stat -o json`
// and the dashboard give them; nil figures are unknown (no response in the
// window, or no proxy read at both ends of it).
type Row struct {
	Namespace   string   `json:"namespace"`
	Kind        string   `json:"kind"`
	Name        string   `json:"name"`
	MeshedPods  int      `json:"meshedPods"`
	TotalPods   int      `json:"totalPods"`
	Direction   string   `json:"direction"`
	Requests    *float64 `json:"requests"`
	SuccessRate *float64 `json:"successRate"`
	RPS         *float64 `json:"rps"`
	LatencyP50  *float64 `json:"latencyMsP50"`
	LatencyP95  *float64 `json:"latencyMsP95"`
	LatencyP99  *float64 `json:"latencyMsP99"`
	TCPConns    *float64 `json:"tcpConnections"`
	Errors      []string `json:"errors,omitempty"`
}

// Summarize makes the row of a workload from its proxies' pairs of reads.
func Summarize(namespace, kind, name string, meshed, total int, direction string, pairs []Pair) Row {
	g := NewGolden(direction)
	for _, p := range pairs {
		g.Add(p.Before, p.After)
	}
	read := len(pairs) > 0
	r := Row{Namespace: namespace, Kind: kind, Name: name, MeshedPods: meshed, TotalPods: total, Direction: direction,
		Requests: Known(g.Requests, read), SuccessRate: Known(g.SuccessRate()), RPS: Known(g.RPS(), read), TCPConns: Known(g.TCPConns, read)}
	r.LatencyP50, r.LatencyP95, r.LatencyP99 = Known(g.Quantile(0.5)), Known(g.Quantile(0.95)), Known(g.Quantile(0.99))
	return r
}

// Known is v, or nil (JSON null) when it is not known.
func Known(v float64, ok bool) *float64 {
	if !ok || math.IsNaN(v) {
		return nil
	}
	return &v
}

// Edge is a client a workload's proxies saw in the window.
type Edge struct {
	Src      string `json:"src"` // the client's service account; "-" without an identity
	SrcNS    string `json:"srcNamespace"`
	Dst      string `json:"dst"`
	DstNS    string `json:"dstNamespace"` // "-" when unknown (local mode)
	ClientID string `json:"clientId"`
	TLS      string `json:"tls"` // the inbound proxy's tls label: "true", or why not
	Secured  bool   `json:"secured"`
	// Probe: the kubelet's probes of the workload (plaintext by design,
	// not an unmeshed client); Src is "kubelet".
	Probe bool    `json:"probe,omitempty"`
	RPS   float64 `json:"rps"`
}

// Edges are the clients of the workload namespace/name in its proxies'
// pairs of reads, by client identity and TLS status.
// The kubelet's probes make an edge of their own (Probe, from "kubelet").
// A gateway's clients from outside the mesh make none: its requests are
// edges of the workloads it calls, as its own mTLS identity.
func Edges(namespace, name string, pairs []Pair) []Edge {
	byKey := map[string]*Edge{}
	for k, g := range Group(pairs, "inbound", "client_id", "tls", "route", GatewayLabel) {
		parts := strings.SplitN(k, "|", 4)
		if parts[3] != "" {
			continue // a gateway's series: its tls and identities are its backends'
		}
		clientID, tls, probe := parts[0], parts[1], parts[2] == RouteProbe
		key := clientID + "|" + tls + "|" + strconv.FormatBool(probe) // other routes: one edge
		if e := byKey[key]; e != nil {
			e.RPS += g.RPS()
			continue
		}
		e := &Edge{Src: "-", SrcNS: "-", Dst: name, DstNS: cmp.Or(namespace, "-"), ClientID: clientID, TLS: tls, Secured: tls == "true", RPS: g.RPS()}
		if ns, sa, ok := ServiceAccountOf(clientID); ok {
			e.Src, e.SrcNS = sa, ns
		} else if probe {
			e.Src, e.Probe = "kubelet", true
		}
		byKey[key] = e
	}
	out := make([]Edge, 0, len(byKey))
	for _, e := range byKey {
		out = append(out, *e)
	}
	SortEdges(out)
	return out
}

// SortEdges orders edges by destination, then source.
func SortEdges(es []Edge) {
	key := func(e Edge) string {
		return strings.Join([]string{e.DstNS, e.Dst, e.SrcNS, e.Src, e.TLS}, "\x00")
	}
	slices.SortFunc(es, func(a, b Edge) int { return strings.Compare(key(a), key(b)) })
}

// ServiceAccountOf reads spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func ServiceAccountOf(id string) (ns, sa string, ok bool) {
	rest, found := strings.CutPrefix(id, "spiffe://")
	if !found {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return "", "", false
	}
	return parts[2], parts[4], true
}
