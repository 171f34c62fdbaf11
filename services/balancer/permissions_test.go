package balancer_test

import (
	"testing"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	balancerv1 "github.com/switchboard-net/switchboard/proto/switchboard/balancer/v1"
	"github.com/switchboard-net/switchboard/services/balancer"
)

func TestEveryRPCHasAPermission(t *testing.T) {
	servicetest.CheckMethods(t, &balancerv1.Balancer_ServiceDesc, balancer.Methods)
}
