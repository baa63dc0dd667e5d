//go:build !linux

package main

// keepSysmonAwake: only measured on Linux, so elsewhere the runtime keeps its default.
func keepSysmonAwake(args []string) {}
