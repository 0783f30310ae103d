package main

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/warrenmq/warren/examples"
	"github.com/warrenmq/warren/telemetry"
)

// TestScrapeWhileRunning runs the example in -serve mode, scrapes /metrics
// while it runs, and checks the series, their labels and buckets, and that
// every series the Grafana dashboard queries is one warren exports.
func TestScrapeWhileRunning(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	serving := make(chan struct{})
	go func() { done <- run(runCtx, examples.URL(), ln, func() { close(serving) }) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	// Stopped before it serves, run fails with the ctx's error: the
	// scrape is taken once every order is handled.
	select {
	case <-serving:
	case err := <-done:
		done <- err // for the deferred check
		t.Fatalf("run ended before it served: %v", err)
	case <-ctx.Done():
		t.Fatal("the example never handled its orders")
	}
	url := "http://" + ln.Addr().String() + "/metrics"
	var families map[string]*dto.MetricFamily
	// Six orders are handled, one of them after a reconnect: wait for all
	// of them to be counted.
	for {
		families = scrape(t, ctx, url)
		if sumOf(families["messaging_client_consumed_messages_total"]) >= 6 && families["warren_connection_reconnects_total"] != nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the example never handled its orders; series: %v", keys(families))
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The series and the labels a dashboard groups by.
	want := map[string][]string{
		"messaging_client_sent_messages_total":        {"messaging_system", "messaging_operation_name", "messaging_destination_name", "server_address", "server_port"},
		"messaging_client_consumed_messages_total":    {"messaging_system", "messaging_operation_name", "messaging_destination_name", "messaging_consumer_group_name"},
		"messaging_client_operation_duration_seconds": {"messaging_system", "messaging_operation_name", "messaging_operation_type"},
		"messaging_process_duration_seconds":          {"messaging_system", "messaging_operation_name", "messaging_consumer_group_name"},
		"warren_retries_total":                        {"warren_retry_kind", "messaging_consumer_group_name"},
		"warren_dead_letters_total":                   {"warren_dead_letter_mode", "messaging_consumer_group_name"},
		"warren_connection_reconnects_total":          {"server_address", "server_port"},
		"warren_connection_restore_duration_seconds":  {"server_address", "server_port"},
	}
	for name, labels := range want {
		f := families[name]
		if f == nil {
			t.Errorf("series %s missing", name)
			continue
		}
		for _, m := range f.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			for _, l := range labels {
				if have[l] == "" {
					t.Errorf("%s: label %s missing in %v", name, l, have)
				}
			}
			if v, ok := have["messaging_system"]; ok && v != "rabbitmq" {
				t.Errorf("%s: messaging_system %q", name, v)
			}
			if _, ok := have["messaging_rabbitmq_destination_routing_key"]; ok {
				t.Errorf("%s: the routing key is a label", name)
			}
			if h := m.GetHistogram(); h != nil && name != "warren_connection_restore_duration_seconds" {
				var bounds []float64
				for _, b := range h.Bucket {
					if !math.IsInf(b.GetUpperBound(), 1) { // the text format adds +Inf
						bounds = append(bounds, b.GetUpperBound())
					}
				}
				if !slices.Equal(bounds, durationBuckets) {
					t.Errorf("%s: buckets %v, want the conventions' %v", name, bounds, durationBuckets)
				}
			}
		}
	}
	// The failures are there with their error.type.
	if !hasLabel(families["messaging_process_duration_seconds"], "error_type", "_OTHER") {
		t.Error("no processing failure with error_type")
	}
	if sumOf(families["warren_dead_letters_total"]) != 1 || sumOf(families["warren_retries_total"]) != 2 {
		t.Errorf("dead letters %v, retries %v; want 1 and 2", sumOf(families["warren_dead_letters_total"]), sumOf(families["warren_retries_total"]))
	}

	// Every series the dashboard queries is exported: by this run, or,
	// for what only an alarm, a dead channel or a poison message records,
	// by name from the telemetry package.
	raw, err := os.ReadFile("grafana/warren.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	eventOnly := map[string]bool{}
	for _, n := range []string{telemetry.MetricBlockedDuration, telemetry.MetricStaleAcks, telemetry.MetricPoison} {
		eventOnly[prometheusName(n)] = true
	}
	labels := map[string]bool{
		// Only a routing key on a named exchange makes the destination a
		// template; this example publishes through the default exchange.
		"messaging_destination_template": true,
	}
	for _, f := range families {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				labels[l.GetName()] = true
			}
		}
	}
	series := regexp.MustCompile(`\b(?:messaging|warren)_[a-z_]+`)
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			for _, s := range series.FindAllString(target.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, "_bucket"), "_sum"), "_count")
				if families[base] == nil && !eventOnly[base] && !labels[s] {
					t.Errorf("panel %q queries %s, which warren does not export (as a series or a label)", p.Title, s)
				}
			}
		}
	}
}

// prometheusName is the series name the OTel Prometheus exporter gives an
// instrument of warren's: dots to underscores, seconds or _total.
func prometheusName(instrument string) string {
	n := strings.ReplaceAll(instrument, ".", "_")
	if strings.HasSuffix(n, "duration") {
		return n + "_seconds"
	}
	return n + "_total"
}

func scrape(t *testing.T, ctx context.Context, url string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

func sumOf(f *dto.MetricFamily) float64 {
	if f == nil {
		return 0
	}
	var total float64
	for _, m := range f.Metric {
		total += m.GetCounter().GetValue()
	}
	return total
}

func hasLabel(f *dto.MetricFamily, name, value string) bool {
	if f == nil {
		return false
	}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == name && l.GetValue() == value {
				return true
			}
		}
	}
	return false
}

func keys(m map[string]*dto.MetricFamily) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// durationBuckets are the bucket boundaries (seconds) the OpenTelemetry
// messaging conventions recommend for duration histograms.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}
