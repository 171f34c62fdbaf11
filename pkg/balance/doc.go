// Package balance holds Switchboard's load-balancing policies, shared by
// the balancer service (control plane), the edge proxy (a local pick per
// request) and Go gRPC clients, so that all of them choose alike.
//
// # The pieces
//
// A [Set] owns the endpoints of one service. [Set.Update] replaces its
// [Endpoint] list and rebuilds an immutable [Picker] snapshot;
// [Set.Pick] loads that snapshot with one atomic load and chooses, without
// locks or allocations; [Selection.Done] reports how the request went.
//
//	set, err := balance.New(balance.DefaultConfig()) // errors are *ConfigError
//	err = set.Update([]balance.Endpoint{{ID: "web-1", Addr: "10.0.0.1:80"}, ...})
//
//	sel, err := set.Pick(balance.PickInfo{})         // ErrNoEndpoint, ErrNoHealthy
//	start := time.Now()
//	resp, err := send(sel.Endpoint.Addr())
//	sel.Done(outcome, time.Since(start))             // Success, Failure or Ignore
//
// Policies are small types behind the [Picker] interface, made by a
// [Builder] and registered by name ([Register], [Lookup], [Names]):
//
//	round_robin           endpoints in turn; weights ignored
//	weighted_round_robin  nginx's smooth weighted round robin, one period
//	                      precomputed so a pick is an atomic add
//	least_conn            fewest (outstanding+1)/weight over a rotating
//	                      window of Config.LeastConnChoices (default 8;
//	                      exact when the window covers the set)
//	p2c                   two random endpoints, lower peak-EWMA latency ×
//	                      (outstanding+1) / weight wins (Finagle, Linkerd)
//	consistent_hash       Maglev table keyed by PickInfo.Hash; removing one
//	                      of n endpoints moves about 1/n of the keys
//	random                weighted random (alias method, O(1))
//
// # Keys for consistent_hash
//
// The caller hashes the affinity key and passes it in [PickInfo]:
// [HashOn.Hash] takes it from an *http.Request (client IP, a header or a
// cookie, as [Config.HashOn] says), [HashString], [HashBytes] and
// [HashAddr] from anything else. The hash is stable across processes and
// the Maglev table depends only on the set of endpoint IDs, so every data
// plane sends one key to the same endpoint.
//
// # Health, ejection, breakers
//
// Per-endpoint live state ([EndpointState]: outstanding requests, latency
// estimate, consecutive failures, ejection, breaker) is keyed by endpoint ID
// and survives updates and [Set.SetConfig]. It belongs to the Set, so two
// services that share an address do not share state.
//
//   - Endpoints with [HealthUnhealthy] are skipped ([HealthUnknown] counts as
//     healthy).
//   - Outlier detection ([OutlierConfig]) ejects an endpoint after
//     consecutive failures for a back-off that doubles on each repeat up to a
//     cap, ejecting at most a share of the set (always at least one). An
//     ejected endpoint whose Health turns to [HealthHealthy] in an Update
//     (its active checks pass again) is let back at once, keeping the
//     back-off, as in Envoy.
//   - The breaker ([BreakerConfig]) opens after consecutive failures, admits
//     a few trial requests when half-open, and closes after they succeed.
//   - Panic threshold: when fewer than [Config.PanicThresholdPercent] of the
//     endpoints can take traffic, picks go to all of them, as in Envoy.
//   - Slow start ramps the weight of an endpoint that is new, or healthy or
//     back from ejection again, from SlowStartMinPercent to full over
//     [Config.SlowStart], in sixteen steps.
//
// [EndpointState.EffectiveWeight] is the result (weight × ramp, 0 when out)
// for a control plane to stream to data planes.
//
// # Time
//
// The set reads its [Clock] (injectable with [WithClock]; tests use a fake
// one and never sleep) in Update, Done and Refresh only; picks use the last
// reading. Deadlines (end of an ejection or open time, next slow-start
// step) are acted on by the first Pick or Refresh after them. An owner that
// wants them on time while no requests complete calls [Set.Refresh] from a
// ticker.
//
// # gRPC
//
// Subpackage grpcbalance registers every policy with grpc-go as
// "switchboard_<policy>", so Go gRPC clients pick with the same code.
//
// # Randomness
//
// Unseeded, picks use the runtime's per-thread wyrand generator (no locks,
// no shared state, about a nanosecond a draw). [WithSeed] makes them a
// fixed sequence for tests and simulations.
package balance
