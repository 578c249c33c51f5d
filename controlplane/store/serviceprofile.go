package store

import "github.com/meridian-mesh/meridian/api/v1alpha1"

var profileKind = kind{
	name:   "ServiceProfile",
	decode: object[*v1alpha1.ServiceProfile]("ServiceProfile", false),
	newTable: func(s *Store) table {
		return &profileTable{s: s, profiles: map[Key]*v1alpha1.ServiceProfile{}, svcProfile: map[Key]*v1alpha1.ServiceProfile{}}
	},
}

// profileTable holds ServiceProfiles, indexed by the service their name
// spells (<svc>.<ns>.svc.<cluster-domain>, in the service's namespace;
// others are kept but serve no one). A change wakes that service's topic.
type profileTable struct {
	s          *Store
	profiles   map[Key]*v1alpha1.ServiceProfile // by the profile's own key
	svcProfile map[Key]*v1alpha1.ServiceProfile // by the service it describes
}

// ServiceProfile returns the profile of service k: the one named
// <k.Name>.<k.Namespace>.svc.<cluster-domain> in namespace k.Namespace.
func (s *Store) ServiceProfile(k Key) (*v1alpha1.ServiceProfile, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.tables[profileKind.id].(*profileTable).svcProfile[k]
	return p, ok
}

func (t *profileTable) upsert(k Key, v any, a affected) {
	p := v.(*v1alpha1.ServiceProfile)
	if old, ok := t.profiles[k]; ok && unchanged(old, p) {
		return
	}
	t.profiles[k] = p
	if svc, ok := t.service(k); ok {
		t.svcProfile[svc] = p
		a.service(svc)
	}
}

func (t *profileTable) delete(k Key, a affected) {
	if _, ok := t.profiles[k]; !ok {
		return
	}
	delete(t.profiles, k)
	if svc, ok := t.service(k); ok {
		delete(t.svcProfile, svc)
		a.service(svc)
	}
}

func (t *profileTable) each(f func(Key)) {
	for k := range t.profiles {
		f(k)
	}
}

// service is the service a profile describes: its name must be the
// service's FQDN in the cluster domain, and it must be in the service's
// namespace. Other profiles are kept but serve no one.
func (t *profileTable) service(k Key) (Key, bool) {
	svc, ns, ok := v1alpha1.ServiceForProfile(k.Name, t.s.clusterDomain)
	if !ok || ns != k.Namespace {
		return Key{}, false
	}
	return Key{ns, svc}, true
}
