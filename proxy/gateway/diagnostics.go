package gateway

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// Diagnostics is what the admin port's /gateway shows: the snapshot
// serving now, its listeners, routes and certificates, what its compiler
// rejected, and the snapshots this proxy refused.
type Diagnostics struct {
	Version      string            `json:"version"`
	Gateway      string            `json:"gateway"`
	Ports        []PortInfo        `json:"ports"`
	Certificates []CertificateInfo `json:"certificates"`
	// BackendClientCertificate is what the gateway presents to the
	// backends it originates TLS to (Snapshot.backend_client_certificate).
	BackendClientCertificate *CertificateInfo `json:"backend_client_certificate,omitempty"`
	// Rejected is Snapshot.rejected: objects the control plane refused.
	Rejected []RejectedInfo `json:"rejected"`
	// Refused are the last snapshots this proxy could not apply, newest first.
	Refused []rejection `json:"refused"`
}

type PortInfo struct {
	Port      uint32         `json:"port"`
	Protocol  string         `json:"protocol"`
	Listeners []ListenerInfo `json:"listeners"`
}

type ListenerInfo struct {
	Name         string   `json:"name"`
	Hostname     string   `json:"hostname"`
	Mode         string   `json:"mode"`
	Certificates []string `json:"certificates,omitempty"`
	// ClientValidation: AllowValidOnly or AllowInsecureFallback when the
	// listener asks for client certificates.
	ClientValidation string     `json:"clientValidation,omitempty"`
	Routes           []RuleInfo `json:"routes"`
}

// RuleInfo is one rule of a listener, in match order.
type RuleInfo struct {
	Host     string   `json:"host"`
	Route    string   `json:"route"` // kind/namespace/name/rule
	Backends []string `json:"backends"`
}

type CertificateInfo struct {
	Name     string    `json:"name"`
	Subject  string    `json:"subject"`
	DNSNames []string  `json:"dns_names"`
	NotAfter time.Time `json:"not_after"`
}

type RejectedInfo struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
	Message   string `json:"message"`
}

// Diagnostics describes the gateway now.
func (g *Gateway) Diagnostics() Diagnostics {
	var d Diagnostics
	g.mu.Lock()
	d.Refused = append([]rejection{}, g.rejected...)
	g.mu.Unlock()
	t := g.table.Load()
	if t == nil {
		return d
	}
	d.Version, d.Gateway = t.version, t.gateway
	for _, p := range sortedPorts(t) {
		pi := PortInfo{Port: p.number, Protocol: p.protocol.String()}
		for _, l := range p.listeners {
			li := ListenerInfo{Name: l.name, Hostname: l.hostname, Mode: l.mode.String(), Routes: []RuleInfo{}}
			for _, c := range l.certs {
				li.Certificates = append(li.Certificates, c.name)
			}
			switch {
			case l.tls != nil && l.tls.ClientAuth == tls.RequireAndVerifyClientCert:
				li.ClientValidation = "AllowValidOnly"
			case l.tls != nil && l.tls.ClientAuth == tls.RequestClientCert:
				li.ClientValidation = "AllowInsecureFallback"
			}
			for _, h := range l.hosts {
				for _, rl := range h.rules {
					ri := RuleInfo{Host: h.hostname, Route: rl.ref, Backends: []string{}}
					for _, be := range rl.backends {
						ri.Backends = append(ri.Backends, fmt.Sprintf("%s weight=%d", be.label(), be.weight))
					}
					li.Routes = append(li.Routes, ri)
				}
			}
			for _, r := range l.routes {
				ri := RuleInfo{Host: strings.Join(r.hostnames, ","), Route: r.ref, Backends: []string{}}
				for _, be := range r.backends {
					ri.Backends = append(ri.Backends, fmt.Sprintf("%s weight=%d", be.label(), be.weight))
				}
				li.Routes = append(li.Routes, ri)
			}
			pi.Listeners = append(pi.Listeners, li)
		}
		d.Ports = append(d.Ports, pi)
	}
	for _, c := range t.certOrder {
		leaf := c.cert.Leaf
		d.Certificates = append(d.Certificates, CertificateInfo{Name: c.name, Subject: leaf.Subject.String(), DNSNames: leaf.DNSNames, NotAfter: leaf.NotAfter.UTC()})
	}
	if c := t.clientCert; c != nil {
		d.BackendClientCertificate = &CertificateInfo{Name: c.name, Subject: c.cert.Leaf.Subject.String(), DNSNames: c.cert.Leaf.DNSNames, NotAfter: c.cert.Leaf.NotAfter.UTC()}
	}
	for _, r := range t.rejected {
		d.Rejected = append(d.Rejected, RejectedInfo{Kind: r.GetKind(), Namespace: r.GetNamespace(), Name: r.GetName(), Reason: r.GetReason(), Message: r.GetMessage()})
	}
	return d
}

// diagnostics serves /gateway: JSON with ?format=json or an Accept of
// application/json, else readable text.
func (g *Gateway) diagnostics(w http.ResponseWriter, r *http.Request) {
	d := g.Diagnostics()
	if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		e.Encode(d)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "gateway %s, snapshot version %q\n\n", d.Gateway, d.Version)
	fmt.Fprintln(tw, "PORT\tLISTENER\tMODE\tHOSTNAME\tHOST\tROUTE\tBACKENDS")
	for _, p := range d.Ports {
		for _, l := range p.Listeners {
			if len(l.Routes) == 0 {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t\t(no routes)\t\n", p.Port, l.Name, l.Mode, orAny(l.Hostname))
			}
			for _, rt := range l.Routes {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Port, l.Name, l.Mode, orAny(l.Hostname), orAny(rt.Host), rt.Route, strings.Join(rt.Backends, ", "))
			}
		}
	}
	fmt.Fprintln(tw, "\nCERTIFICATE\tSUBJECT\tNAMES\tEXPIRES")
	for _, c := range d.Certificates {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Subject, strings.Join(c.DNSNames, ","), c.NotAfter.Format(time.RFC3339))
	}
	if c := d.BackendClientCertificate; c != nil {
		fmt.Fprintf(tw, "%s (to backends)\t%s\t%s\t%s\n", c.Name, c.Subject, strings.Join(c.DNSNames, ","), c.NotAfter.Format(time.RFC3339))
	}
	fmt.Fprintln(tw, "\nREJECTED\tREASON\tMESSAGE")
	for _, rj := range d.Rejected {
		fmt.Fprintf(tw, "%s %s/%s\t%s\t%s\n", rj.Kind, rj.Namespace, rj.Name, rj.Reason, rj.Message)
	}
	fmt.Fprintln(tw, "\nREFUSED SNAPSHOT\tAT\tERROR")
	for _, rf := range d.Refused {
		fmt.Fprintf(tw, "%q\t%s\t%s\n", rf.Version, rf.At.UTC().Format(time.RFC3339), rf.Error)
	}
	tw.Flush()
}

func orAny(h string) string {
	if h == "" {
		return "*"
	}
	return h
}
