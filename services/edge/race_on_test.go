//go:build race

package edge_test

import "time"

// reloadBound is how soon after a config write the new route must answer:
// the race detector slows everything several times over, so under it the
// test checks liveness rather than the 1 s figure.
const reloadBound = 5 * time.Second
