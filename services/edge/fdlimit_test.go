package edge

import "testing"

func TestDefaultMaxConns(t *testing.T) {
	for _, tc := range []struct {
		limit     uint64
		listeners int
		want      int
	}{
		{1048576, 1, 523776}, // (1048576-1024)/2
		{1048576, 2, 261888},
		{65536, 1, 32256},
		{4096, 1, 1536}, // a container's common limit: never equal to it
		{4096, 2, 768},
		{1024, 1, 64}, // too small to share: a floor
		{0, 1, 20000}, // unknown
	} {
		if got := defaultMaxConns(tc.limit, tc.listeners); got != tc.want {
			t.Errorf("defaultMaxConns(%d, %d) = %d, want %d", tc.limit, tc.listeners, got, tc.want)
		}
		if tc.limit > 2048 {
			if got := defaultMaxConns(tc.limit, tc.listeners); uint64(2*got*tc.listeners)+fdHeadroom > tc.limit {
				t.Errorf("limit %d, %d listeners: %d connections each overrun the limit", tc.limit, tc.listeners, got)
			}
		}
	}
}
