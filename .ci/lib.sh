# Shared shell helpers for the .ci scripts. Source it; do not run it.

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# need_node_deps installs the dev IdP's pinned npm packages when missing.
need_node_deps() {
	local root; root=$(repo_root)
	if ! command -v node >/dev/null 2>&1; then
		log "node is not installed; installing Debian's nodejs and npm"
		apt_install nodejs npm
	fi
	if [ ! -d "$root/examples/devidp/node_modules" ] || [ "$root/examples/devidp/package-lock.json" -nt "$root/examples/devidp/node_modules/.package-lock.json" ]; then
		log "npm ci (dev IdP)"
		npm ci --prefix "$root/examples/devidp" --no-audit --no-fund --loglevel=error
	fi
}

# apt_install installs Debian packages when running as root (CI), or says
# how to when not.
apt_install() {
	if [ "$(id -u)" -eq 0 ]; then
		if [ -z "${APT_UPDATED:-}" ]; then
			DEBIAN_FRONTEND=noninteractive apt-get update -qq
			APT_UPDATED=1
		fi
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
	else
		log "please install: $* (e.g. sudo apt-get install -y $*)"
		return 1
	fi
}

need_chromium() {
	if ! command -v chromium >/dev/null 2>&1; then
		log "installing Debian's chromium for the browser tests"
		apt_install chromium
	fi
}

# inci_fail fails with CI set; elsewhere it only warns.
inci_fail() {
	case "${CI:-}" in
	"" | 0 | false) log "$1: the tests that need it will be skipped" ;;
	*) log "$1 and CI is set"; return 1 ;;
	esac
}

# need_redis installs Debian's redis-server for the cluster tests (which
# start their own on 127.0.0.1, with no config from /etc).
need_redis() {
	if ! command -v redis-server >/dev/null 2>&1; then
		log "installing Debian's redis-server for the cluster tests"
		# Without it the cluster tests skip, except in CI, where they fail.
		apt_install redis-server || inci_fail "redis-server is missing"
	fi
}

# build_caddy builds Caddy with the module into .ci/bin/caddy. The first
# build compiles Caddy and all its dependencies, which takes minutes on a
# small machine, so it says so, and says it is still at it now and then.
build_caddy() {
	local root; root=$(repo_root)
	mkdir -p "$root/.ci/bin"
	if [ -x "$root/.ci/bin/caddy" ]; then
		log "building Caddy with the module (.ci/bin/caddy; seconds when little changed)"
	else
		log "building Caddy with the module into .ci/bin/caddy: the first time, Go compiles Caddy and its dependencies (a few minutes on 2 cores; later builds take seconds)"
	fi
	local start=$SECONDS
	(cd "$root" && go build -o .ci/bin/caddy ./examples/caddy) &
	local pid=$! next=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		if [ $SECONDS -ge $next ]; then
			log "still compiling ($((SECONDS - start)) s so far)"
			next=$((SECONDS + 30))
		fi
		sleep 1
	done
	wait "$pid"
	if [ $((SECONDS - start)) -ge 10 ]; then log "built in $((SECONDS - start)) s"; fi
}

# port_taken <port>: true when something on this machine already accepts
# connections on localhost:<port> (127.0.0.1 or ::1, either of which a
# browser may pick for "localhost").
port_taken() {
	local host
	for host in 127.0.0.1 ::1; do
		if timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$1" 2>/dev/null; then return 0; fi
	done
	return 1
}

# wait_devidp <pid> <stdout file> [seconds]: waits until the dev IdP started
# as <pid>, its stdout going to <stdout file>, says it is listening. Fails as
# soon as it exits (its port taken, say), or after [seconds] (30). Asking the
# port instead would take another service's answer for the dev IdP's.
wait_devidp() {
	local pid=$1 out=$2 deadline=$((SECONDS + ${3:-30}))
	while [ $SECONDS -lt $deadline ]; do
		if grep -qs '^devidp listening on ' "$out"; then return 0; fi
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}

# wait_http waits until a URL answers 200, up to $2 seconds.
wait_http() {
	local url=$1 deadline=$((SECONDS + ${2:-30}))
	while [ $SECONDS -lt $deadline ]; do
		if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
		sleep 0.2
	done
	return 1
}
