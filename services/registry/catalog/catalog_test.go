package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

func TestPrepareRecord(t *testing.T) {
	for _, tc := range []struct {
		in        *registryv1.Record
		want      string // "name type ttl data", or the field of the error
		wantError bool
	}{
		{&registryv1.Record{Name: "WWW.Example.test", Type: "a", Data: " 192.0.2.1 "}, "www.example.test. A 300 192.0.2.1", false},
		{&registryv1.Record{Name: "v6.test.", Type: "AAAA", Data: "2001:DB8::1", Ttl: 60}, "v6.test. AAAA 60 2001:db8::1", false},
		{&registryv1.Record{Name: "test.", Type: "MX", Data: "10   Mail.Test"}, "test. MX 300 10 mail.test.", false},
		{&registryv1.Record{Name: "_sip._tcp.test.", Type: "SRV", Data: "0 5 5060 sip.test."}, "_sip._tcp.test. SRV 300 0 5 5060 sip.test.", false},
		{&registryv1.Record{Name: "test.", Type: "SOA", Data: "ns.test. admin.test. 1 7200 3600 1209600 300"}, "test. SOA 300 ns.test. admin.test. 1 7200 3600 1209600 300", false},
		{&registryv1.Record{Name: "alias.test.", Type: "CNAME", Data: "web.test"}, "alias.test. CNAME 300 web.test.", false},
		{&registryv1.Record{Name: "test.", Type: "TXT", Data: `"hello world"`}, `test. TXT 300 "hello world"`, false},
		{nil, "record", true},
		{&registryv1.Record{Type: "A", Data: "192.0.2.1"}, "record.name", true},
		{&registryv1.Record{Name: "a..b.", Type: "A", Data: "192.0.2.1"}, "record.name", true},
		{&registryv1.Record{Name: strings.Repeat("a", 64) + ".test.", Type: "A", Data: "192.0.2.1"}, "record.name", true},
		{&registryv1.Record{Name: "x.test.", Type: "", Data: "192.0.2.1"}, "record.type", true},
		{&registryv1.Record{Name: "x.test.", Type: "LOC", Data: "1"}, "record.type", true},
		{&registryv1.Record{Name: "x.test.", Type: "A", Data: ""}, "record.data", true},
		{&registryv1.Record{Name: "x.test.", Type: "A", Data: "::1"}, "record.data", true},
		{&registryv1.Record{Name: "x.test.", Type: "AAAA", Data: "192.0.2.1"}, "record.data", true},
		{&registryv1.Record{Name: "x.test.", Type: "MX", Data: "99999 mx.test."}, "record.data", true},
		{&registryv1.Record{Name: "x.test.", Type: "SRV", Data: "1 2 mx.test."}, "record.data", true},
		{&registryv1.Record{Name: "x.test.", Type: "TXT", Data: "a\x00b"}, "record.data", true},
	} {
		got, err := PrepareRecord(tc.in)
		if tc.wantError {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.want {
				t.Errorf("PrepareRecord(%v) = %v, %v; want an error in %s", tc.in, got, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("PrepareRecord(%v): %v", tc.in, err)
			continue
		}
		s := got.Name + " " + got.Type + " " + itoa(got.Ttl) + " " + got.Data
		if s != tc.want {
			t.Errorf("PrepareRecord(%v) = %q, want %q", tc.in, s, tc.want)
		}
	}
}

func itoa(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

func FuzzPrepareRecord(f *testing.F) {
	f.Add("www.test.", "A", "192.0.2.1")
	f.Add("test.", "MX", "10 mail.test.")
	f.Add("_x._tcp.test", "srv", "0 0 1 t.")
	f.Add("test.", "SOA", "a. b. 1 2 3 4 5")
	f.Add("t.", "TXT", `"x"`)
	f.Fuzz(func(t *testing.T, name, typ, data string) {
		r, err := PrepareRecord(&registryv1.Record{Name: name, Type: typ, Data: data})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a field error", err)
			}
			return
		}
		// The stored form is a fixed point.
		again, err := PrepareRecord(r)
		if err != nil || again.Name != r.Name || again.Type != r.Type || again.Data != r.Data {
			t.Fatalf("PrepareRecord is not idempotent: %v -> %v, %v", r, again, err)
		}
	})
}

func FuzzValidateInstance(f *testing.F) {
	f.Add("web", "web-1", "127.0.0.1", uint32(80), "tag", "k", "v")
	f.Add("a", "b", "host.example", uint32(65535), "", "", "")
	f.Fuzz(func(t *testing.T, svc, id, addr string, port uint32, tag, k, v string) {
		in := &registryv1.Instance{Service: svc, Id: id, Address: addr, Port: port, Tags: []string{tag}, Metadata: map[string]string{k: v}}
		out, err := Prepare(in, time.Unix(0, 0))
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "instance.") {
				t.Fatalf("error %v does not name an instance field", err)
			}
			return
		}
		if out.Weight != 1 || out.Health != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
			t.Fatalf("prepared %v", out)
		}
	})
}

