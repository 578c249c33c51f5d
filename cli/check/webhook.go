package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/pemutil"
)

func webhookChecks(o Options) []Check {
	ns := o.Namespace
	// Of the replicas, the Lease's holder writes (controlplane/controller/leader).
	logs := fmt.Sprintf("the controller replica holding the Lease %s makes the certificate and writes the caBundle: kubectl -n %s get lease %s (its holder is POD_RANDOM); kubectl -n %s logs POD", names.ControllerName, ns, names.ControllerName, ns)
	return []Check{
		{
			Group:       GroupWebhook,
			Description: "proxy injector webhook configuration exists",
			Hint:        installCommand,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				_, err := injectorWebhook(ctx, s)
				return err
			},
		},
		{
			Group:       GroupWebhook,
			Description: "proxy injector webhook caBundle is set",
			Hint:        logs,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				wh, err := injectorWebhook(ctx, s)
				if err != nil {
					return Skip(err.Error())
				}
				_, err = caBundle(wh)
				return err
			},
		},
		{
			Group:       GroupWebhook,
			Description: "proxy injector serving certificate Secret exists",
			Hint:        logs,
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				_, err := webhookSecret(ctx, s)
				return err
			},
		},
		{
			Group:       GroupWebhook,
			Description: "proxy injector serving certificate is valid and chains to the caBundle",
			Hint:        fmt.Sprintf("delete Secret %s/%s and restart the controller (kubectl -n %s rollout restart deploy/%s): it makes a new certificate and caBundle", ns, names.WebhookSecretName, ns, names.ControllerName),
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				wh, sec, err := webhookPrereqs(ctx, s)
				if err != nil {
					return err
				}
				roots, err := caBundle(wh)
				if err != nil {
					return Skip(err.Error())
				}
				certs, err := parseCertsPEM(sec.Data[corev1.TLSCertKey])
				if err != nil {
					return fmt.Errorf("secret %s/%s: tls.crt: %w", s.Namespace, names.WebhookSecretName, err)
				}
				key, err := pemutil.Key(sec.Data[corev1.TLSPrivateKeyKey])
				if err != nil {
					return fmt.Errorf("secret %s/%s: tls.key: %w", s.Namespace, names.WebhookSecretName, err)
				}
				leaf := certs[0]
				if !publicKeysEqual(key.Public(), leaf.PublicKey) {
					return fmt.Errorf("secret %s/%s: tls.key is not the key of tls.crt", s.Namespace, names.WebhookSecretName)
				}
				if err := validNow("serving certificate", certs[:1], s.now()); err != nil {
					return err
				}
				if _, err := verifyChain(leaf, certs[1:], roots, s.now(), "", x509.ExtKeyUsageServerAuth); err != nil {
					return fmt.Errorf("serving certificate %s does not chain to the webhook's caBundle (the API server would refuse to call the injector): %w", certName(leaf), err)
				}
				return nil
			},
		},
		{
			Group:       GroupWebhook,
			Description: "proxy injector serving certificate covers the Service's DNS name",
			Hint:        fmt.Sprintf("delete Secret %s/%s and restart the controller (kubectl -n %s rollout restart deploy/%s): it makes a new certificate", ns, names.WebhookSecretName, ns, names.ControllerName),
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				wh, sec, err := webhookPrereqs(ctx, s)
				if err != nil {
					return err
				}
				certs, err := parseCertsPEM(sec.Data[corev1.TLSCertKey])
				if err != nil {
					return Skip(err.Error())
				}
				svcNS, svcName := webhookService(wh, s.Namespace)
				name := fmt.Sprintf("%s.%s.svc", svcName, svcNS)
				if err := certs[0].VerifyHostname(name); err != nil {
					return fmt.Errorf("serving certificate %s does not cover %s (DNS names %v)", certName(certs[0]), name, certs[0].DNSNames)
				}
				return nil
			},
		},
		{
			Group:       GroupWebhook,
			Description: "proxy injector Service has ready endpoints",
			Hint:        fmt.Sprintf("kubectl -n %s describe pods -l %s=%s", ns, names.LabelName, names.ControllerName),
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				wh, err := injectorWebhook(ctx, s)
				if err != nil {
					return Skip(err.Error())
				}
				if wh.ClientConfig.Service == nil {
					return fmt.Errorf("webhook %s calls a URL (%s), not the controller's Service", names.WebhookName, deref(wh.ClientConfig.URL))
				}
				svcNS, svcName := webhookService(wh, s.Namespace)
				port := int32(443)
				if wh.ClientConfig.Service.Port != nil {
					port = *wh.ClientConfig.Service.Port
				}
				svc, err := s.Kube.CoreV1().Services(svcNS).Get(ctx, svcName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("no service %s/%s (the webhook's)", svcNS, svcName)
				}
				if err != nil {
					return err
				}
				for _, p := range svc.Spec.Ports {
					if p.Port == port {
						return serviceReady(ctx, s, svcNS, svcName, p.Name)
					}
				}
				return fmt.Errorf("service %s/%s has no port %d (the webhook's)", svcNS, svcName, port)
			},
		},
		{
			Group:       GroupWebhook,
			Description: "proxy injector injects a pod (server-side dry run)",
			Hint:        fmt.Sprintf("the API server could not call the injector (its log says why: \"Failed calling webhook\"); pods created until this passes are not meshed. kubectl -n %s logs deploy/%s", ns, names.ControllerName),
			Retry:       true,
			Run:         injectsDryRunPod,
		},
	}
}

