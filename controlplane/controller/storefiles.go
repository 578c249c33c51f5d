package controller

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/controlplane/store/local"
)

// storeFiles is what local mode's directory holds as last loaded: which
// files are applied and which are rejected. It is exported as metrics and
// on the admin server's /store, which `meridian check --local` reads, so
// that a rejected file is seen without reading the controller's log.
type storeFiles struct {
	dir    string
	mu     sync.Mutex
	status local.Status
	loaded bool
}

func (s *storeFiles) set(st local.Status) {
	s.mu.Lock()
	s.status, s.loaded = st, true
	s.mu.Unlock()
}

func (s *storeFiles) get() (local.Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.loaded
}

var (
	rejectedFilesDesc = prometheus.NewDesc("meridian_store_rejected_files",
		"Files of the local store's directory whose current content is rejected (1 per file; the file's last good objects, if any, keep serving). See the controller's log or /store for why.",
		[]string{"file"}, nil)
	storeObjectsDesc = prometheus.NewDesc("meridian_store_objects",
		"Objects served from the local store's directory.", nil, nil)
)

// Describe and Collect make storeFiles a prometheus.Collector: the series
// follow the last load, so a fixed or removed file's series goes.
func (s *storeFiles) Describe(ch chan<- *prometheus.Desc) {
	ch <- rejectedFilesDesc
	ch <- storeObjectsDesc
}

func (s *storeFiles) Collect(ch chan<- prometheus.Metric) {
	st, loaded := s.get()
	if !loaded {
		return
	}
	ch <- prometheus.MustNewConstMetric(storeObjectsDesc, prometheus.GaugeValue, float64(st.Objects))
	for _, f := range st.Rejected() {
		ch <- prometheus.MustNewConstMetric(rejectedFilesDesc, prometheus.GaugeValue, 1, f.Path)
	}
}

// StoreReport is the JSON of the admin server's GET /store (local mode).
type StoreReport struct {
	Dir      string            `json:"dir"`
	Loaded   bool              `json:"loaded"`
	Objects  int               `json:"objects"`
	Rejected int               `json:"rejected"`
	Files    []StoreFileReport `json:"files"`
}

// StoreFileReport is one file of a StoreReport.
type StoreFileReport struct {
	File    string `json:"file"`
	Objects int    `json:"objects"`         // served: of the current content, or the last good one
	Error   string `json:"error,omitempty"` // why the current content is rejected
}

func (s *storeFiles) report() StoreReport {
	st, loaded := s.get()
	r := StoreReport{Dir: s.dir, Loaded: loaded, Objects: st.Objects, Files: []StoreFileReport{}}
	for _, f := range st.Files {
		fr := StoreFileReport{File: f.Path, Objects: f.Objects}
		if f.Err != nil {
			fr.Error = f.Err.Error()
			r.Rejected++
		}
		r.Files = append(r.Files, fr)
	}
	return r
}

func (s *storeFiles) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.report())
}
