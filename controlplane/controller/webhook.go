package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/inject/webhook"
	"github.com/meridian-mesh/meridian/internal/names"
)

// WebhookOptions configure the proxy injector, a mutating admission
// webhook; the fields mirror `meridian controller`'s --webhook-* flags and
// their companions (docs/kubernetes.md).
type WebhookOptions struct {
	// Addr is the webhook's listen address (HTTPS); empty: no injector.
	Addr string
	// Secret holds the serving certificate, created and renewed by the
	// controller (default meridian-proxy-injector-tls).
	Secret string
	// Config is the MutatingWebhookConfiguration whose caBundle the
	// controller keeps (default meridian-proxy-injector).
	Config string
	// Service is the controller's Service: the certificate's name, and the
	// address proxies dial (default meridian-controller).
	Service string
	// Namespace is the controller's namespace (the Secret's; proxies dial
	// <Service>.<Namespace>.svc.<cluster domain>:8086).
	Namespace string
	// ProxyImage and ProxyInitImage default to ghcr.io/meridian-mesh/proxy
	// and proxy-init tagged with ControlPlaneVersion.
	ProxyImage, ProxyInitImage string
	// DefaultInboundPolicy and ClusterNetworks are the injected proxies'
	// (inject.Config's fields of the same names).
	DefaultInboundPolicy, ClusterNetworks string
	// ProxyResources are the injected proxies' default resources (the
	// config.meridian.io/proxy-* annotations override them one by one).
	ProxyResources corev1.ResourceRequirements
	// ControlPlaneVersion is the injected proxies' meridian.io/proxy-version
	// (default dev).
	ControlPlaneVersion string
	// ExtraHosts are more names or IP addresses for the serving certificate
	// (tests that reach the webhook on loopback).
	ExtraHosts []string
	// Ready, when set, is told the address the webhook listens on.
	Ready func(addr string)
}

// Defaults of WebhookOptions.
const (
	DefaultWebhookSecret  = names.WebhookSecretName
	DefaultWebhookConfig  = names.WebhookConfigName
	DefaultWebhookService = names.ControllerName
)

// proxyInjector checks the injector's options and returns what runs it
// (a no-op when it is off).
func proxyInjector(o Options, src source, ca *identity.Authority, log *slog.Logger) (func(context.Context) error, error) {
	w := o.Webhook
	if w.Addr == "" {
		return func(context.Context) error { return nil }, nil
	}
	if src.local {
		return nil, errors.New("--webhook-addr: the proxy injector needs --store=kube")
	}
	if w.Namespace == "" {
		return nil, errors.New("--webhook-addr: the proxy injector needs the controller's namespace (--namespace or $POD_NAMESPACE)")
	}
	if ca == nil {
		return nil, errors.New("--webhook-addr: the proxy injector gives proxies the identity trust anchors: set --identity-issuer-dir")
	}
	if w.Secret == "" {
		w.Secret = DefaultWebhookSecret
	}
	if w.Config == "" {
		w.Config = DefaultWebhookConfig
	}
	if w.Service == "" {
		w.Service = DefaultWebhookService
	}
	if w.ControlPlaneVersion == "" {
		w.ControlPlaneVersion = "dev"
	}
	cfg := inject.DefaultConfig(w.ControlPlaneVersion, w.Namespace)
	if w.ProxyImage != "" {
		cfg.ProxyImage = w.ProxyImage
	}
	if w.ProxyInitImage != "" {
		cfg.ProxyInitImage = w.ProxyInitImage
	}
	cfg.ControllerAddr = inject.ControllerAddr(w.Service, w.Namespace, o.ClusterDomain)
	cfg.TrustDomain = o.TrustDomain
	cfg.ControllerIdentity = o.APIIdentity
	cfg.Resources = w.ProxyResources
	cfg.DefaultInboundPolicy, cfg.ClusterNetworks = w.DefaultInboundPolicy, w.ClusterNetworks
	cfg.TrustAnchorsPEM = string(ca.Current().RootsPEM()) // the anchors never change under an Authority
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy injector: %w", err)
	}
	rc := o.RestConfig
	if rc == nil {
		var err error
		if rc, err = restConfig(o.Kubeconfig); err != nil {
			return nil, err
		}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	wo := webhook.Options{
		Addr:      w.Addr,
		Client:    cs,
		Namespace: w.Namespace,
		Secret:    w.Secret,
		Config:    w.Config,
		Hosts:     append(webhook.Hosts(w.Service, w.Namespace, o.ClusterDomain), w.ExtraHosts...),
		Inject:    cfg,
		Log:       log,
	}
	return func(ctx context.Context) error { return webhook.Run(ctx, wo, w.Ready) }, nil
}
