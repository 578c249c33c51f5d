package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// GroupLocalStore checks a controller in local mode (--store=dir:PATH)
// through its admin server: no Kubernetes API is involved.
const GroupLocalStore = "meridian-local-store"

// LocalGroups: is a local-mode controller serving its whole store directory?
var LocalGroups = []string{GroupLocalStore}

// DefaultLocalAdmin is `meridian controller --admin-addr`'s default, as
// reached from the same machine.
const DefaultLocalAdmin = "127.0.0.1:9996"

// localStore is the controller's GET /store (controller.StoreReport; the
// shape is repeated here so that check does not import the controller).
type localStore struct {
	Dir      string `json:"dir"`
	Loaded   bool   `json:"loaded"`
	Objects  int    `json:"objects"`
	Rejected int    `json:"rejected"`
	Files    []struct {
		File    string `json:"file"`
		Objects int    `json:"objects"`
		Error   string `json:"error"`
	} `json:"files"`
}

func localStoreChecks(o Options) []Check {
	admin := o.LocalAdmin
	if admin == "" {
		admin = DefaultLocalAdmin
	}
	var rep localStore
	return []Check{
		{
			Group:       GroupLocalStore,
			Description: "can reach the local controller's admin server",
			Hint:        "meridian controller --store=dir:PATH (its --admin-addr, default :9996; here: meridian check --local=HOST:PORT)",
			Fatal:       true,
			Retry:       true,
			Run: func(ctx context.Context, _ *State) error {
				r, err := fetchLocalStore(ctx, admin)
				rep = r
				return err
			},
		},
		{
			Group:       GroupLocalStore,
			Description: "the controller has loaded its store directory",
			Hint:        "the controller's log says why the directory cannot be read",
			Retry:       true,
			Run: func(ctx context.Context, _ *State) error {
				if !rep.Loaded { // retried: look again
					r, err := fetchLocalStore(ctx, admin)
					if err != nil {
						return err
					}
					rep = r
				}
				if !rep.Loaded {
					return fmt.Errorf("the store directory %s has not been loaded yet", rep.Dir)
				}
				return nil
			},
		},
		{
			Group:       GroupLocalStore,
			Description: "every file of the store directory is applied",
			Hint:        "fix the files named; until then each serves its last good objects, if it had any, and the other files apply",
			Run: func(context.Context, *State) error {
				if !rep.Loaded {
					return Skip("the directory is not loaded")
				}
				var errs []string
				for _, f := range rep.Files {
					switch {
					case f.Error == "":
					case f.Objects > 0:
						errs = append(errs, fmt.Sprintf("%s (the %d objects of its last good content keep serving)", f.Error, f.Objects))
					default:
						errs = append(errs, f.Error+" (none of its objects are served)")
					}
				}
				if len(errs) > 0 {
					return fmt.Errorf("%d of %d files in %s rejected:\n%s", len(errs), len(rep.Files), rep.Dir, strings.Join(errs, "\n"))
				}
				return nil
			},
		},
	}
}

func fetchLocalStore(ctx context.Context, admin string) (localStore, error) {
	var rep localStore
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/store", nil)
	if err != nil {
		return rep, fmt.Errorf("--local=%q: want the admin server's HOST:PORT: %w", admin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return rep, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return rep, errors.New("GET http://" + admin + "/store: 404: not a controller in local mode (--store=dir:PATH), or an older one")
	}
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("GET http://%s/store: %s", admin, resp.Status)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("GET http://%s/store: %w", admin, err)
	}
	return rep, nil
}
