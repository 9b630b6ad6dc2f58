package hook

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// policyRequest as Postfix 3.7 sends it (SMTPD_POLICY_README), with the
// attributes that matter filled in.
func postfixRequest(state, client, sasl string) string {
	return "request=smtpd_access_policy\nprotocol_state=" + state + "\nprotocol_name=ESMTP\n" +
		"client_address=" + client + "\nclient_name=unknown\nclient_port=45294\nreverse_client_name=unknown\n" +
		"server_address=127.0.0.1\nserver_port=25\nhelo_name=\nsender=\nrecipient=\nrecipient_count=0\n" +
		"queue_id=\ninstance=1a2b.6566e1c0.abcd.0\nsize=0\netrn_domain=\nstress=\nsasl_method=PLAIN\n" +
		"sasl_username=" + sasl + "\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n" +
		"ccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
}

// TestPostfixPolicy runs requests over one persistent connection, as
// Postfix does.
func TestPostfixPolicy(t *testing.T) {
	h := newTestHook(t, nil)
	h.ban(t, "203.0.113.7")
	h.lock(t, "alice@example.test")
	h.succeed(t, "192.0.2.1", "alice@example.test")
	c := dialLine(t, h.addr(t, protoPostfix, "unix"))
	for _, tc := range []struct {
		name, req, want string
	}{
		{"clean client at CONNECT", postfixRequest("CONNECT", "192.0.2.50", ""), "action=DUNNO"},
		{"banned client at CONNECT", postfixRequest("CONNECT", "203.0.113.7", ""),
			"action=421 4.7.0 too many failed logins from your address, try again later"},
		{"blocked network", postfixRequest("CONNECT", "198.51.100.20", ""), "action=421 4.7.0 access from your address is refused"},
		{"banned client later on", postfixRequest("RCPT", "203.0.113.7", "bob"),
			"action=421 4.7.0 too many failed logins from your address, try again later"},
		{"locked login at MAIL", postfixRequest("MAIL", "192.0.2.50", "Alice@example.test"),
			"action=450 4.7.1 login temporarily locked after too many failed logins, try again later"},
		{"locked login at RCPT", postfixRequest("RCPT", "192.0.2.50", "alice@example.test"),
			"action=450 4.7.1 login temporarily locked after too many failed logins, try again later"},
		{"locked login from its owner's address", postfixRequest("RCPT", "192.0.2.1", "alice@example.test"), "action=DUNNO"},
		{"another login", postfixRequest("RCPT", "192.0.2.50", "bob@example.test"), "action=DUNNO"},
		{"IPv6 client", postfixRequest("CONNECT", "2001:db8::5", ""), "action=DUNNO"},
		{"no client address", "request=smtpd_access_policy\nprotocol_state=RCPT\nsasl_username=alice@example.test\n\n",
			"action=450 4.7.1 login temporarily locked after too many failed logins, try again later"},
		{"CRLF lines", strings.ReplaceAll(postfixRequest("CONNECT", "203.0.113.7", ""), "\n", "\r\n"),
			"action=421 4.7.0 too many failed logins from your address, try again later"},
	} {
		c.send(tc.req)
		got := c.mustLine()
		if empty := c.mustLine(); got != tc.want || empty != "" {
			t.Errorf("%s: got %q + %q, want %q + an empty line", tc.name, got, empty, tc.want)
		}
	}
	if got := testutil.ToFloat64(h.m.proto[protoPostfix].requests[outDeny]); got != 7 {
		t.Errorf("denials counted: %v, want 7", got)
	}
}

// TestPostfixMalformed: a request that breaks the protocol is not
// answered and its connection is closed (Postfix then logs it and applies
// default_action); other connections carry on.
func TestPostfixMalformed(t *testing.T) {
	h := newTestHook(t, func(c *Config) {
		c.Limits.MaxLine = 200
		c.Limits.MaxRequest = 2048
	})
	a := h.addr(t, protoPostfix, "unix")
	good := dialLine(t, a)
	ask := func() {
		t.Helper()
		good.send(postfixRequest("CONNECT", "192.0.2.9", ""))
		if got := good.mustLine(); got != "action=DUNNO" {
			t.Fatalf("the good connection got %q", got)
		}
		good.mustLine()
	}
	ask()
	for _, tc := range []struct{ name, req string }{
		{"no request attribute", "protocol_state=CONNECT\nclient_address=192.0.2.9\n\n"},
		{"another request type", "request=junk\nclient_address=192.0.2.9\n\n"},
		{"a line without =", "request=smtpd_access_policy\nclient_address 192.0.2.9\n\n"},
		{"an empty request", "\n"},
		{"a line too long", "request=smtpd_access_policy\nccert_subject=" + strings.Repeat("x", 300) + "\n\n"},
		{"a request too large", "request=smtpd_access_policy\n" + strings.Repeat("ccert_subject="+strings.Repeat("y", 150)+"\n", 20) + "\n"},
		{"binary", "\x00\x01\x02\xff=\xfe\n\n"},
		{"cut off", "request=smtpd_access_policy\nclient_address=192.0.2.9\n"},
	} {
		c := dialLine(t, a)
		c.send(tc.req)
		if tc.name == "cut off" {
			c.Conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		if got, err := c.line(); err == nil || got != "" {
			t.Errorf("%s: answered %q (err %v); want the connection closed without an answer", tc.name, got, err)
		}
		ask()
	}
	if got := testutil.ToFloat64(h.m.proto[protoPostfix].requests[outError]); got != 8 {
		t.Errorf("errors counted: %v, want 8", got)
	}
}
