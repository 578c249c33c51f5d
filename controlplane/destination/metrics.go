package destination

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	streams  *prometheus.GaugeVec
	updates  *prometheus.CounterVec
	computes *prometheus.CounterVec
	held     prometheus.Counter
	notFound prometheus.Counter

	adds, removes, noEndpoints, profiles prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_destination_streams",
			Help: "Open destination API streams by RPC (get, get_profile, register).",
		}, []string{"rpc"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_destination_updates_total",
			Help: "Messages sent on destination API streams by RPC and kind (add, remove, no_endpoints, profile).",
		}, []string{"rpc", "kind"}),
		computes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_destination_computes_total",
			Help: "Computations of an authority's answer (shared by the streams asking for it) on a store change or a resync, by RPC.",
		}, []string{"rpc"}),
		held: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_destination_startup_held_total",
			Help: "Get streams whose empty first answer was held during the startup grace period (--startup-grace).",
		}),
		notFound: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_destination_not_found_total",
			Help: "Get streams for an authority that names no service the control plane knows (their first answer was no_endpoints with exists=false).",
		}),
	}
	// Present from the start, so dashboards see zeros rather than nothing.
	for _, rpc := range []string{"get", "get_profile", "register"} {
		m.streams.WithLabelValues(rpc)
	}
	m.computes.WithLabelValues("get")
	m.computes.WithLabelValues("get_profile")
	m.adds = m.updates.WithLabelValues("get", "add")
	m.removes = m.updates.WithLabelValues("get", "remove")
	m.noEndpoints = m.updates.WithLabelValues("get", "no_endpoints")
	m.profiles = m.updates.WithLabelValues("get_profile", "profile")
	if reg != nil {
		reg.MustRegister(m.streams, m.updates, m.computes, m.held, m.notFound)
	}
	return m
}
