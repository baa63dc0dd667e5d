package netutil

import "syscall"

const inheritKeepAlive = true

func setListenerKeepAlive(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, v int }{
			{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
			{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		} {
			if serr = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}
