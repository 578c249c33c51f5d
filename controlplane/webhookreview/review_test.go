package webhookreview

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type fakeReview struct {
	Request *struct{ UID string } `json:"request"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, method, body string
		code               int // 0: decoded
	}{
		{"a review", http.MethodPost, `{"request":{"UID":"u1"}}`, 0},
		{"not a POST", http.MethodGet, "", http.StatusMethodNotAllowed},
		{"too large", http.MethodPost, `{"request":{"UID":"` + strings.Repeat("x", 64) + `"}}`, http.StatusRequestEntityTooLarge},
		{"not JSON", http.MethodPost, `{"request":`, http.StatusBadRequest},
		{"no request", http.MethodPost, `{}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			var v fakeReview
			ok := Decode(w, httptest.NewRequest(tc.method, "/", strings.NewReader(tc.body)), 48, "test Review", &v, func() bool { return v.Request != nil })
			if ok != (tc.code == 0) {
				t.Fatalf("Decode = %v, answered %d %q", ok, w.Code, w.Body)
			}
			if ok {
				if v.Request.UID != "u1" || w.Body.Len() != 0 {
					t.Fatalf("decoded %+v, answered %q", v.Request, w.Body)
				}
				return
			}
			if w.Code != tc.code || !strings.Contains(w.Body.String(), "test Review") {
				t.Fatalf("answered %d %q, want %d naming the review", w.Code, w.Body, tc.code)
			}
			if tc.code == http.StatusMethodNotAllowed && w.Header().Get("Allow") != http.MethodPost {
				t.Fatalf("Allow = %q", w.Header().Get("Allow"))
			}
		})
	}
}

func TestEncode(t *testing.T) {
	w := httptest.NewRecorder()
	Encode(w, map[string]string{"kind": "AdmissionReview"})
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" || w.Body.String() != `{"kind":"AdmissionReview"}` {
		t.Fatalf("answered %d %q %q", w.Code, w.Header(), w.Body)
	}
}
