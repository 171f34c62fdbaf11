package balancer

import (
	"github.com/switchboard-net/switchboard/pkg/access"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
)

// Methods is the permission each balancer RPC needs: reading a service's
// endpoints and picks needs read on it; a load report needs write on every
// service it reports on (reports eject backends); policies are operator's.
var Methods = access.Methods{
	balancerv1.Balancer_Pick_FullMethodName:           access.ServiceName((*balancerv1.PickRequest).GetService, access.Read),
	balancerv1.Balancer_WatchEndpoints_FullMethodName: access.ServiceName((*balancerv1.WatchEndpointsRequest).GetService, access.Read),
	balancerv1.Balancer_GetPolicy_FullMethodName:      access.ServiceName((*balancerv1.GetPolicyRequest).GetService, access.Read),
	balancerv1.Balancer_SetPolicy_FullMethodName:      access.Static(access.Operator()),
	balancerv1.Balancer_Report_FullMethodName:         access.For(reportNeeds),
}

// reportNeeds asks write on each distinct service of a batch.
func reportNeeds(r *balancerv1.ReportRequest) []access.Need {
	var needs []access.Need
	seen := map[string]bool{}
	for _, rep := range r.GetReports() {
		if s := rep.GetService(); !seen[s] {
			seen[s] = true
			needs = append(needs, access.Service(s, access.Write))
		}
	}
	return needs
}
