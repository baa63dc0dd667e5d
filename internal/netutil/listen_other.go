//go:build !linux

package netutil

import "syscall"

const inheritKeepAlive = false

func setListenerKeepAlive(string, string, syscall.RawConn) error { return nil }
