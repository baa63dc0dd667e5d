// Package outbound owns yubin's SMTP client and the delivery of one message
// to one destination domain (DESIGN.md, "the path of one message", step 5):
// finding where to connect (static route, MX records, the implicit MX or
// the null MX), choosing the TLS policy (opportunistic STARTTLS, MTA-STS,
// REQUIRETLS, what a route demands), running one SMTP transaction for all
// the recipients of the domain and reporting a final reply per recipient
// with a timeline of the attempts. It does not queue, retry or bounce: the
// queue calls Deliver and acts on the replies (2xx delivered, 4xx retry,
// 5xx bounce).
//
// The client is ours, on the wire package internal/smtp, because an
// internet MTA must control what libraries hard-code (see DESIGN.md,
// "Protocol libraries"). Its rules:
//
//   - every read and write has a deadline (RFC 5321 4.5.3.2) and obeys the
//     context; after a timeout, an I/O error, a malformed reply or a 421,
//     the connection is discarded;
//   - replies are matched to commands in order, also when pipelined
//     (RFC 2920): a recipient counts as accepted only once its own 2xx
//     has been read, and delivered only once the final reply to the data has;
//   - extensions are used only when the peer announces them, whatever the
//     case of their names; a message that needs one the peer lacks
//     (SMTPUTF8, REQUIRETLS) is refused with a clear reason;
//   - certificates are verified by this package, after the handshake, so
//     that opportunistic TLS can go on over an unverified certificate and
//     record why it was not verified, and a policy (MTA-STS enforce,
//     REQUIRETLS, a route with TLS "starttls") can refuse it.
package outbound
