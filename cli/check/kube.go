package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/version"
)

// needClient is the first line of every check that talks to the API server:
// it connects when no check of the kubernetes-api group did (a run of other
// groups only).
func (s *State) needClient() error {
	if s.Kube == nil || s.APIExt == nil || s.Gateway == nil {
		return s.connect()
	}
	return nil
}

func kubernetesAPIChecks(Options) []Check {
	return []Check{
		{
			Group:       GroupKubernetesAPI,
			Description: "can initialize the client",
			Hint:        "kubectl config get-contexts; pass --kubeconfig or --context, or set $KUBECONFIG",
			Fatal:       true,
			Run: func(_ context.Context, s *State) error {
				return s.connect()
			},
		},
		{
			Group:       GroupKubernetesAPI,
			Description: "can query the Kubernetes API",
			Hint:        "kubectl cluster-info; is the API server up and reachable from here, and are the credentials valid?",
			Fatal:       true,
			Run: func(ctx context.Context, s *State) error {
				if err := s.needClient(); err != nil {
					return err
				}
				v, err := serverVersion(ctx, s)
				if err != nil {
					return err
				}
				s.ServerVersion = v
				return nil
			},
		},
	}
}

func kubernetesVersionChecks(Options) []Check {
	return []Check{{
		Group:       GroupKubernetesVersion,
		Description: "is running the minimum Kubernetes API version",
		Hint: fmt.Sprintf("upgrade the cluster to Kubernetes %s or later (the proxy runs as a native sidecar, on by default from %s)",
			minimumKubernetesString, minimumKubernetesString),
		Run: func(ctx context.Context, s *State) error {
			if s.ServerVersion == nil {
				if err := s.needClient(); err != nil {
					return err
				}
				v, err := serverVersion(ctx, s)
				if err != nil {
					return err
				}
				s.ServerVersion = v
			}
			return minimumVersion(s.ServerVersion.GitVersion)
		},
	}}
}

// minimumVersion checks a server's git version (v1.34.4, v1.30.2-eks-1234)
// against the minimum.
func minimumVersion(git string) error {
	v, err := utilversion.ParseGeneric(git)
	if err != nil {
		return fmt.Errorf("cannot parse the server's version %q: %w", git, err)
	}
	min := utilversion.MajorMinor(minimumKubernetesMajor, minimumKubernetesMinor)
	if v.LessThan(min) {
		return fmt.Errorf("Kubernetes %s is older than %s, the minimum: Meridian's proxy is a native sidecar container (an init container with restartPolicy: Always), enabled by default from %s",
			git, minimumKubernetesString, minimumKubernetesString)
	}
	return nil
}

// installResource is a resource `meridian install` creates.
type installResource struct {
	kind       string // printed in the description
	group      string
	resource   string
	namespaced bool
}

// installResources are the resources the control plane's manifests hold.
var installResources = []installResource{
	{"Namespaces", "", "namespaces", false},
	{"ClusterRoles", "rbac.authorization.k8s.io", "clusterroles", false},
	{"ClusterRoleBindings", "rbac.authorization.k8s.io", "clusterrolebindings", false},
	{"CustomResourceDefinitions", "apiextensions.k8s.io", "customresourcedefinitions", false},
	{"MutatingWebhookConfigurations", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", false},
	{"ServiceAccounts", "", "serviceaccounts", true},
	{"Services", "", "services", true},
	{"Deployments", "apps", "deployments", true},
	{"Secrets", "", "secrets", true},
	{"Roles", "rbac.authorization.k8s.io", "roles", true},
	{"RoleBindings", "rbac.authorization.k8s.io", "rolebindings", true},
}

// qualified is the resource as kubectl names it: resource.group.
func (r installResource) qualified() string {
	if r.group == "" {
		return r.resource
	}
	return r.resource + "." + r.group
}

func preSetupChecks(o Options) []Check {
	ns := o.Namespace
	checks := []Check{{
		Group:       GroupPreSetup,
		Description: "control plane namespace does not already exist",
		Hint:        fmt.Sprintf("kubectl get all -n %s: remove what an earlier install left there, or install into another namespace", ns),
		Warning:     true,
		Run: func(ctx context.Context, s *State) error {
			if err := s.needClient(); err != nil {
				return err
			}
			_, err := s.Kube.CoreV1().Namespaces().Get(ctx, s.Namespace, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return err
			}
			return fmt.Errorf("namespace %s already exists", s.Namespace)
		},
	}}
	for _, r := range installResources {
		where := "(cluster-wide)"
		if r.namespaced {
			where = "in namespace " + ns
		}
		nsFlag := ""
		if r.namespaced {
			nsFlag = " -n " + ns
		}
		checks = append(checks, Check{
			Group:       GroupPreSetup,
			Description: "can create " + r.kind,
			Hint: fmt.Sprintf("kubectl auth can-i create %s%s; install as a user allowed to (for example one bound to cluster-admin)",
				r.qualified(), nsFlag),
			Run: func(ctx context.Context, s *State) error {
				if err := s.needClient(); err != nil {
					return err
				}
				attrs := &authzv1.ResourceAttributes{Verb: "create", Group: r.group, Resource: r.resource}
				if r.namespaced {
					attrs.Namespace = s.Namespace
				}
				review, err := s.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
					&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}},
					metav1.CreateOptions{})
				if err != nil {
					return fmt.Errorf("cannot review access to create %s %s: %w", r.qualified(), where, err)
				}
				if review.Status.Allowed {
					return nil
				}
				msg := fmt.Sprintf("cannot create %s %s", r.qualified(), where)
				if why := review.Status.Reason; why != "" {
					msg += ": " + why
				}
				if e := review.Status.EvaluationError; e != "" {
					msg += " (evaluation error: " + e + ")"
				}
				return errors.New(msg)
			},
		})
	}
	return checks
}

// serverVersion asks the API server for its version (GET /version), with ctx.
func serverVersion(ctx context.Context, s *State) (*version.Info, error) {
	d := s.Kube.Discovery()
	rc := d.RESTClient()
	if rc == nil {
		return d.ServerVersion() // fakes
	}
	body, err := rc.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return nil, err
	}
	var v version.Info
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("the API server's /version: %w", err)
	}
	return &v, nil
}
