package reconciler

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

// PodTemplateHash is Argo Rollouts' pod-template hash (utils/hash): FNV-32a
// over the template's JSON, then the collision count's 4 little-endian
// bytes in an 8-byte buffer, encoded with rand.SafeEncodeString. The same template gives the same hash as Argo's, so
// ReplicaSets made by Argo are recognised after a move.
func PodTemplateHash(t *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	b, err := json.Marshal(t)
	if err != nil {
		panic(err) // a PodTemplateSpec always marshals
	}
	h.Write(b)
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}
