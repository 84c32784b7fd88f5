# The two commands (see README.md):
#   make demo   run the static-site example against the dev IdP (or your tenant)
#   make test   run every test, installing what they need
.PHONY: demo test bench load

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
