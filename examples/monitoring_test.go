package examples

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// metricInfo is one line of agent/testdata/metrics.golden, which a test in
// package agent keeps equal to what a running agent exposes.
type metricInfo struct {
	typ    string
	labels map[string]bool
}

func exposedMetrics(t *testing.T) map[string]metricInfo {
	t.Helper()
	data, err := os.ReadFile("../agent/testdata/metrics.golden")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]metricInfo{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("metrics.golden: bad line %q", line)
		}
		mi := metricInfo{typ: f[1], labels: map[string]bool{}}
		for _, l := range strings.Split(strings.Trim(f[2], "{}"), ",") {
			if l != "" {
				mi.labels[l] = true
			}
		}
		out[f[0]] = mi
	}
	return out
}

var (
	metricRef = regexp.MustCompile(`\b(mailban_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	grouping  = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	// Labels Prometheus or PromQL add: not the metrics' own.
	outsideLabels = map[string]bool{"instance": true, "job": true, "le": true}
)

// checkExpr fails the test for every problem exprProblems finds.
func checkExpr(t *testing.T, where, expr string, exposed map[string]metricInfo) {
	t.Helper()
	for _, p := range exprProblems(expr, exposed) {
		t.Errorf("%s: %s", where, p)
	}
}

// exprProblems lists every metric an expression uses that mailban does not
// expose, and every label it matches or groups by that none of its metrics
// has.
func exprProblems(expr string, exposed map[string]metricInfo) []string {
	var problems []string
	labels := map[string]bool{}
	refs := metricRef.FindAllStringSubmatch(expr, -1)
	if len(refs) == 0 && !strings.Contains(expr, "up{") {
		problems = append(problems, fmt.Sprintf("%q uses no mailban metric", expr))
	}
	for _, m := range refs {
		name := m[1]
		mi, ok := exposed[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut && exposed[base].typ == "histogram" {
					mi, ok = exposed[base], true
				}
			}
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is not a metric mailban exposes (see agent/testdata/metrics.golden)", name))
			continue
		}
		for l := range mi.labels {
			labels[l] = true
		}
		for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
			if !mi.labels[lm[1]] && !outsideLabels[lm[1]] {
				problems = append(problems, fmt.Sprintf("%s has no label %q", name, lm[1]))
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !labels[l] && !outsideLabels[l] {
				problems = append(problems, fmt.Sprintf("groups by %q, which none of its metrics has", l))
			}
		}
	}
	return problems
}

func TestGrafanaDashboardQueriesExposedMetrics(t *testing.T) {
	exposed := exposedMetrics(t)
	data, err := os.ReadFile("grafana/mailban.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("grafana/mailban.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Error("the dashboard has no title or uid")
	}
	used := map[string]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			checkExpr(t, "panel "+p.Title, tg.Expr, exposed)
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: %q ignores the host chosen on the dashboard", p.Title, tg.Expr)
			}
			for _, m := range metricRef.FindAllStringSubmatch(tg.Expr, -1) {
				used[strings.TrimSuffix(m[1], "_bucket")] = true
			}
		}
	}
	for _, a := range dash.Annotations.List {
		checkExpr(t, "annotation "+a.Name, a.Expr, exposed)
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			checkExpr(t, "variable "+v.Name, v.Definition, exposed)
		}
	}
	// What an admin most needs to see is on it.
	for _, name := range []string{"mailban_events_total", "mailban_decisions_total", "mailban_bans_active",
		"mailban_enforcer_healthy", "mailban_source_lag_bytes", "mailban_lines_read_total",
		"mailban_config_last_reload_successful", "mailban_state_size_bytes", "mailban_enforcer_apply_duration_seconds"} {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	t.Logf("%d panels, %d queries", len(dash.Panels), queries)
}

func TestAlertRulesUseExposedMetrics(t *testing.T) {
	exposed := exposedMetrics(t)
	data, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	n := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			n++
			checkExpr(t, "alert "+r.Alert, r.Expr, exposed)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a severity, summary or description", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Error("no alert rules")
	}
}

// The checker itself refuses what it should.
func TestCheckExprCatchesMistakes(t *testing.T) {
	exposed := map[string]metricInfo{
		"mailban_events_total":  {typ: "counter", labels: map[string]bool{"kind": true, "service": true}},
		"mailban_apply_seconds": {typ: "histogram", labels: map[string]bool{"enforcer": true}},
	}
	for _, bad := range []string{
		`rate(mailban_event_total[5m])`,
		`rate(mailban_events_total{protocol="imap"}[5m])`,
		`sum by (source) (rate(mailban_events_total[5m]))`,
		`mailban_events_total_bucket`,
		`up == 0`,
	} {
		if len(exprProblems(bad, exposed)) == 0 {
			t.Errorf("%q passed the check", bad)
		}
	}
	good := `histogram_quantile(0.9, sum by (le, enforcer) (rate(mailban_apply_seconds_bucket{instance=~"$instance"}[5m])))`
	if p := exprProblems(good, exposed); len(p) > 0 {
		t.Errorf("a good expression failed the check: %v", p)
	}
}
