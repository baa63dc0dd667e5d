//go:build !unix

package outbound

import "net"

func peekAlive(net.Conn) (alive, ok bool) { return false, false }
