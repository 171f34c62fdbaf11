// Package balance holds Switchboard's load-balancing policies, shared by
// the balancer service, the edge proxy and Go gRPC clients.
package balance
