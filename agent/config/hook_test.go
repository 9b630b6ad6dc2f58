package config

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/mailban/mailban/enforcers/hook"
)

// TestHookBlocks: a block's presence turns its protocol on with the
// hook's defaults; what the file says wins.
func TestHookBlocks(t *testing.T) {
	def := hook.DefaultConfig()
	cases := []struct {
		name string
		yaml string
		want func(*hook.Config)
	}{
		{name: "no hook block", yaml: "", want: func(c *hook.Config) { *c = hook.Config{} }},
		{name: "an empty hook block: the native socket", yaml: "enforcers:\n  hook: {}\n", want: func(c *hook.Config) {
			c.Postfix, c.Dovecot, c.Nginx, c.Milter = hook.PostfixConfig{}, hook.DovecotConfig{}, hook.NginxConfig{}, hook.MilterConfig{}
		}},
		{
			name: "every protocol with its defaults",
			yaml: "fail2ban: 5/2h\nenforcers:\n  hook:\n    postfix: {}\n    dovecot: {api-key: k}\n    nginx: {api-key: n, upstream: 'http://127.0.0.1:9000/auth'}\n    milter: {}\n",
			want: func(c *hook.Config) {
				c.Postfix.Listen = []string{hook.DefaultPostfixSocket}
				c.Milter.Listen = []string{hook.DefaultMilterSocket}
				c.Dovecot.Listen = []string{hook.DefaultDovecotListen}
				c.Dovecot.APIKey = "k"
				c.Dovecot.RepeatWindow = 2 * time.Hour // the rules' longest period
				c.Nginx.Listen = []string{hook.DefaultNginxListen}
				c.Nginx.APIKey = "n"
				c.Nginx.Upstream = "http://127.0.0.1:9000/auth"
			},
		},
		{
			name: "settings",
			yaml: "enforcers:\n  hook:\n    native: {listen: ['127.0.0.1:9848'], report-over-tcp: true}\n" +
				"    dovecot: {api-key: k, report: false, tarpit: 3s, repeat-window: 1d}\n    limits: {max-line: 512, idle-timeout: 1m}\n" +
				"    milter: {listen: ['127.0.0.1:9851'], group: mail}\n",
			want: func(c *hook.Config) {
				c.Native = hook.NativeConfig{Listen: []string{"127.0.0.1:9848"}, ReportOverTCP: true}
				c.Postfix, c.Nginx = hook.PostfixConfig{}, hook.NginxConfig{}
				c.Milter = hook.MilterConfig{Listen: []string{"127.0.0.1:9851"}, Group: "mail"}
				c.Dovecot.Listen = []string{hook.DefaultDovecotListen}
				c.Dovecot.APIKey = "k"
				c.Dovecot.Report = false
				c.Dovecot.Tarpit = 3 * time.Second
				c.Dovecot.RepeatWindow = 24 * time.Hour
				c.Limits.MaxLine = 512
				c.Limits.IdleTimeout = time.Minute
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			want := def
			want.Native.Listen = append([]string(nil), def.Native.Listen...)
			tc.want(&want)
			if diff := cmp.Diff(want, cfg.HookConfig()); diff != "" {
				t.Errorf("hook config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBadHookBlocks(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{
			name: "unknown key inside a block",
			yaml: "enforcers:\n  hook:\n    dovecot:\n      api-key: k\n      apikey: k\n",
			want: "t.yaml:5: enforcers.hook.dovecot.apikey: unknown key (did you mean api-key?)",
		},
		{
			name: "missing API key",
			yaml: "enforcers:\n  hook:\n    dovecot:\n      listen: ['127.0.0.1:9849']\n",
			want: "t.yaml:3: enforcers.hook.dovecot.api-key: must be set: without it any local user could refuse or report logins",
		},
		{
			name: "bad listen address",
			yaml: "enforcers:\n  hook:\n    native:\n      listen:\n        - /run/mailban/hook.sock\n        - hook.sock\n",
			want: `t.yaml:6: enforcers.hook.native.listen[1]: "hook.sock" is neither an absolute unix socket path nor host:port (e.g. 127.0.0.1:9848)`,
		},
		{
			name: "bad duration in limits",
			yaml: "enforcers:\n  hook:\n    limits:\n      idle-timeout: soon\n",
			want: `t.yaml:4: enforcers.hook.limits.idle-timeout: "soon" is not a duration (use a number and a unit: s, m, h, d, w; e.g. 90s, 10m, 1d)`,
		},
		{
			name: "bad milter listen address",
			yaml: "enforcers:\n  hook:\n    milter:\n      listen: [example.test:9851]\n",
			want: `t.yaml:4: enforcers.hook.milter.listen[0]: "example.test:9851": the host must be an IP address or localhost`,
		},
		{
			name: "milter and postfix on one socket",
			yaml: "enforcers:\n  hook:\n    postfix: {listen: [/run/mailban/p.sock]}\n    milter:\n      listen: [/run/mailban/p.sock]\n",
			want: `t.yaml:5: enforcers.hook.milter.listen[0]: /run/mailban/p.sock is already used by postfix.listen[0]`,
		},
		{
			name: "unknown milter key",
			yaml: "enforcers:\n  hook:\n    milter:\n      listen: []\n      groups: mail\n",
			want: "t.yaml:5: enforcers.hook.milter.groups: unknown key (did you mean group?)",
		},
		{
			name: "nginx without upstream",
			yaml: "enforcers:\n  hook:\n    nginx:\n      api-key: k\n",
			want: "t.yaml:3: enforcers.hook.nginx.upstream: must name the real auth_http service (http://host:port/path): nginx needs a backend for every login mailban lets through",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t.yaml")
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\n  %v\nwant\n  %s", err, tc.want)
			}
		})
	}
}
