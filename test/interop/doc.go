// Package interop holds tests in which real mail programs (swaks, Python's smtplib) talk to
// an in-process yubin, and the test reads back what was stored. It has no non-test code.
package interop
