//go:build !linux

package redirect

import "errors"

var errNotLinux = errors.New("redirect: nftables exists only on Linux")

// Apply installs the rules of cfg; only Linux has nftables.
func Apply(Config) error { return errNotLinux }

// Remove deletes the rules Apply installed; only Linux has nftables.
func Remove() error { return errNotLinux }
