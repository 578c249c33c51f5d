//go:build !linux

package exetrim

func trim() (int64, int64, error) { return 0, 0, nil }
