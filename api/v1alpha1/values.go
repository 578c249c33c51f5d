package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Duration is a Go duration string such as "250ms", "10s" or "1m30s".
//
// +kubebuilder:validation:Pattern=`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
// +kubebuilder:validation:MaxLength=32
type Duration string

// Parse returns the duration; the empty Duration is 0.
func (d Duration) Parse() (time.Duration, error) {
	if d == "" {
		return 0, nil
	}
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("negative duration %q", string(d))
	}
	return v, nil
}

// Ratio is a non-negative decimal number such as 0.2. It is a JSON number
// on the wire (so profiles written for Linkerd, `retryRatio: 0.2`, carry
// over) and keeps its decimal text in Go, so it round-trips exactly through
// the API server without floats in the API types. Decoding also accepts a
// quoted number ("0.2").
//
// +kubebuilder:validation:Type=number
type Ratio string

// Float64 returns the ratio's value; the empty Ratio is 0.
func (r Ratio) Float64() (float64, error) {
	if r == "" {
		return 0, nil
	}
	return strconv.ParseFloat(string(r), 64)
}

// MarshalJSON writes the ratio as a JSON number.
func (r Ratio) MarshalJSON() ([]byte, error) {
	if r == "" {
		return []byte("0"), nil
	}
	f, err := r.Float64()
	if err != nil {
		return nil, fmt.Errorf("ratio %q is not a number", string(r))
	}
	if isJSONNumber([]byte(r)) {
		return []byte(r), nil
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// UnmarshalJSON reads a JSON number, a string holding a number, or null.
func (r *Ratio) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*r = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return fmt.Errorf("ratio %q is not a number", s)
		}
		*r = Ratio(s)
		return nil
	case isJSONNumber(b):
		*r = Ratio(b)
		return nil
	}
	return fmt.Errorf("ratio must be a number, got %s", b)
}

func isJSONNumber(b []byte) bool {
	if len(b) == 0 || !(b[0] == '-' || (b[0] >= '0' && b[0] <= '9')) {
		return false
	}
	var n json.Number
	return json.Unmarshal(b, &n) == nil
}
