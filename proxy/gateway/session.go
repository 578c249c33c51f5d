package gateway

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strconv"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// session is a rule's session persistence: a cookie or header naming the
// backend a client was sent to, so that its next requests go there too.
// (It pins the backend of the rule; the endpoint within it is the
// balancer's choice.)
type session struct {
	cookie    bool
	name      string
	maxAge    time.Duration // the cookie's Max-Age: a permanent cookie's absolute timeout
	permanent bool
}

func compileSession(sp *gatewaypb.SessionPersistence) (*session, error) {
	s := &session{name: sp.GetName(), permanent: sp.GetPermanentCookie(), maxAge: sp.GetAbsoluteTimeout().AsDuration()}
	switch sp.GetType() {
	case gatewaypb.SessionPersistence_COOKIE:
		s.cookie = true
	case gatewaypb.SessionPersistence_HEADER:
		if s.permanent {
			return nil, errors.New("permanent_cookie: set on a HEADER session; only cookies are permanent")
		}
	default:
		return nil, fmt.Errorf("type: %v is not COOKIE or HEADER", sp.GetType())
	}
	if s.name == "" {
		return nil, errors.New("name: empty; the cookie or header name is required")
	}
	if s.permanent && s.maxAge <= 0 {
		return nil, errors.New("absolute_timeout: a permanent cookie needs one (its Max-Age)")
	}
	return s, nil
}

// token names a backend in a session cookie or header: stable across
// snapshots as long as the backend is.
func token(be *backend) string {
	h := fnv.New64a()
	h.Write([]byte(be.label()))
	return strconv.FormatUint(h.Sum64(), 36)
}

// pinned is the backend the request's session names, nil for none (or one
// the rule no longer sends traffic to).
func (s *session) pinned(r *http.Request, rl *rule) *backend {
	var v string
	if s.cookie {
		c, err := r.Cookie(s.name)
		if err != nil {
			return nil
		}
		v = c.Value
	} else {
		v = r.Header.Get(s.name)
	}
	if v == "" {
		return nil
	}
	for _, be := range rl.backends {
		if be.token == v && be.weight > 0 {
			return be
		}
	}
	return nil
}

// pin tells the client the backend its session goes to.
func (s *session) pin(w http.ResponseWriter, be *backend) {
	if !s.cookie {
		w.Header().Set(s.name, be.token)
		return
	}
	c := &http.Cookie{Name: s.name, Value: be.token, Path: "/", HttpOnly: true}
	if s.permanent {
		c.MaxAge = int(s.maxAge / time.Second)
	}
	http.SetCookie(w, c)
}