// injectsDryRunPod creates a pod with server-side dry run, as a user's
// would be, in a namespace the webhook applies to, and looks for the proxy
// in what the API server returns. It is the one check of the whole path:
// the API server resolving the Service, the node's Service routing, TLS
// with the caBundle, the handler. The configuration checks above can all
// pass while the API server still cannot reach the injector (for a second
// after the endpoint turns ready, Service routing may not have caught up);
// with failurePolicy Ignore, pods created then come out unmeshed.
func injectsDryRunPod(ctx context.Context, s *State) error {
	wh, err := injectorWebhook(ctx, s)
	if err != nil {
		return Skip(err.Error())
	}
	ns, err := dryRunNamespace(ctx, s, wh)
	if err != nil {
		return Warn(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "meridian-check-",
			Labels:       map[string]string{names.LabelName: "meridian-check"},
			Annotations:  map[string]string{names.AnnotationInject: names.InjectEnabled},
		},
		// Never scheduled (dry run), so the image is never pulled.
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	got, err := s.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil && strings.Contains(err.Error(), "failed calling webhook") {
		// failurePolicy Fail: the API server says so itself.
		return fmt.Errorf("a dry-run pod in namespace %s was refused: %w", ns, err)
	}
	if err != nil {
		// Not allowed to create pods there, or another admission plugin
		// refused it: the injector's reachability is unknown, not broken.
		return Warnf("cannot create a dry-run pod in namespace %s, so the injector was not called: %v", ns, err)
	}
	for _, cs := range [][]corev1.Container{got.Spec.InitContainers, got.Spec.Containers} {
		for _, c := range cs {
			if c.Name == names.ProxyContainerName {
				return nil
			}
		}
	}
	return fmt.Errorf("a dry-run pod in namespace %s annotated %s=%s came back without the %s container: the API server did not get an answer from webhook %s, and its failurePolicy %s let the pod through unmeshed",
		ns, names.AnnotationInject, names.InjectEnabled, names.ProxyContainerName, names.WebhookName, failurePolicy(wh))
}

// dryRunNamespace picks a namespace the webhook's namespaceSelector
// selects: "default" when it does, else the first by name.
func dryRunNamespace(ctx context.Context, s *State, wh *admissionv1.MutatingWebhook) (string, error) {
	sel := labels.Everything()
	if wh.NamespaceSelector != nil {
		var err error
		if sel, err = metav1.LabelSelectorAsSelector(wh.NamespaceSelector); err != nil {
			return "", fmt.Errorf("webhook %s: namespaceSelector: %w", names.WebhookName, err)
		}
	}
	list, err := s.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", fmt.Errorf("cannot list the namespaces webhook %s applies to, so no dry-run pod was created: %w", names.WebhookName, err)
	}
	var matching []string
	for _, n := range list.Items {
		if n.Status.Phase == corev1.NamespaceTerminating || n.DeletionTimestamp != nil {
			continue
		}
		if n.Name == metav1.NamespaceDefault {
			return n.Name, nil
		}
		matching = append(matching, n.Name)
	}
	if len(matching) == 0 {
		return "", fmt.Errorf("no namespace matches the namespaceSelector of webhook %s (%s), so no dry-run pod was created", names.WebhookName, sel)
	}
	slices.Sort(matching)
	return matching[0], nil
}

