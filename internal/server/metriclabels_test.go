package server_test

import (
	"slices"
	"testing"

	"github.com/commucat/commucat/internal/metrics"
	redisstore "github.com/commucat/commucat/internal/store/redis"
)

// The reason label of commucat_bus_refused is pre-initialised from the
// metrics package's list; the Redis bus reports its own constants. They
// must be the same list, or a refusal would create an undocumented series.
func TestBusRefusedReasonsMatch(t *testing.T) {
	if got, want := redisstore.RefusedReasons(), metrics.BusRefusedReasons(); !slices.Equal(got, want) {
		t.Fatalf("redis refusal reasons %v, metric label values %v", got, want)
	}
}
