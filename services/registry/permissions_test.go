package registry_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
)

func TestEveryRPCHasAPermission(t *testing.T) {
	servicetest.CheckMethods(t, &registryv1.Registry_ServiceDesc, registry.Methods)
}

// TestACLWithGrpcurl drives the registry's access control with the real
// grpcurl: a deployer owns web*, a viewer reads everything, and neither can
// do what its rules do not say — and what was refused changed nothing.
func TestACLWithGrpcurl(t *testing.T) {
	bin := servicetest.Tool(t, "grpcurl")
	acl := filepath.Join(t.TempDir(), "acl.yaml")
	body := "default: deny\ntokens:\n" +
		"  - {name: deployer, sha256: " + access.HashToken("deploy") + ", rules: [{service: \"web*\", access: write}, {records: \"example.test.\", access: write}]}\n" +
		"  - {name: viewer, sha256: " + access.HashToken("view") + ", rules: [{service: \"web\", access: read}]}\n"
	if err := os.WriteFile(acl, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	inst := servicetest.Start(t, registry.Spec(), "--data-dir", t.TempDir(), "--acl-file", acl)
	addr := inst.Addrs["grpc"]
	call := func(token, method, data string) (string, error) {
		args := []string{"-plaintext", "-max-time", "10", "-d", data}
		if token != "" {
			args = append(args, "-H", "authorization: Bearer "+token)
		}
		out, err := exec.Command(bin, append(args, addr, "switchboard.registry.v1.Registry/"+method)...).CombinedOutput()
		return string(out), err
	}
	web1 := `{"instance":{"service":"web","id":"web-1","address":"192.0.2.10","port":80,"metadata":{"registered-by":"forged"}}}`
	if out, err := call("deploy", "Register", web1); err != nil {
		t.Fatalf("deployer registers web-1: %v\n%s", err, out)
	}
	hijack := `{"instance":{"service":"web","id":"web-1","address":"203.0.113.66","port":80}}`
	refusals := []struct {
		token, method, data, want string
	}{
		{"", "Register", hijack, "Unauthenticated"},
		{"wrong", "Register", hijack, "Unauthenticated"},
		{"view", "Register", hijack, `PermissionDenied`},
		{"view", "Deregister", `{"service":"web","id":"web-1"}`, "PermissionDenied"},
		{"view", "SetHealth", `{"service":"web","id":"web-1","status":"HEALTH_STATUS_CRITICAL"}`, "PermissionDenied"},
		{"deploy", "PutRecord", `{"record":{"name":"www.other.test.","type":"A","data":"203.0.113.66"}}`, `lacks records "www.other.test." write`},
		{"view", "PutRecord", `{"record":{"name":"www.example.test.","type":"A","data":"203.0.113.66"}}`, "PermissionDenied"},
		{"view", "GetService", `{"service":"api"}`, `lacks service "api" read`},
		{"deploy", "PutConfig", `{"entry":{"kind":"policy","key":"api","value":"eA=="}}`, `lacks service "api" write`},
		{"view", "PutConfig", `{"entry":{"kind":"policy","key":"web","value":"eA=="}}`, `lacks service "web" write`},
		{"deploy", "PutConfig", `{"entry":{"kind":"job","key":"j1","value":"eA=="}}`, `lacks operator`},
		{"deploy", "ListConfig", `{"kind":"job"}`, `lacks operator`},
		{"view", "WatchConfig", `{"kind":"policy"}`, `lacks service "*" read`},
	}
	for _, r := range refusals {
		out, err := call(r.token, r.method, r.data)
		if err == nil || !strings.Contains(out, r.want) {
			t.Errorf("%s as %q: %v\n%s\nwant a refusal containing %q", r.method, r.token, err, out, r.want)
		}
	}
	out, err := call("view", "GetService", `{"service":"web","include_unhealthy":true}`)
	if err != nil {
		t.Fatalf("viewer reads web: %v\n%s", err, out)
	}
	for _, want := range []string{`"address": "192.0.2.10"`, `"registered-by": "token \"deployer\""`} {
		if !strings.Contains(out, want) {
			t.Errorf("after the refused calls, web lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "CRITICAL") || strings.Contains(out, "forged") {
		t.Errorf("a refused call or a forged owner left a trace:\n%s", out)
	}
	if out, err := call("deploy", "ListRecords", `{}`); err == nil {
		t.Errorf("deployer listed every zone's records:\n%s", out)
	}
	if out, err := call("deploy", "ListRecords", `{"suffix":"example.test."}`); err != nil || strings.Contains(out, "203.0.113.66") {
		t.Errorf("records of example.test. after refused writes: %v\n%s", err, out)
	}
	// A policy is its service's: the deployer of web sets web's, and it is
	// stamped with who did.
	if out, err := call("deploy", "PutConfig", `{"entry":{"kind":"policy","key":"web","value":"eA=="}}`); err != nil || !strings.Contains(out, `"updatedBy": "token \"deployer\""`) {
		t.Errorf("deployer sets web's policy: %v\n%s", err, out)
	}
	// ListServices shows each caller what it may read.
	if out, err := call("deploy", "Register", `{"instance":{"service":"webhooks","id":"h-1","address":"192.0.2.11","port":80}}`); err != nil {
		t.Fatalf("deployer registers webhooks: %v\n%s", err, out)
	}
	out, err = call("view", "ListServices", `{}`)
	if err != nil || !strings.Contains(out, `"name": "web"`) || strings.Contains(out, "webhooks") {
		t.Errorf("viewer's ListServices: %v\n%s\nwant web and not webhooks", err, out)
	}
}
