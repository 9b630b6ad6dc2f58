package hook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

// Postfix SMTPD policy delegation (SMTPD_POLICY_README): a request is
// name=value lines ended by an empty line; the answer is
// "action=<access(5) action>" and an empty line. Postfix keeps the
// connection and sends the next request on it.
//
// A banned or blocked client address gets "421 4.7.0 ...": at CONNECT (with
// smtpd_delay_reject = no) Postfix sends it instead of the greeting and
// hangs up, and at any later state it hangs up too. A locked sasl_username
// (from an address that is not exempt) gets "450 4.7.1 ..." at MAIL, RCPT
// or wherever the policy is asked once AUTH has succeeded: a temporary
// refusal, as the lock is. Everything else gets DUNNO, so the next
// restriction decides. A malformed request is not answered: the
// connection is closed, as the protocol asks, and Postfix applies its
// default_action (DUNNO in the documented configuration).

const (
	postfixAddressAction = "421 4.7.0 "
	postfixLoginAction   = "450 4.7.1 "
)

// errMalformed is a request that does not follow the protocol.
var errMalformed = errors.New("malformed request")

// policyRequest holds the attributes the hook uses; the others are read
// and ignored.
type policyRequest struct {
	request bool       // request=smtpd_access_policy was present
	client  netip.Addr // invalid when absent or not an address
	sasl    string
}

func (s *Server) servePostfix(c net.Conn) {
	lc := newLineConn(c, s.cfg.Load().Limits)
	pm := s.m.proto[protoPostfix]
	for {
		req, err := readPolicyRequest(lc)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				pm.requests[outError].Inc()
				s.log.Warn("malformed postfix policy request; closing the connection", "error", err)
			}
			return
		}
		t0 := time.Now()
		r := s.check(req.client, req.sasl)
		out := outAllow
		lc.w.WriteString("action=")
		switch {
		case !r.refused:
			lc.w.WriteString("DUNNO")
		case r.login:
			out = outDeny
			lc.w.WriteString(postfixLoginAction)
			lc.w.WriteString(r.public())
		default:
			out = outDeny
			lc.w.WriteString(postfixAddressAction)
			lc.w.WriteString(r.public())
		}
		lc.w.WriteString("\n\n")
		pm.requests[out].Inc()
		pm.duration.Observe(time.Since(t0).Seconds())
		if lc.tooOld(t0) {
			lc.flush()
			return
		}
	}
}

// readPolicyRequest reads one attribute block, bounded by MaxLine per
// line and MaxRequest in all.
func readPolicyRequest(lc *lineConn) (policyRequest, error) {
	var req policyRequest
	size := 0
	for first := true; ; first = false {
		line, err := lc.readLine(first)
		if err != nil {
			if !first && errors.Is(err, io.EOF) {
				return req, fmt.Errorf("%w: connection closed inside a request", errMalformed)
			}
			if errors.Is(err, errLineTooLong) {
				return req, fmt.Errorf("%w: a line is longer than %d bytes", errMalformed, lc.lim.MaxLine)
			}
			return req, err
		}
		if len(line) == 0 {
			if first {
				return req, fmt.Errorf("%w: empty request", errMalformed)
			}
			break
		}
		if size += len(line) + 1; size > lc.lim.MaxRequest {
			return req, fmt.Errorf("%w: longer than %d bytes", errMalformed, lc.lim.MaxRequest)
		}
		name, value, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			return req, fmt.Errorf("%w: a line is not name=value", errMalformed)
		}
		switch string(name) {
		case "request":
			if string(value) != "smtpd_access_policy" {
				return req, fmt.Errorf("%w: request=%q, want smtpd_access_policy", errMalformed, truncate(value, 32))
			}
			req.request = true
		case "client_address":
			// "unknown" or garbage checks the login alone.
			req.client, _ = netip.ParseAddr(string(value))
			req.client = req.client.Unmap()
		case "sasl_username":
			req.sasl = string(value)
		}
	}
	if !req.request {
		return req, fmt.Errorf("%w: no request=smtpd_access_policy", errMalformed)
	}
	return req, nil
}
