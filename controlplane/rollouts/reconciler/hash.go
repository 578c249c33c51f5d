package reconciler

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/rand"
)

// PodTemplateHash is Argo Rollouts' (and the Deployment controller's)
// pod-template hash: FNV-32a over the template's dump.ForHash form, then the
// collision count's 4 little-endian bytes in an 8-byte buffer, encoded with
// rand.SafeEncodeString. The same template gives the same hash as Argo's, so
// ReplicaSets made by Argo are recognised after a move.
func PodTemplateHash(t *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(*t))
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}
