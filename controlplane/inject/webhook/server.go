package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meridian-mesh/meridian/controlplane/inject"
)

// Options configure Run.
type Options struct {
	Addr   string // listen address, e.g. :8443
	Client kubernetes.Interface
	// Namespace is the controller's: where the Secret lives.
	Namespace string
	Secret    string // the serving certificate's Secret
	Config    string // the MutatingWebhookConfiguration whose caBundle is kept
	// CRDClient and CRDs: the CustomResourceDefinitions whose conversion
	// webhook caBundle is kept as well (the ones Handlers convert for).
	CRDClient apiextensionsclient.Interface
	CRDs      []string
	// Handlers are more handlers on the same TLS server, by path (e.g. the
	// TrafficSplit conversion webhook, controlplane/conversion).
	Handlers map[string]http.Handler
	// Hosts are the names the certificate covers, e.g.
	// meridian-controller.meridian.svc (see Hosts).
	Hosts  []string
	Inject inject.Config
	Log    *slog.Logger
	// Resync is how often the Secret and the configuration are read again
	// (default DefaultResync).
	Resync time.Duration
}

// Hosts are the names the API server may dial the webhook Service by:
// <service>.<namespace>.svc (what it uses for a service reference) and the
// fully qualified name.
func Hosts(service, namespace, clusterDomain string) []string {
	return []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc." + clusterDomain,
	}
}

// NewCerts is the certificate keeper o describes.
func NewCerts(o Options) *Certs {
	return &Certs{Client: o.Client, Namespace: o.Namespace, Secret: o.Secret, WebhookConfig: o.Config,
		CRDClient: o.CRDClient, CRDs: o.CRDs, Hosts: o.Hosts, Log: o.Log}
}

// Run serves the injector over TLS on o.Addr until ctx ends, keeping its
// certificate with Certs (creating and renewing the Secret, patching the
// caBundle). ready, when not nil, is told the address it listens on. The
// handler is at Path. A single replica runs it; replicated, the leader runs
// Certs.Run and every replica Serve.
func Run(ctx context.Context, o Options, ready func(addr string)) error {
	certs := NewCerts(o)
	return serve(ctx, o, certs, func(ctx context.Context) { certs.Run(ctx, o.Resync) }, ready)
}

// Serve is Run without the writes: it serves with the certificate certs
// loads from the Secret (Certs.Follow), which another runner keeps (the
// leader's Certs.Run, that may share certs so that it serves at once what
// it writes).
func Serve(ctx context.Context, o Options, certs *Certs, ready func(addr string)) error {
	return serve(ctx, o, certs, func(ctx context.Context) { certs.Follow(ctx, o.Resync) }, ready)
}

// serve serves the injector with certs' certificate while keep runs.
func serve(ctx context.Context, o Options, certs *Certs, keep func(context.Context), ready func(addr string)) error {
	if err := o.Inject.Validate(); err != nil {
		return err
	}
	if o.Client == nil || o.Namespace == "" || o.Secret == "" {
		return errors.New("webhook: needs a client, a namespace and a secret name")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("--webhook-addr: %w", err)
	}
	nsAnn := func(ctx context.Context, name string) (map[string]string, error) {
		ns, err := o.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return ns.Annotations, nil
	}
	mux := http.NewServeMux()
	mux.Handle(Path, Handler(o.Inject, nsAnn, log))
	for path, h := range o.Handlers {
		mux.Handle(path, h)
		log.Info("webhook: serving", "path", path)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate},
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	kctx, stopKeeper := context.WithCancel(ctx)
	keeperDone := make(chan struct{})
	go func() { defer close(keeperDone); keep(kctx) }()
	defer func() { stopKeeper(); <-keeperDone }()

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	log.Info("webhook: serving the proxy injector", "addr", lis.Addr().String(), "path", Path)
	if ready != nil {
		ready(lis.Addr().String())
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("webhook: %w", err)
	}
}
