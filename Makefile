# The two commands (see README.md):
#   make demo   run the static-site example against the dev IdP (or your tenant)
#   make test   run every test, installing what they need
.PHONY: demo test bench load soak

demo:
	@.ci/demo

test:
	@.ci/test

# Go benchmarks of the hot path.
bench:
	go test ./module -run '^$$' -bench . -benchmem

# wrk against a real Caddy with the module, side by side with a bare file_server.
load:
	@.ci/load

# The long soak: 200 users for 10 minutes through two instances while the
# IdP, Redis and one instance restart (the short form runs in make test).
soak:
	@.ci/soak
