// Package compile turns store contents into what a proxy needs: the endpoint
// set of an authority and its profile. Every function here is pure: it reads
// a store.Reader and returns values, and the same store contents give the
// same answer.
package compile

// Defaults for Options' zero values.
const (
	DefaultClusterDomain = "cluster.local"
	DefaultTrustDomain   = "cluster.local"
)

// Options configure the compilers.
type Options struct {
	// ClusterDomain is the DNS suffix of services: <svc>.<ns>.svc.<ClusterDomain>.
	// Empty means DefaultClusterDomain.
	ClusterDomain string
	// TrustDomain is the SPIFFE trust domain of identities. Empty means
	// DefaultTrustDomain.
	TrustDomain string
	// Local is local mode (--store=dir:): short names resolve, and
	// registered workloads serve services.
	Local bool
	// DefaultNamespace is where a short name is looked up first in local
	// mode. Empty: a short name resolves only when exactly one namespace
	// has a service of that name (needs a store implementing ServiceIndex).
	DefaultNamespace string
	// DefaultOpaquePorts apply where neither the service nor its namespace
	// has an opaque-ports annotation. Nil: none.
	DefaultOpaquePorts PortSet
}

func (o Options) clusterDomain() string {
	if o.ClusterDomain == "" {
		return DefaultClusterDomain
	}
	return o.ClusterDomain
}

func (o Options) trustDomain() string {
	if o.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return o.TrustDomain
}

// Identity is the SPIFFE ID of a service account.
func Identity(namespace, serviceAccount string, o Options) string {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return "spiffe://" + o.trustDomain() + "/ns/" + namespace + "/sa/" + serviceAccount
}
