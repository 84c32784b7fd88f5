// Command caddy-redis is the end-to-end tests' Caddy for the cluster test:
// examples/caddy (Caddy, its standard modules and caddy-logto) plus the
// test-only Redis storage module in examples/e2e/redisstorage. It is not a
// build for users: they add a published storage plugin (README, "Running
// several instances").
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-logto/caddy-logto/examples/e2e/redisstorage"
	_ "github.com/caddy-logto/caddy-logto/module"
)

func main() {
	caddycmd.Main()
}