func failurePolicy(wh *admissionv1.MutatingWebhook) string {
	if wh.FailurePolicy == nil {
		return string(admissionv1.Fail)
	}
	return string(*wh.FailurePolicy)
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// injectorWebhook gets the injector's webhook from its configuration.
func injectorWebhook(ctx context.Context, s *State) (*admissionv1.MutatingWebhook, error) {
	if err := s.needClient(); err != nil {
		return nil, err
	}
	cfg, err := s.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, names.WebhookConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no MutatingWebhookConfiguration %s", names.WebhookConfigName)
	}
	if err != nil {
		return nil, err
	}
	for i := range cfg.Webhooks {
		if cfg.Webhooks[i].Name == names.WebhookName {
			return &cfg.Webhooks[i], nil
		}
	}
	return nil, fmt.Errorf("MutatingWebhookConfiguration %s has no webhook %s", names.WebhookConfigName, names.WebhookName)
}

// caBundle parses the webhook's caBundle.
func caBundle(wh *admissionv1.MutatingWebhook) ([]*x509.Certificate, error) {
	if len(wh.ClientConfig.CABundle) == 0 {
		return nil, fmt.Errorf("webhook %s of MutatingWebhookConfiguration %s has no caBundle", names.WebhookName, names.WebhookConfigName)
	}
	certs, err := parseCertsPEM(wh.ClientConfig.CABundle)
	if err != nil {
		return nil, fmt.Errorf("webhook %s: caBundle: %w", names.WebhookName, err)
	}
	return certs, nil
}

// webhookSecret gets the injector's serving Secret.
func webhookSecret(ctx context.Context, s *State) (*corev1.Secret, error) {
	if err := s.needClient(); err != nil {
		return nil, err
	}
	sec, err := s.Kube.CoreV1().Secrets(s.Namespace).Get(ctx, names.WebhookSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no secret %s/%s", s.Namespace, names.WebhookSecretName)
	}
	if err != nil {
		return nil, err
	}
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
		if len(sec.Data[k]) == 0 {
			return nil, fmt.Errorf("secret %s/%s has no %s", s.Namespace, names.WebhookSecretName, k)
		}
	}
	return sec, nil
}

// webhookPrereqs gets the webhook and the Secret, skipping the check when
// either is missing (an earlier check of the group says so).
func webhookPrereqs(ctx context.Context, s *State) (*admissionv1.MutatingWebhook, *corev1.Secret, error) {
	wh, err := injectorWebhook(ctx, s)
	if err != nil {
		return nil, nil, Skip(err.Error())
	}
	sec, err := webhookSecret(ctx, s)
	if err != nil {
		return nil, nil, Skip(err.Error())
	}
	return wh, sec, nil
}

// webhookService is the Service the webhook calls: the configuration's, or
// the contract's when it names none.
func webhookService(wh *admissionv1.MutatingWebhook, ns string) (string, string) {
	if ref := wh.ClientConfig.Service; ref != nil {
		return ref.Namespace, ref.Name
	}
	return ns, names.ControllerName
}
