module github.com/usernat/usernat

go 1.26.8

require (
	github.com/songgao/water v0.0.0-20200317203138-2b4b6d7c09d8
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)

require (
	golang.org/x/exp v0.0.0-20250711185948-6ae5c78190dc // indirect
	golang.org/x/time v0.15.0 // indirect
)

// Pinned for the gateway's netstack uplink (nat/hostnet) and header views;
// the version is one the module proxy here serves.
require gvisor.dev/gvisor v0.0.0-20260701204157-69c2d17aea96
