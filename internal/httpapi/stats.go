package httpapi

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type securityStats struct {
	AveragePaths          float64 `json:"average_paths"`
	CensorshipDeflections int64   `json:"censorship_deflections"`
	FECPackets            int64   `json:"fec_packets"`
	MultipathSessions     int64   `json:"multipath_sessions"`
	NoiseHandshakes       int64   `json:"noise_handshakes"`
	PQHandshakes          int64   `json:"pq_handshakes"`
}

// securityStats is GET /api/security-stats (§8.4.7): this node's counters.
func (a *API) securityStats(*call) (any, error) {
	m := a.d.Metrics
	sessions := counterValue(m.MultipathSessions)
	avg := 0.0
	if sessions > 0 {
		avg = counterValue(m.MultipathPaths) / sessions
	}
	return securityStats{
		AveragePaths:          avg,
		CensorshipDeflections: int64(counterValue(m.CensorshipDeflections)),
		FECPackets:            int64(counterValue(m.SecurityFECPackets)),
		MultipathSessions:     int64(sessions),
		NoiseHandshakes:       int64(counterValue(m.SecurityNoise)),
		PQHandshakes:          int64(counterValue(m.SecurityPQ)),
	}, nil
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	if c == nil {
		return 0
	}
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
