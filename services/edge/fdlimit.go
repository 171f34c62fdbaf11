package edge

// fdHeadroom is the file descriptors kept out of the connection budget:
// listeners, the gRPC and admin servers, the balancer connection, logs,
// TCP and wire tunnels' own sockets.
const fdHeadroom = 1024

// defaultMaxConns is --max-conns when not set: each proxied HTTP
// connection holds two descriptors (the client's and one upstream), so
// the listeners share what the file limit leaves after fdHeadroom: a
// flood of connections is met by the edge closing the ones over the limit
// at accept, while the connections it serves can still dial upstream —
// not by EMFILE on every socket, upstream dials included. Without a known
// limit: 20000.
func defaultMaxConns(limit uint64, listeners int) int {
	const fallback, least = 20000, 64
	if limit == 0 || limit > 1<<31 {
		return fallback
	}
	listeners = max(listeners, 1)
	if limit <= fdHeadroom+2*least*uint64(listeners) {
		return least
	}
	return int((limit - fdHeadroom) / 2 / uint64(listeners))
}
