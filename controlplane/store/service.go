package store

import corev1 "k8s.io/api/core/v1"

var serviceKind = kind{
	name:   "Service",
	decode: object[*corev1.Service]("Service", false),
	newTable: func(s *Store) table {
		return &serviceTable{s: s, services: map[Key]*corev1.Service{}, byIP: map[string]Key{}, nsServices: map[string]map[string]struct{}{}}
	},
}

// serviceTable holds Services, indexed by cluster IP (every entry of
// spec.clusterIPs; None is not an address) and by namespace (for the
// namespace kind). A change wakes the Service's own topic.
type serviceTable struct {
	s          *Store
	services   map[Key]*corev1.Service
	byIP       map[string]Key
	nsServices map[string]map[string]struct{} // namespace → service names
}

func (s *Store) serviceTable() *serviceTable { return s.tables[serviceKind.id].(*serviceTable) }

// Service returns the Service k.
func (s *Store) Service(k Key) (*corev1.Service, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	svc, ok := s.serviceTable().services[k]
	return svc, ok
}

// ServiceByClusterIP finds the Service owning a cluster IP (any of
// spec.clusterIPs).
func (s *Store) ServiceByClusterIP(ip string) (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.serviceTable().byIP[ip]
	return k, ok
}

func (t *serviceTable) upsert(k Key, v any, a affected) {
	svc := v.(*corev1.Service)
	old, ok := t.services[k]
	if ok && unchanged(old, svc) {
		return
	}
	if ok {
		t.unindex(k, old)
	}
	t.services[k] = svc
	for _, ip := range clusterIPs(svc) {
		t.byIP[ip] = k
	}
	names := t.nsServices[k.Namespace]
	if names == nil {
		names = map[string]struct{}{}
		t.nsServices[k.Namespace] = names
	}
	names[k.Name] = struct{}{}
	a.service(k)
	serviceGateways(t.s, k, a)
}

func (t *serviceTable) delete(k Key, a affected) {
	old, ok := t.services[k]
	if !ok {
		return
	}
	t.unindex(k, old)
	delete(t.services, k)
	if names := t.nsServices[k.Namespace]; names != nil {
		delete(names, k.Name)
		if len(names) == 0 {
			delete(t.nsServices, k.Namespace)
		}
	}
	a.service(k)
	serviceGateways(t.s, k, a)
}

func (t *serviceTable) each(f func(Key)) {
	for k := range t.services {
		f(k)
	}
}

func (t *serviceTable) unindex(k Key, svc *corev1.Service) {
	for _, ip := range clusterIPs(svc) {
		if t.byIP[ip] == k {
			delete(t.byIP, ip)
		}
	}
}

func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	out := ips[:0:0]
	for _, ip := range ips {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	return out
}
