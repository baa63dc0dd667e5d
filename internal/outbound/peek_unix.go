//go:build unix

package outbound

import (
	"net"
	"syscall"
)

// peekAlive looks at an idle TCP connection without waiting: alive when nothing can be read
// (no bytes, no end of file). ok is false when nc is not a socket (a test's pipe).
func peekAlive(nc net.Conn) (alive, ok bool) {
	sc, isSock := nc.(syscall.Conn)
	if !isSock {
		return false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // an answer now, never a wait for readiness
	})
	return alive, err == nil
}
