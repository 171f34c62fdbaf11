// Package tests holds integration tests that run several real Switchboard
// services together (each on loopback port 0, talking over gRPC), since a
// service package never imports another service.
package tests
