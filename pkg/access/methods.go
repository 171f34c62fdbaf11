package access

import "strings"

// Check returns the permissions a call with request req needs (nil: none).
type Check func(req any) []Need

// Methods maps each full gRPC method name ("/pkg.Service/Method") of a
// service to its Check. pkg/service refuses to start a service that
// registers a method without an entry, so no RPC is left unguarded.
type Methods map[string]Check

// Public is the Check of a call anyone may make (health, reflection).
func Public(any) []Need { return nil }

// Static is a Check that needs the same permissions whatever the request.
func Static(needs ...Need) Check { return func(any) []Need { return needs } }

// For adapts a typed Check. A request of another type (which a correctly
// wired server never sees) needs the operator permission.
func For[T any](f func(req T) []Need) Check {
	return func(req any) []Need {
		r, ok := req.(T)
		if !ok {
			return []Need{Operator()}
		}
		return f(r)
	}
}

// ServiceName is a Check for requests that name one service: a read or
// write of that service, or of every service when the name is empty.
func ServiceName[T any](name func(T) string, l Level) Check {
	return For(func(r T) []Need {
		n := name(r)
		if n == "" {
			n = "*"
		}
		return []Need{Service(n, l)}
	})
}

// alwaysPublic reports whether a method belongs to a service every gRPC
// server carries and anyone may call: health checking and reflection.
func alwaysPublic(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(method, "/grpc.reflection.")
}

// Lookup returns the Check for method: its entry, Public for health and
// reflection, and false when the table has no entry.
func (m Methods) Lookup(method string) (Check, bool) {
	if c, ok := m[method]; ok {
		return c, true
	}
	if alwaysPublic(method) {
		return Public, true
	}
	return nil, false
}
