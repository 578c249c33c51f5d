package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/kubernetes"

	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/conversion"
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

// injector is the proxy injector's two parts: serve runs on every replica
// (the webhook, with the certificate the Secret holds), keep on the leader
// only (creates and renews the Secret, patches the caBundle). Both nil:
// the injector is off.
type injector struct {
	serve, keep runnable.Runnable
	// proxy is how injected proxies are configured; provisioned gateway
	// proxies are configured the same way.
	proxy inject.Config
}

// proxyInjector checks the injector's options and returns its parts.
func proxyInjector(o Options, src source, ca *identity.Authority, log *slog.Logger) (injector, error) {
	w := o.Webhook
	if w.Addr == "" {
		return injector{}, nil
	}
	if src.local {
		return injector{}, errors.New("--webhook-addr: the proxy injector needs --store=kube")
	}
	if w.Namespace == "" {
		return injector{}, errors.New("--webhook-addr: the proxy injector needs the controller's namespace (--namespace or $POD_NAMESPACE)")
	}
	if ca == nil {
		return injector{}, errors.New("--webhook-addr: the proxy injector gives proxies the identity trust anchors: set --identity-issuer-dir")
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
		return injector{}, fmt.Errorf("proxy injector: %w", err)
	}
	cs, err := kubernetes.NewForConfig(o.RestConfig)
	if err != nil {
		return injector{}, err
	}
	crdClient, err := apiextensionsclient.NewForConfig(o.RestConfig)
	if err != nil {
		return injector{}, err
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
		// The TrafficSplit CRD's conversion webhook shares the server and
		// its certificate (the CRD names the same Service).
		CRDClient: crdClient,
		CRDs:      []string{conversion.CRDName},
		Handlers:  map[string]http.Handler{conversion.Path: conversion.Handler(log)},
	}
	certs := webhook.NewCerts(wo)
	return injector{
		serve: runnable.Func(func(ctx context.Context) error { return webhook.Serve(ctx, wo, certs, w.Ready) }),
		keep:  runnable.Func(func(ctx context.Context) error { certs.Run(ctx, wo.Resync); return nil }),
		proxy: cfg,
	}, nil
}
