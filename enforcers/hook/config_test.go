package hook

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseListen(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "/run/mailban/hook.sock", want: "unix:/run/mailban/hook.sock"},
		{in: "unix:/run/mailban/hook.sock", want: "unix:/run/mailban/hook.sock"},
		{in: "127.0.0.1:9848", want: "tcp:127.0.0.1:9848"},
		{in: "[::1]:9848", want: "tcp:[::1]:9848"},
		{in: "localhost:9848", want: "tcp:localhost:9848"},
		{in: "127.0.0.1:0", want: "tcp:127.0.0.1:0"},
		{in: "hook.sock", err: "neither an absolute unix socket path nor host:port"},
		{in: "unix:hook.sock", err: "must be absolute"},
		{in: "/run/mailban/", err: "not a clean socket path"},
		{in: "/run//hook.sock", err: "not a clean socket path"},
		{in: "/" + strings.Repeat("x", 120), err: "longer than a unix socket path may be"},
		{in: "mail.example.org:9848", err: "must be an IP address or localhost"},
		{in: "127.0.0.1:http-alt", want: "tcp:127.0.0.1:http-alt"},
		{in: "127.0.0.1:99999", err: "is not a port number"},
	} {
		got, err := parseListen(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got.String() != tc.want):
			t.Errorf("%q: %v %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestValidateNamesEachField(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Native.Listen = []string{"/run/a.sock", "127.0.0.1:9848", "/run/a.sock"}
	cfg.Native.Group = "wheel:staff"
	cfg.Dovecot.Listen = []string{"127.0.0.1:9848"}
	cfg.Dovecot.APIHeader = "X-Key: x"
	cfg.Dovecot.Tarpit = 10 * time.Minute
	cfg.Nginx.Listen = []string{"127.0.0.1:9850"}
	cfg.Nginx.APIKey = "k"
	cfg.Nginx.Upstream = "ftp://auth"
	cfg.Limits.MaxLine = 10
	cfg.Limits.IdleTimeout = 0
	err := cfg.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a FieldError", e)
		}
		fields = append(fields, fe.Field)
	}
	want := []string{
		"native.listen[2]", "native.group", "dovecot.listen[0]", "dovecot.api-key", "dovecot.api-header",
		"dovecot.tarpit", "nginx.upstream", "limits.max-line", "limits.idle-timeout",
	}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("fields %v\nwant   %v\n%v", fields, want, err)
	}
	if def := DefaultConfig(); def.Validate() != nil {
		t.Errorf("the defaults do not validate: %v", def.Validate())
	}
}

func TestRepeatFilter(t *testing.T) {
	f := newRepeatFilter(3)
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	w := 10 * time.Minute
	steps := []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", time.Minute, false},
		{"b", time.Minute, true},
		{"a", 9 * time.Minute, false},
		{"a", 10 * time.Minute, true}, // a window later
		{"c", 10 * time.Minute, true},
		{"d", 10 * time.Minute, true}, // the cap (3) pushes out the oldest: b
		{"b", 10 * time.Minute, true},
		{"d", 11 * time.Minute, false},
	}
	for i, s := range steps {
		if got := f.first(s.key, t0.Add(s.at), w); got != s.want {
			t.Errorf("step %d (%s at %v): %v, want %v", i, s.key, s.at, got, s.want)
		}
	}
	if len(f.seen) > 3 {
		t.Errorf("%d keys remembered, cap 3", len(f.seen))
	}
}

// TestMetrics: the series pass promlint, carry no address or login, and a
// closed server gives its registry back (a reload can start a new one).
func TestMetrics(t *testing.T) {
	h := newTestHook(t, nil)
	c := dialLine(t, h.addr(t, protoNative, "unix"))
	c.send("CHECK ip=192.0.2.1 login=alice\n")
	c.mustLine()
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "protocol" && l.GetName() != "outcome" {
					t.Errorf("%s has a label %s", f.GetName(), l.GetName())
				}
			}
		}
	}
	if got := testutil.ToFloat64(h.m.proto[protoNative].requests[outAllow]); got != 1 {
		t.Errorf("native allow counted %v", got)
	}
	h.Close()
	if n, _ := testutil.GatherAndCount(h.reg); n != 0 {
		t.Errorf("%d series left after Close", n)
	}
	again, err := New(Config{Limits: DefaultLimits()}, Deps{Checker: h.engine}, nil, h.reg)
	if err != nil {
		t.Fatalf("a new server on the same registry: %v", err)
	}
	again.Close()
}