func TestPrepareDefaults(t *testing.T) {
	in := &registryv1.Instance{Service: "web", Id: "1", Address: "10.0.0.1", Port: 80,
		Check: &registryv1.HealthCheck{Kind: registryv1.CheckKind_CHECK_KIND_TTL, Interval: durationpb.New(3 * time.Second)}}
	out, err := Prepare(in, time.Unix(100, 123456789))
	if err != nil {
		t.Fatal(err)
	}
	if TTL(out) != 3*time.Second || out.Check.Timeout.AsDuration() != DefaultTimeout || out.UpdatedAt.AsTime() != time.Unix(100, 123000000).UTC() {
		t.Fatalf("prepared %v", out)
	}
	if in.Weight != 0 || in.Check.Timeout != nil {
		t.Fatal("Prepare changed its input")
	}
}

func TestHubIndexAndWatchers(t *testing.T) {
	h := NewHub(10)
	s0 := h.Snapshot()
	a := &registryv1.Instance{Service: "web", Id: "a", Port: 1}
	idx := h.Update(func(u *Update) { u.PutInstance(a) })
	select {
	case <-s0.Changed():
	default:
		t.Fatal("old snapshot's Changed not closed")
	}
	if idx != 11 {
		t.Fatalf("index %d, want 11", idx)
	}
	// An equal write changes nothing.
	if got := h.Update(func(u *Update) { u.PutInstance(&registryv1.Instance{Service: "web", Id: "a", Port: 1}) }); got != 11 {
		t.Fatalf("no-op update moved the index to %d", got)
	}
	// Another service's change leaves web's index alone.
	h.Update(func(u *Update) { u.PutInstance(&registryv1.Instance{Service: "db", Id: "x"}) })
	if i, _ := h.Snapshot().Service("web"); i != 11 {
		t.Fatalf("web index %d after a db change, want 11", i)
	}
	// Staleness is published without a new index.
	s := h.Snapshot()
	h.Update(func(u *Update) { u.SetStale(true) })
	if !h.Snapshot().Stale() || h.Snapshot().Index() != s.Index() {
		t.Fatal("stale update wrong")
	}
	// Backend floors: index jumps to the backend's, per-service too.
	h.Update(func(u *Update) {
		u.SetServiceAt("web", nil, 500)
		u.AtLeast(400)
	})
	if i, insts := h.Snapshot().Service("web"); i != 500 || len(insts) != 0 || h.Snapshot().Index() != 500 {
		t.Fatalf("web at %d with %d instances, catalog at %d; want 500, 0, 500", i, len(insts), h.Snapshot().Index())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	go h.Update(func(u *Update) { u.PutInstance(a) })
	if err := h.Wait(ctx, func(s *Snapshot) bool { return s.Instance("web", "a") != nil }); err != nil {
		t.Fatal(err)
	}
}
