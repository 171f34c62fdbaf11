package resolver_test

import (
	"testing"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
	resolverv1 "github.com/switchboard-net/switchboard/proto/switchboard/resolver/v1"
	"github.com/switchboard-net/switchboard/services/resolver"
)

func TestEveryRPCHasAPermission(t *testing.T) {
	servicetest.CheckMethods(t, &resolverv1.Resolver_ServiceDesc, resolver.Methods)
}
