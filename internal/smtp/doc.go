// Package smtp owns the SMTP wire format that yubin's SMTP server and its
// SMTP client share, and nothing above it:
//
//   - replies (Reply): the three-digit code, the RFC 3463 enhanced status
//     code and the text lines, written and read in the multi-line form of
//     RFC 5321 4.2. A Reply is also the one protocol error type: code that
//     refuses something returns a *Reply, and the session writes it.
//   - command lines (ReadLine, ParseCommand): bounded reading of one line and
//     its split into verb and argument (RFC 5321 4.1.1, 4.5.3.1.4).
//   - the MAIL and RCPT arguments (ParsePathArg): the path in angle brackets,
//     an optional source route, and the ESMTP parameters (RFC 5321 4.1.2,
//     RFC 6531 for UTF-8 mailboxes).
//   - DATA content (DataReader, NewDataWriter): the transparency procedure of
//     RFC 5321 4.5.2 in both directions, with the bare CR / bare LF check
//     that defends against SMTP smuggling (CVE-2023-51764).
//
// The package does no I/O beyond the readers and writers it is handed and
// keeps no state between calls. Which command is valid when, what a
// parameter means, whether a sender is allowed and how an address is
// normalised belong to the server, the client and the address package.
package smtp
