package netutil

import (
	"context"
	"net"
)

// ListenTCP opens a TCP listener whose accepted connections have TCP keep-alive (after 15s
// idle, every 15s, 9 probes: Go's defaults) without setting it on each of them: the options
// are set once on the listening socket, and Linux copies them to every accepted one. That
// saves four system calls per connection, which a server taking one short SMTP session after
// another notices. Elsewhere Go sets them per connection as usual.
func ListenTCP(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{}
	if inheritKeepAlive {
		lc.KeepAlive = -1 // not per connection: inherited from the listener
		lc.Control = setListenerKeepAlive
	}
	return lc.Listen(context.Background(), network, addr)
}
