package h2client

import "github.com/meridian-mesh/meridian/proxy/internal/h2msg"

// The request sent for an http.Request (Go's transport's, checked before
// anything is encoded) and a response's head are h2msg's, shared with the
// loops' client (h2loop).

var errRequestHeaderListSize = h2msg.ErrRequestHeaderListSize
