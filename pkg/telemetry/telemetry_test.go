package telemetry

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format, level string
		wantErr       string
		want          string
	}{
		{"text", "info", "", "msg=hello"},
		{"json", "debug", "", `"msg":"hello"`},
		{"xml", "info", "log format", ""},
		{"text", "loud", "log level", ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		log, err := NewLogger(&buf, tt.format, tt.level)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewLogger(%s, %s) = %v, want error about %s", tt.format, tt.level, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello")
		log.Debug("hidden at info")
		if !strings.Contains(buf.String(), tt.want) {
			t.Errorf("%s log: %q lacks %q", tt.format, buf.String(), tt.want)
		}
		if tt.level == "info" && strings.Contains(buf.String(), "hidden") {
			t.Errorf("debug line written at level info")
		}
	}
}

func TestNewTracingFollowsEnvironment(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		exporting bool
		wantErr   string
	}{
		{"nothing set: no-op", nil, false, ""},
		{"endpoint set", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, true, ""},
		{"traces endpoint, http", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, true, ""},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"}, false, ""},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"}, false, ""},
		{"bad protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, false, "OTEL_EXPORTER_OTLP_PROTOCOL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			tr, err := NewTracing(context.Background(), "switchboard-test", lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			if tr.Exporting != tt.exporting {
				t.Fatalf("Exporting = %v, want %v", tr.Exporting, tt.exporting)
			}
		})
	}
}
