package local

import (
	"bytes"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// statusDoc is one Rollout's document in the status file.
type statusDoc struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Status v1alpha1.RolloutStatus `json:"status"`
}

// writeStatuses writes every Rollout's status into the status file at once
// (written beside it, then renamed), so the controller's next load of the
// directory applies them in one store update.
func (d *Driver) writeStatuses() error {
	d.mu.Lock()
	keys := make([]store.Key, 0, len(d.rollouts))
	for k := range d.rollouts {
		keys = append(keys, k)
	}
	sortKeys(keys)
	var b bytes.Buffer
	b.WriteString("# Written by the local rollout driver (controlplane/rollouts/local): the status of\n" +
		"# each Rollout it drives, which the controller compiles into the traffic split.\n")
	for _, k := range keys {
		var doc statusDoc
		doc.APIVersion, doc.Kind = v1alpha1.GroupVersion.String(), "Rollout"
		doc.Metadata.Name, doc.Metadata.Namespace = k.Name, k.Namespace
		doc.Status = *d.rollouts[k].status.DeepCopy()
		y, err := yaml.Marshal(doc)
		if err != nil {
			d.mu.Unlock()
			return err
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	// The directory is polled by size and modification time: each write
	// gets a later time than the last, whatever the clock's granularity.
	mtime := time.Now()
	if !mtime.After(d.written) {
		mtime = d.written.Add(time.Millisecond)
	}
	d.written = mtime
	d.mu.Unlock()
	return writeFile(filepath.Join(d.o.Dir, StatusFile), b.Bytes(), mtime)
}

// writeFile replaces path with data at once: written to a hidden file
// beside it (the store skips names starting with a dot), then renamed.
func writeFile(path string, data []byte, mtime time.Time) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func sortKeys(ks []store.Key) {
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j].String() < ks[j-1].String(); j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
}
