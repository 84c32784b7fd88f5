// Command caddy is Caddy with the standard modules and caddy-logto, the
// same binary `xcaddy build --with github.com/caddy-logto/caddy-logto/module`
// produces. The examples and end-to-end tests run it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-logto/caddy-logto/module"
)

func main() {
	caddycmd.Main()
}
