package conversion

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func split(version, name, weights string) runtime.RawExtension {
	return runtime.RawExtension{Raw: []byte(`{"apiVersion":"split.smi-spec.io/` + version + `","kind":"TrafficSplit","metadata":{"name":"` + name + `","namespace":"shop","uid":"u-` + name + `"},` +
		`"spec":{"service":"web","backends":[{"service":"web-stable","weight":` + strings.Split(weights, ",")[0] + `},{"service":"web-canary","weight":` + strings.Split(weights, ",")[1] + `}]}}`)}
}

func post(t *testing.T, url string, body []byte) (*http.Response, apiextensionsv1.ConversionReview) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review apiextensionsv1.ConversionReview
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
			t.Fatal(err)
		}
	}
	return resp, review
}

func review(to string, objs ...runtime.RawExtension) []byte {
	b, _ := json.Marshal(apiextensionsv1.ConversionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "ConversionReview"},
		Request:  &apiextensionsv1.ConversionRequest{UID: "req-1", DesiredAPIVersion: to, Objects: objs},
	})
	return b
}

func TestHandlerConverts(t *testing.T) {
	srv := httptest.NewServer(Handler(nil))
	defer srv.Close()
	resp, rv := post(t, srv.URL+Path, review("split.smi-spec.io/v1alpha2",
		split("v1alpha1", "a", `"80","20"`), split("v1alpha4", "b", `90,10`), split("v1alpha1", "c", `"750m","250m"`)))
	if resp.StatusCode != http.StatusOK || rv.Response == nil {
		t.Fatalf("status %d, response %v", resp.StatusCode, rv.Response)
	}
	if rv.Kind != "ConversionReview" || rv.APIVersion != "apiextensions.k8s.io/v1" || rv.Response.UID != "req-1" || rv.Response.Result.Status != metav1.StatusSuccess {
		t.Fatalf("review %+v", rv)
	}
	if len(rv.Response.ConvertedObjects) != 3 {
		t.Fatalf("%d objects, want 3", len(rv.Response.ConvertedObjects))
	}
	for i, want := range []string{`"weight":80},{"service":"web-canary","weight":20}`, `"weight":90},{"service":"web-canary","weight":10}`, `"weight":750},{"service":"web-canary","weight":250}`} {
		got := string(rv.Response.ConvertedObjects[i].Raw)
		if !strings.Contains(got, `"apiVersion":"split.smi-spec.io/v1alpha2"`) || !strings.Contains(got, want) || !strings.Contains(got, `"uid":"u-`) {
			t.Errorf("object %d: %s, want %s", i, got, want)
		}
	}
}

// A failed conversion is HTTP 200 with result Failure and the reason, for
// the API server to show; nothing is converted.
func TestHandlerFailure(t *testing.T) {
	srv := httptest.NewServer(Handler(nil))
	defer srv.Close()
	resp, rv := post(t, srv.URL+Path, review("split.smi-spec.io/v1alpha4", split("v1alpha1", "a", `"80","20"`), split("v1alpha1", "bad", `"80","-20"`)))
	if resp.StatusCode != http.StatusOK || rv.Response == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := rv.Response
	if r.Result.Status != metav1.StatusFailure || len(r.ConvertedObjects) != 0 || r.UID != "req-1" ||
		r.Result.Message != `TrafficSplit shop/bad: spec.backends[1].weight: -20 is negative: a weight is a number from 0 (an integer, or a quantity such as "500m")` {
		t.Fatalf("response %+v", r)
	}
	_, rv = post(t, srv.URL+Path, review("split.smi-spec.io/v2", split("v1alpha1", "a", `"80","20"`)))
	if rv.Response.Result.Status != metav1.StatusFailure || !strings.Contains(rv.Response.Result.Message, "the served versions are [v1alpha1 v1alpha2 v1alpha3 v1alpha4]") {
		t.Fatalf("response %+v", rv.Response)
	}
}

func TestHandlerBadRequests(t *testing.T) {
	srv := httptest.NewServer(Handler(nil))
	defer srv.Close()
	for _, body := range []string{`{`, `{"apiVersion":"apiextensions.k8s.io/v1","kind":"ConversionReview"}`} {
		resp, _ := post(t, srv.URL+Path, []byte(body))
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d", body, resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", resp.StatusCode)
	}
}

// The API server sends reviews concurrently.
func TestHandlerConcurrent(t *testing.T) {
	srv := httptest.NewServer(Handler(nil))
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			to := []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}[i%4]
			resp, err := http.Post(srv.URL+Path, "application/json", bytes.NewReader(review("split.smi-spec.io/"+to, split("v1alpha1", "a", `"1","500m"`))))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var rv apiextensionsv1.ConversionReview
			if err := json.NewDecoder(resp.Body).Decode(&rv); err != nil || rv.Response.Result.Status != metav1.StatusSuccess {
				t.Errorf("%s: %v %+v", to, err, rv.Response)
			}
		})
	}
	wg.Wait()
}
