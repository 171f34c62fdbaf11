package balance_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
)

func Example() {
	cfg := balance.DefaultConfig()
	cfg.Policy = balance.P2CName
	set, err := balance.New(cfg)
	if err != nil {
		panic(err)
	}
	err = set.Update([]balance.Endpoint{
		{ID: "web-1", Addr: "10.0.0.1:8080"},
		{ID: "web-2", Addr: "10.0.0.2:8080", Weight: 2},
	})
	if err != nil {
		panic(err)
	}
	sel, err := set.Pick(balance.PickInfo{})
	if err != nil {
		panic(err)
	}
	start := time.Now()
	// ... send the request to sel.Endpoint.Addr() ...
	sel.Done(balance.Success, time.Since(start))
	fmt.Println(sel.Endpoint.Addr() != "")
	// Output: true
}

func ExampleHashOn() {
	cfg := balance.DefaultConfig()
	cfg.Policy = balance.ConsistentHashName
	cfg.HashOn = "cookie:session"
	set, _ := balance.New(cfg)
	_ = set.Update([]balance.Endpoint{{ID: "a"}, {ID: "b"}, {ID: "c"}})
	on, _ := balance.ParseHashOn(cfg.HashOn)

	r, _ := http.NewRequest("GET", "http://shop/", nil)
	r.Header.Set("Cookie", "session=u-42")
	h, ok := on.Hash(r)
	first, _ := set.Pick(balance.PickInfo{Hash: h, HasHash: ok})
	first.Done(balance.Success, time.Millisecond)
	again, _ := set.Pick(balance.PickInfo{Hash: h, HasHash: ok})
	again.Done(balance.Success, time.Millisecond)
	fmt.Println(first.Endpoint.ID() == again.Endpoint.ID())
	// Output: true
}
