package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// session is a rule's session persistence (Gateway API SessionPersistence):
// a cookie or header whose value, the session token, names the backend and
// the endpoint within it that a client was sent to and when the session
// began, so that its next requests go to that endpoint while it is ready
// and the session has not outlived absoluteTimeout.
//
// A token is "<backend>.<endpoint>.<start>": the backend's token (a hash
// of its name, stable across snapshots), a hash of the endpoint's address
// (pod addresses are not shown to clients), and the session's start in
// Unix seconds, base 36. It is not signed: a client that forges one can
// only choose among the endpoints the rule sends traffic to, and extend
// its own session.
type session struct {
	cookie    bool
	name      string
	absolute  time.Duration // 0: no timeout
	permanent bool          // the cookie carries Max-Age = absolute
	now       func() time.Time
}

// defaultSessionName is the cookie or header name of a session without
// one (SessionName is optional; its name is implementation-specific): one
// per rule, so that two rules' sessions do not overwrite each other.
func defaultSessionName(ruleRef string) string {
	return "meridian-session-" + strconv.FormatUint(fnv64a(ruleRef), 36)
}

func compileSession(sp *gatewaypb.SessionPersistence, ruleRef string) (*session, error) {
	s := &session{name: sp.GetName(), permanent: sp.GetPermanentCookie(), absolute: sp.GetAbsoluteTimeout().AsDuration(), now: time.Now}
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
		s.name = defaultSessionName(ruleRef)
	}
	// A cookie's name and a header's are both tokens (RFC 6265, RFC 9110).
	if !httpguts.ValidHeaderFieldName(s.name) {
		what := "header"
		if s.cookie {
			what = "cookie"
		}
		return nil, fmt.Errorf("name: %q is not a %s name (a token: letters, digits and !#$%%&'*+-.^_`|~)", s.name, what)
	}
	if s.absolute < 0 {
		return nil, errors.New("absolute_timeout: must not be negative")
	}
	if s.permanent && s.absolute == 0 {
		return nil, errors.New("absolute_timeout: a permanent cookie needs one (its Max-Age)")
	}
	return s, nil
}

// token names a backend in a session token: stable across snapshots as
// long as the backend is.
func token(be *backend) string { return strconv.FormatUint(fnv64a(be.label()), 36) }

// fnv64a is FNV-1a of s (hash/fnv's, without its allocations): the
// hashes in session tokens, which must be the same on every replica and
// across restarts. An endpoint's is computed for each of the backend's
// endpoints when a session's request is balanced.
func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// pinned is a request's session: the backend and endpoint its token names
// and when it began. ok is false when the request brings no session, or
// one that is malformed, expired, or names a backend the rule no longer
// sends traffic to: it starts a new one.
type pinned struct {
	be       *backend
	endpoint uint64 // the endpoint's address, hashed (fnv64a)
	start    int64  // Unix seconds
}

func (s *session) pinned(r *http.Request, rl *rule) (p pinned, ok bool) {
	var v string
	if s.cookie {
		c, err := r.Cookie(s.name)
		if err != nil {
			return p, false
		}
		v = c.Value
	} else {
		v = r.Header.Get(s.name)
	}
	bt, rest, ok1 := strings.Cut(v, ".")
	et, st, ok2 := strings.Cut(rest, ".")
	start, err := strconv.ParseInt(st, 36, 64)
	ep, err2 := strconv.ParseUint(et, 36, 64)
	if !ok1 || !ok2 || err != nil || err2 != nil {
		return p, false
	}
	if s.absolute > 0 && s.now().Sub(time.Unix(start, 0)) >= s.absolute {
		return p, false // the session has ended (absoluteTimeout)
	}
	for _, be := range rl.backends {
		if be.token == bt && be.weight > 0 {
			return pinned{be: be, endpoint: ep, start: start}, true
		}
	}
	return p, false
}

// prefer is the request's Exchange.Prefer: the endpoint the session names.
func (p pinned) prefer(up *httpproxy.Upstream) bool { return fnv64a(up.Addr) == p.endpoint }

// writer gives the client the session's token with the response when it
// is new or names another endpoint than the one the request brought (that
// one was not ready): the endpoint is known only once the Forwarder picked
// it, so the token is set at WriteHeader, from the Exchange's Labels.Target.
// The proxy's own answers (an error before or instead of a backend's
// response) set none.
type sessionWriter struct {
	http.ResponseWriter
	s       *session
	x       *httpproxy.Exchange
	p       pinned
	had     bool // the request brought a valid session (p)
	written bool
}

func (w *sessionWriter) WriteHeader(code int) {
	if !w.written && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.written = true
		w.setToken()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *sessionWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *sessionWriter) setToken() {
	h := w.ResponseWriter.Header()
	if w.x.Labels.Target == "" || h.Get(httpproxy.ErrorHeader) != "" {
		return // no endpoint answered
	}
	ep := fnv64a(w.x.Labels.Target)
	if w.had && ep == w.p.endpoint {
		return // the client has it
	}
	start := w.p.start
	if !w.had {
		start = w.s.now().Unix()
	}
	v := w.p.be.token + "." + strconv.FormatUint(ep, 36) + "." + strconv.FormatInt(start, 36)
	if !w.s.cookie {
		h.Set(w.s.name, v)
		return
	}
	c := &http.Cookie{Name: w.s.name, Value: v, Path: "/", HttpOnly: true}
	if w.s.permanent {
		// Max-Age counts from now; the session from its start.
		left := w.s.absolute - w.s.now().Sub(time.Unix(start, 0))
		c.MaxAge = max(int((left+time.Second-1)/time.Second), 1) // rounded up: a new session's is absolute
	}
	if s := c.String(); s != "" {
		h.Add("Set-Cookie", s)
	}
}

// Flush, FlushError and Unwrap keep what the wrapped writer can do (the
// Forwarder flushes, hijacks upgrades through http.ResponseController).
func (w *sessionWriter) Flush() { w.FlushError() }

func (w *sessionWriter) FlushError() error {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *sessionWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
