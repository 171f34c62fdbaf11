//go:build !race

package edge_test

import "time"

// reloadBound is how soon after a config write the new route must answer
// (--config-poll 500ms, then 100ms to settle).
const reloadBound = time.Second
