#!/usr/bin/env bash
# Smoke test of the dev IdP with curl (and strict-check.mjs for Logto's
# strictness): the probes a config checker makes without signing anyone in,
# discovery, a full code flow, resource
# and organization tokens, refresh-token rotation and reuse detection,
# revocation, RP-initiated and back-channel logout, key rotation, failure
# injection, the sign-in pages, a kill -9 and restart with DEVIDP_STORE, ES256
# and ES512 tenants, 20 quick starts in a
# row, and machine-to-machine apps (client credentials). Needs node and curl;
# exits non-zero on the first failed check.
set -euo pipefail

cd "$(dirname "$0")"
# Every instance starts from the documented defaults plus what it sets itself:
# strict-check.mjs checks Logto's default lifetimes on an instance given none.
for v in "${!DEVIDP_@}"; do unset "$v"; done
[ -d node_modules/oidc-provider ] || npm ci --no-audit --no-fund --loglevel=error

TMP=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	if [ -n "${KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

PASS=0
ok() { PASS=$((PASS + 1)); printf 'ok   %s\n' "$1"; }
die() {
	printf 'FAIL %s\n' "$1" >&2
	for f in "$TMP"/idp*.err; do [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
	exit 1
}
expect() { # expect <description> <actual> <expected>
	[ "$2" = "$3" ] || die "$1: got '$2', want '$3'"
	ok "$1"
}
expect_match() { # expect_match <description> <actual> <regex>
	[[ $2 =~ $3 ]] || die "$1: '$2' does not match /$3/"
	ok "$1"
}

# json <expression over d> < file: evaluates a JS expression on parsed JSON.
json() {
	J_EXPR=$1 node -e '
		const d = JSON.parse(require("fs").readFileSync(0, "utf8"));
		const v = eval(process.env.J_EXPR);
		process.stdout.write(typeof v === "string" ? v : JSON.stringify(v) ?? "undefined");'
}
jwt_part() { # jwt_part <0|1> <jwt>: header or payload JSON
	node -e 'process.stdout.write(Buffer.from(process.argv[2].split(".")[process.argv[1]], "base64url").toString())' "$1" "$2"
}
claim() { jwt_part 1 "$2" | J_KEY=$1 json 'd[process.env.J_KEY]'; } # claim <name> <jwt>
# verify_jwt <jwt> <jwks url>: checks the signature with the IdP's JWKS.
verify_jwt() {
	curl -sf "$2" >"$TMP/jwks.json"
	node -e '
		const crypto = require("crypto");
		const [token, file] = process.argv.slice(1);
		const [h, p, s] = token.split(".");
		const header = JSON.parse(Buffer.from(h, "base64url"));
		const jwk = JSON.parse(require("fs").readFileSync(file)).keys.find((k) => k.kid === header.kid);
		if (!jwk) { console.error("no key with kid " + header.kid); process.exit(1); }
		const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
		const hash = "sha" + header.alg.slice(2);
		const ok = crypto.verify(hash, Buffer.from(h + "." + p),
			header.alg.startsWith("ES") ? { key, dsaEncoding: "ieee-p1363" } : key, Buffer.from(s, "base64url"));
		process.exit(ok ? 0 : 1);' "$1" "$TMP/jwks.json"
}
now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }
sleep_until() { # sleep_until <epoch ms>
	local d=$(($1 - $(now_ms)))
	[ "$d" -le 0 ] || sleep "$((d / 1000)).$(printf '%03d' $((d % 1000)))"
}
urlenc() { node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"; }
qparam() { node -e 'process.stdout.write(new URL(process.argv[1]).searchParams.get(process.argv[2]) ?? "")' "$1" "$2"; }

# start_idp <name> [ENV=value ...]: starts the IdP on a free port, sets BASE.
start_idp() {
	local name=$1
	shift
	env DEVIDP_PORT=0 "$@" node server.js >"$TMP/$name.out" 2>"$TMP/$name.err" &
	PIDS+=($!)
	IDP_PID=$!
	for _ in $(seq 1 100); do
		if grep -qs '^devidp listening on ' "$TMP/$name.out"; then
			BASE=$(sed -n 's/^devidp listening on //p' "$TMP/$name.out")
			return 0
		fi
		kill -0 "$IDP_PID" 2>/dev/null || die "$name exited: $(cat "$TMP/$name.err")"
		sleep 0.1
	done
	die "$name did not start within 10 s"
}
stop_idp() { kill "$IDP_PID" 2>/dev/null || true; wait "$IDP_PID" 2>/dev/null || true; }

# A back-channel logout receiver: answers 200 and appends each body to a file.
node -e '
	const fs = require("fs");
	const server = require("http").createServer((req, res) => {
		let body = "";
		req.on("data", (c) => { body += c; });
		req.on("end", () => { fs.appendFileSync(process.argv[1], body + "\n"); res.end("ok"); });
	});
	server.listen(0, "127.0.0.1", () => console.log(server.address().port));' "$TMP/backchannel.log" >"$TMP/bc.port" &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s "$TMP/bc.port" ] && break; sleep 0.1; done
BC_URI="http://127.0.0.1:$(cat "$TMP/bc.port")/logto/backchannel-logout"
: >"$TMP/backchannel.log"

APP=smoke-app
SECRET=smoke-secret-123
REDIRECT_URI=http://localhost:9/logto/sign-in-callback
POST_LOGOUT=http://localhost:9/
VERIFIER=smoke-verifier-0123456789-abcdefghijklmnopqrstuvwxyz
CHALLENGE=$(node -e 'process.stdout.write(require("crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' "$VERIFIER")

# page_uid <html file>: the interaction id the sign-in page's forms post to.
page_uid() { sed -n 's#.*="/interaction/\([A-Za-z0-9_-]*\)/.*#\1#p' "$1" | head -1; }

# authorize <cookie jar> <extra query> [username]: runs /oidc/auth, signs in
# on the page shown (login, registration or Kakao), follows redirects and sets
# CB to the callback URL. PAGES counts the HTML pages shown on the way.
authorize() {
	local jar=$1 url user=${3:-} status loc uid
	url="$BASE/oidc/auth?client_id=$APP&redirect_uri=$(urlenc "$REDIRECT_URI")&response_type=code&state=st-$RANDOM&nonce=nonce-$RANDOM&code_challenge=$CHALLENGE&code_challenge_method=S256&$2"
	PAGES=0
	for _ in $(seq 1 12); do
		read -r status loc < <(curl -s -o "$TMP/page.html" -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}\n' "$url")
		case "$loc" in "$REDIRECT_URI"*) CB=$loc; return 0 ;; esac
		if [ "$status" = 200 ] && [ -z "$loc" ]; then
			PAGES=$((PAGES + 1))
			cp "$TMP/page.html" "$TMP/shown.html"
			[ -n "$user" ] || { echo "unexpected page at $url" >&2; return 1; }
			# The page is at Logto's /sign-in?app_id=…; its forms name the interaction.
			uid=$(page_uid "$TMP/page.html")
			if grep -q 'Continue with Kakao\|>Continue</button>' "$TMP/page.html" && [ "$user" = kakao ] ; then
				read -r status loc < <(curl -s -o /dev/null -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}\n' -X POST "$BASE/interaction/$uid/kakao")
			elif grep -q '<title>Create account' "$TMP/page.html"; then
				read -r status loc < <(curl -s -o /dev/null -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}\n' -d "username=$user" -d "password=$user" "$BASE/interaction/$uid/register")
			else
				read -r status loc < <(curl -s -o /dev/null -c "$jar" -b "$jar" -w '%{http_code} %{redirect_url}\n' -d "username=$user" -d "password=$user" "$BASE/interaction/$uid/login")
			fi
			user=
		fi
		[ -n "$loc" ] || { echo "no redirect from $url (HTTP $status)" >&2; return 1; }
		url=$loc
	done
	echo "too many redirects" >&2
	return 1
}
token() { # token <out file> <form fields...>: POSTs to the token endpoint with Basic auth, prints status
	local out=$1
	shift
	local args=()
	for f in "$@"; do args+=(--data-urlencode "$f"); done
	curl -s -o "$out" -w '%{http_code}' -u "$APP:$SECRET" "${args[@]}" "$BASE/oidc/token"
}
SCOPES='openid offline_access profile email roles urn:logto:scope:organizations urn:logto:scope:organization_roles read:docs write:docs manage:members read:reports'
SIGNIN_QUERY="prompt=consent&scope=$(urlenc "$SCOPES")&resource=$(urlenc https://api.example.com)&resource=$(urlenc urn:logto:resource:organizations)"

exchange() { # exchange <callback url> <out file>
	local code
	code=$(qparam "$1" code)
	token "$2" grant_type=authorization_code "code=$code" "redirect_uri=$REDIRECT_URI" "code_verifier=$VERIFIER"
}

echo "== main instance (DEVIDP_ROTATE=always, ES384)"
start_idp idp1 DEVIDP_ROTATE=always
ISSUER="$BASE/oidc"

curl -sf "$ISSUER/.well-known/openid-configuration" >"$TMP/disc.json"
expect "discovery issuer" "$(json d.issuer <"$TMP/disc.json")" "$ISSUER"
expect "discovery ES384 only" "$(json 'd.id_token_signing_alg_values_supported.join()' <"$TMP/disc.json")" ES384
expect "discovery iss parameter" "$(json d.authorization_response_iss_parameter_supported <"$TMP/disc.json")" true
expect "discovery endpoints" "$(json '[d.authorization_endpoint,d.token_endpoint,d.userinfo_endpoint,d.jwks_uri,d.end_session_endpoint,d.revocation_endpoint,d.introspection_endpoint].map(u=>u.slice(d.issuer.length)).join(" ")' <"$TMP/disc.json")" \
	"/auth /token /me /jwks /session/end /token/revocation /token/introspection"
expect "discovery backchannel logout" "$(json d.backchannel_logout_supported <"$TMP/disc.json")" true
expect "jwks: one EC P-384 key" "$(curl -sf "$ISSUER/jwks" | json 'd.keys.map(k=>k.kty+"/"+k.crv+"/"+k.alg).join()')" "EC/P-384/ES384"

status=$(curl -s -o "$TMP/client.json" -w '%{http_code}' -H 'content-type: application/json' \
	-d "{\"client_id\":\"$APP\",\"client_secret\":\"$SECRET\",\"redirect_uris\":[\"$REDIRECT_URI\"],\"post_logout_redirect_uris\":[\"$POST_LOGOUT\"],\"backchannel_logout_uri\":\"$BC_URI\",\"backchannel_logout_session_required\":true}" \
	"$BASE/__dev/clients")
expect "register client at runtime" "$status" 200
expect "client secret not echoed" "$(json 'd.client_secret === undefined' <"$TMP/client.json")" true

ALICE=$(curl -sf "$BASE/__dev/users" | json 'd.find(u=>u.username==="alice").id')
BOB=$(curl -sf "$BASE/__dev/users" | json 'd.find(u=>u.username==="bob").id')
CAROL=$(curl -sf "$BASE/__dev/users" | json 'd.find(u=>u.username==="carol").id')
ACME=$(curl -sf "$BASE/__dev/organizations" | json 'd.find(o=>o.slug==="acme").id')
GLOBEX=$(curl -sf "$BASE/__dev/organizations" | json 'd.find(o=>o.slug==="globex").id')
expect "user and organization ids as documented" "$ALICE $BOB $CAROL $ACME $GLOBEX" "07o263nluzqo aaypmo5703sw 0ba0d9zv4ub2 uyfzkqy8gung 92p5be3dqn90"

echo "== probing a tenant without signing anyone in (LOGTO.md; what \`caddy logto check\` asks)"
# probe <method> <url> [curl args...]: prints "<status>[ <Location>]"; the body
# is in $TMP/probe.body, the headers in $TMP/probe.hdr.
probe() {
	local method=$1 url=$2
	shift 2
	local status loc
	status=$(curl -s -X "$method" -D "$TMP/probe.hdr" -o "$TMP/probe.body" -w '%{http_code}' "$@" "$url")
	loc=$(sed -n 's/^[Ll]ocation: //p' "$TMP/probe.hdr" | tr -d '\r')
	echo "$status${loc:+ $loc}"
}
# pbody <expression over d>: evaluates on the last probe's JSON body.
pbody() { json "$1" <"$TMP/probe.body"; }
store_counts() { curl -sf "$BASE/__dev/store" | json '[d.models.Grant ?? 0, d.signed_in_sessions, d.models.AuthorizationCode ?? 0, d.models.RefreshToken ?? 0].join(" ")'; }
expect "probe: nothing stored before the probes (grants, signed-in sessions, codes, refresh tokens)" "$(store_counts)" "0 0 0 0"
probe GET "$ISSUER/.well-known/openid-configuration" >/dev/null
expect "probe: discovery issuer is <endpoint>/oidc" "$(pbody d.issuer)" "$BASE/oidc"
PROBE_DATE=$(sed -n 's/^[Dd]ate: //p' "$TMP/probe.hdr" | tr -d '\r')
expect "probe: discovery's Date header gives the IdP's clock (within 5 s of ours)" \
	"$(node -e 'const t = Date.parse(process.argv[1]); process.stdout.write(String(Number.isFinite(t) && Math.abs(t - Date.now()) < 5000))' "$PROBE_DATE")" true
NO_CODE=devidp-probe-code-that-cannot-exist
expect "probe: token endpoint, good id and secret, unknown code → 400 invalid_grant (Logto's code field)" \
	"$(probe POST "$ISSUER/token" -u "$APP:$SECRET" -d grant_type=authorization_code -d "code=$NO_CODE") $(pbody '[d.code, d.error].join(" ")')" \
	"400 oidc.invalid_grant invalid_grant"
expect "probe: token endpoint, wrong secret → 401 invalid_client (client authentication failed)" \
	"$(probe POST "$ISSUER/token" -u "$APP:not-the-secret" -d grant_type=authorization_code -d "code=$NO_CODE") $(pbody '[d.code, d.error, d.error_description].join(" ")')" \
	"401 oidc.invalid_client invalid_client client authentication failed"
expect "probe: token endpoint, unknown id → 400 invalid_client (invalid client <id>)" \
	"$(probe POST "$ISSUER/token" -u "no-such-app:whatever" -d grant_type=authorization_code -d "code=$NO_CODE") $(pbody '[d.code, d.error, d.error_description].join(" ")')" \
	"400 oidc.invalid_client invalid_client invalid client no-such-app"
probe_auth() { # probe_auth <client_id> <redirect_uri> [extra query] [scope]
	probe GET "$ISSUER/auth?client_id=$1&redirect_uri=$(urlenc "$2")&response_type=code&scope=$(urlenc "${4:-openid}")&state=probe-state&code_challenge=$CHALLENGE&code_challenge_method=S256${3:+&$3}"
}
expect "probe: authorization request, registered redirect URI → 303 to Logto's sign-in page" \
	"$(probe_auth "$APP" "$REDIRECT_URI")" "303 /sign-in?app_id=$APP"
grep -qi '^set-cookie: _logto=' "$TMP/probe.hdr" || die "probe: the sign-in redirect sets Logto's _logto cookie"
ok "probe: the sign-in redirect sets Logto's _logto cookie"
expect "probe: authorization request, unregistered redirect URI → 400 invalid_redirect_uri" \
	"$(probe_auth "$APP" http://localhost:9/not-registered) $(pbody '[d.code, d.error, d.error_description].join(" | ")')" \
	"400 oidc.invalid_redirect_uri | invalid_redirect_uri | redirect_uri did not match any of the client's registered redirect_uris"
expect "probe: authorization request, unknown client → 400 invalid_client (invalid client <id>)" \
	"$(probe_auth no-such-app "$REDIRECT_URI") $(pbody '[d.error, d.error_description].join(" ")')" \
	"400 invalid_client invalid client no-such-app"
read -r status loc < <(probe_auth "$APP" "$REDIRECT_URI" "resource=$(urlenc https://unknown.example.test)")
expect "probe: unknown API resource → 303 to the redirect URI with error=invalid_target" \
	"$status ${loc%%\?*} $(qparam "$loc" error) | $(qparam "$loc" error_description) | $(qparam "$loc" state)" \
	"303 $REDIRECT_URI invalid_target | resource indicator is missing, or unknown | probe-state"
expect "probe: known API resource → 303 to the sign-in page" \
	"$(probe_auth "$APP" "$REDIRECT_URI" "resource=$(urlenc https://api.example.com)")" "303 /sign-in?app_id=$APP"
expect "probe: an unknown scope is not refused → 303 to the sign-in page" \
	"$(probe_auth "$APP" "$REDIRECT_URI" "" 'openid no:such:scope')" "303 /sign-in?app_id=$APP"
expect "probe: end session, unregistered post_logout_redirect_uri → 400 invalid_request" \
	"$(probe GET "$ISSUER/session/end?client_id=$APP&post_logout_redirect_uri=$(urlenc http://localhost:9/not-registered)") $(pbody '[d.code, d.error, d.error_description].join(" | ")')" \
	"400 oidc.invalid_request | invalid_request | post_logout_redirect_uri not registered"
expect "probe: end session, registered post_logout_redirect_uri, no session → 200" \
	"$(probe GET "$ISSUER/session/end?client_id=$APP&post_logout_redirect_uri=$(urlenc "$POST_LOGOUT")")" "200"
grep -q "action=\"$ISSUER/session/end/confirm\"" "$TMP/probe.body" && grep -q 'forms\[0\].submit()' "$TMP/probe.body" \
	|| die "probe: the end-session page submits itself to /session/end/confirm"
ok "probe: the end-session page submits itself to /session/end/confirm"
expect "probe: the probes created no grant, signed-in session, code or refresh token" "$(store_counts)" "0 0 0 0"
expect "probe: and ended no session" "$(curl -sf "$BASE/__dev/stats" | json d.end_sessions)" 0
curl -sf -X POST "$BASE/__dev/reset" >/dev/null # the counts checked below start here

# Login page shows the Logto parameters it received.
curl -s -c "$TMP/jar0" -b "$TMP/jar0" -o /dev/null -w '%{redirect_url}' \
	"$BASE/oidc/auth?client_id=$APP&redirect_uri=$(urlenc "$REDIRECT_URI")&response_type=code&scope=openid&code_challenge=$CHALLENGE&code_challenge_method=S256&first_screen=identifier:sign_in&identifier=username%20email&login_hint=bob&ui_locales=ko-KR&organization_id=$ACME" >"$TMP/loc"
curl -s -c "$TMP/jar0" -b "$TMP/jar0" "$(cat "$TMP/loc")" >"$TMP/login.html"
grep -q '<title>Sign in · Dev Logto</title>' "$TMP/login.html" || die "login page title"
for p in "first_screen\">.*identifier:sign_in" "identifier\">.*username email" "login_hint\">.*bob" "ui_locales\">.*ko-KR" "organization_id\">.*$ACME"; do
	grep -q "data-param=\"$p" "$TMP/login.html" || die "login page shows $p"
done
grep -q 'name="username" type="text" value="bob"' "$TMP/login.html" || die "login_hint prefills the username"
grep -q 'Continue with Kakao' "$TMP/login.html" && grep -q 'Create account</a>' "$TMP/login.html" || die "login page offers Kakao and Create account"
ok "login page shows first_screen, identifier, login_hint, ui_locales, organization_id"
expect "first_screen=identifier:sign_in → Logto's /identifier-sign-in?app_id=… URL" "$(cat "$TMP/loc")" \
	"$BASE/identifier-sign-in?app_id=$APP&organization_id=$ACME&ui_locales=ko-KR&login_hint=bob&identifier=username+email"
uid=$(page_uid "$TMP/login.html")
status=$(curl -s -o "$TMP/wrong.html" -w '%{http_code}' -c "$TMP/jar0" -b "$TMP/jar0" -d username=bob -d password=wrong "$BASE/interaction/$uid/login")
expect "wrong password: page again" "$status" 401
grep -q 'Incorrect username or password' "$TMP/wrong.html" || die "wrong password: error message"
ok "wrong password: error message"
expect "authorization request recorded" "$(curl -sf "$BASE/__dev/requests" | json 'd.at(-1).params.first_screen + " " + d.at(-1).params.organization_id + " " + typeof d.at(-1).timestamp')" "identifier:sign_in $ACME string"

# Legacy interaction_mode=signUp opens the registration form.
loc=$(curl -s -c "$TMP/jar0" -b "$TMP/jar0" -o /dev/null -w '%{redirect_url}' \
	"$BASE/oidc/auth?client_id=$APP&redirect_uri=$(urlenc "$REDIRECT_URI")&response_type=code&scope=openid&interaction_mode=signUp")
expect "interaction_mode=signUp → Logto's /register?app_id=… URL" "$loc" "$BASE/register?app_id=$APP"
curl -s -c "$TMP/jar0" -b "$TMP/jar0" -o "$TMP/signup.html" "$loc"
grep -q '<title>Create account' "$TMP/signup.html" || die "interaction_mode=signUp"
ok "interaction_mode=signUp shows the registration form (PKCE optional for a confidential client)"

echo "== code flow (alice)"
authorize "$TMP/jar-alice" "$SIGNIN_QUERY&login_hint=alice" alice || die "alice sign-in"
expect "callback carries iss" "$(qparam "$CB" iss)" "$ISSUER"
expect_match "callback carries code and state" "$(qparam "$CB" code) $(qparam "$CB" state)" '^.+ st-[0-9]+$'
expect "code exchange with Basic auth" "$(exchange "$CB" "$TMP/t1.json")" 200
AT=$(json d.access_token <"$TMP/t1.json")
IDT=$(json d.id_token <"$TMP/t1.json")
RT=$(json d.refresh_token <"$TMP/t1.json")
expect "opaque access token (43 chars)" "${#AT}" 43
expect "ID token header" "$(jwt_part 0 "$IDT" | json 'd.alg')" ES384
verify_jwt "$IDT" "$ISSUER/jwks" || die "ID token signature"
ok "ID token signature verifies with the JWKS"
expect "ID token claims" "$(jwt_part 1 "$IDT" | json '[d.iss,d.aud,d.sub,d.name,d.username,d.email,d.email_verified,d.roles.join(),d.organizations.length,typeof d.created_at,d.organization_roles.length].join("|")')" \
	"$ISSUER|$APP|$ALICE|Alice Park|alice|alice@example.com|true|admin|2|number|2"
expect "ID token: sid (session required), no auth_time, no organization_data" "$(jwt_part 1 "$IDT" | json '[typeof d.sid, d.auth_time, d.organization_data].join("|")')" "string||"
expect_match "ID token created_at in ms" "$(claim created_at "$IDT")" '^[0-9]{13}$'
expect_match "ID token updated_at in ms" "$(claim updated_at "$IDT")" '^[0-9]{13}$'
curl -sf -H "Authorization: Bearer $AT" "$ISSUER/me" >"$TMP/me.json"
expect "userinfo (/oidc/me)" "$(ACME=$ACME json '[d.sub,d.name,d.organization_data.find(o=>o.id===process.env.ACME).name,d.organization_roles.includes(process.env.ACME+":admin")].join("|")' <"$TMP/me.json")" \
	"$ALICE|Alice Park|Acme Inc.|true"

echo "== resource and organization tokens"
expect "refresh with resource" "$(token "$TMP/t2.json" grant_type=refresh_token "refresh_token=$RT" resource=https://api.example.com)" 200
RT=$(json d.refresh_token <"$TMP/t2.json")
RAT=$(json d.access_token <"$TMP/t2.json")
expect "resource token header" "$(jwt_part 0 "$RAT" | json 'd.typ+" "+d.alg')" "at+jwt ES384"
verify_jwt "$RAT" "$ISSUER/jwks" || die "resource token signature"
expect "resource token claims" "$(jwt_part 1 "$RAT" | json 'Object.keys(d).sort().join(" ")')" "aud client_id exp iat iss jti scope sub"
expect "resource token aud" "$(claim aud "$RAT")" https://api.example.com
expect "resource token scope: granted and asked for" "$(claim scope "$RAT")" "read:docs write:docs"
expect "refresh returns a fresh ID token" "$(jwt_part 1 "$(json d.id_token <"$TMP/t2.json")" | json 'd.sub+" "+d.nonce')" "$ALICE $(claim nonce "$IDT")"
expect "resource not asked at sign-in" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RT" resource=https://billing.example.com)" 400
expect "  error invalid_target" "$(json d.error <"$TMP/t.json")" invalid_target

expect "organization token" "$(token "$TMP/t3.json" grant_type=refresh_token "refresh_token=$RT" "organization_id=$ACME")" 200
RT=$(json d.refresh_token <"$TMP/t3.json")
OAT=$(json d.access_token <"$TMP/t3.json")
expect "organization token aud" "$(claim aud "$OAT")" "urn:logto:organization:$ACME"
expect "organization token scope (acme admin)" "$(claim scope "$OAT")" "manage:members read:reports"
expect "organization token header" "$(jwt_part 0 "$OAT" | json 'd.typ')" "at+jwt"
verify_jwt "$OAT" "$ISSUER/jwks" || die "organization token signature"
ok "organization token signature verifies with the JWKS (kid of the tenant's key)"
expect "organization token (globex member)" "$(token "$TMP/t3.json" grant_type=refresh_token "refresh_token=$RT" "organization_id=$GLOBEX")" 200
RT=$(json d.refresh_token <"$TMP/t3.json")
expect "  scope read:reports" "$(claim scope "$(json d.access_token <"$TMP/t3.json")")" "read:reports"
expect "organization + resource" "$(token "$TMP/t4.json" grant_type=refresh_token "refresh_token=$RT" "organization_id=$GLOBEX" resource=https://api.example.com)" 200
RT=$(json d.refresh_token <"$TMP/t4.json")
expect "  aud, organization_id claim" "$(jwt_part 1 "$(json d.access_token <"$TMP/t4.json")" | json 'd.aud+" "+d.organization_id')" "https://api.example.com $GLOBEX"
expect "organization token for a non-member" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RT" organization_id=notamember01)" 403
expect "  error access_denied" "$(json d.error <"$TMP/t.json")" access_denied

echo "== refresh-token rotation and reuse detection (and its counters, GET /__dev/refresh-reuse)"
# reuse_delta: the change of "refresh_token_grants reused_within_grace
# reused_refused double_redemptions" since the last reuse_mark.
reuse_now() { curl -sf "$BASE/__dev/refresh-reuse" | json '[d.refresh_token_grants, d.reused_within_grace, d.reused_refused, d.double_redemptions].join(" ")'; }
reuse_mark() { REUSE_MARK=$(reuse_now); }
reuse_delta() {
	local now
	now=$(reuse_now)
	node -e 'const [a, b] = process.argv.slice(1).map((s) => s.split(" ").map(Number)); process.stdout.write(b.map((v, i) => v - a[i]).join(" "))' "$REUSE_MARK" "$now"
}
reuse_mark
# The two redemptions back to back (nothing slow in between: the grace is 3 s).
R1_STATUS=$(token "$TMP/r1.json" grant_type=refresh_token "refresh_token=$RT")
R2_STATUS=$(token "$TMP/r2.json" grant_type=refresh_token "refresh_token=$RT")
expect "rotate (always): refresh" "$R1_STATUS" 200
R1=$(json d.refresh_token <"$TMP/r1.json")
[ "$R1" != "$RT" ] || die "refresh token rotated"
ok "refresh token rotated"
expect "used token again within 3 s still works" "$R2_STATUS" 200
R2=$(json d.refresh_token <"$TMP/r2.json")
expect "reuse counters: redeemed, then redeemed again within the grace → 2 grants, reused_within_grace +1 exactly" "$(reuse_delta)" "2 1 0 1"
reuse_mark
sleep 3.5
expect "used token after 3 s" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RT")" 400
expect "  error invalid_grant" "$(json d.error <"$TMP/t.json")" invalid_grant
expect "reuse counters: after the grace → reused_refused +1 exactly, no grant served" "$(reuse_delta)" "0 0 1 1"
expect "reuse counters are in /__dev/stats too" "$(curl -sf "$BASE/__dev/stats" | json '[d.refresh_token_grants, d.refresh_token_reuse_within_grace, d.refresh_token_reuse_refused].join(" ")')" \
	"$(reuse_now | cut -d' ' -f1-3)"
expect "newest token revoked with the grant" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$R1")" 400
expect "grace-issued token revoked too" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$R2")" 400
expect "reuse counters: tokens of a revoked grant are not reuses" "$(reuse_delta)" "0 0 1 1"
authorize "$TMP/jar-alice" "$SIGNIN_QUERY" || die "alice again, for concurrent refreshes"
exchange "$CB" "$TMP/cc.json" >/dev/null
reuse_mark
RTC=$(json d.refresh_token <"$TMP/cc.json")
token "$TMP/cc1.json" grant_type=refresh_token "refresh_token=$RTC" >"$TMP/cc1.status" &
CC1=$!
token "$TMP/cc2.json" grant_type=refresh_token "refresh_token=$RTC" >"$TMP/cc2.status" &
wait "$CC1" $! || true
expect "two concurrent refreshes with one token: both served (Logto's grace), counted as one double redemption" \
	"$(cat "$TMP/cc1.status") $(cat "$TMP/cc2.status") $(reuse_delta)" "200 200 2 1 0 1"

echo "== a refused resource still rotates (as in Logto: rotation comes before the resource check)"
authorize "$TMP/jar-alice" "$SIGNIN_QUERY" || die "alice again"
exchange "$CB" "$TMP/x.json" >/dev/null
RTX=$(json d.refresh_token <"$TMP/x.json")
expect "resource not sent at sign-in: Logto's body" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RTX" resource=https://billing.example.com) $(json 'JSON.stringify(d)' <"$TMP/t.json")" \
	'400 {"code":"oidc.invalid_target","message":"Invalid resource indicator.","error":"invalid_target","error_description":"resource indicator is missing, or unknown"}'
expect "  the refused token again within 3 s (reuse grace)" "$(token "$TMP/x2.json" grant_type=refresh_token "refresh_token=$RTX")" 200
sleep 3.5
expect "  the refused token after 3 s: consumed by the refusal" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RTX") $(json d.error <"$TMP/t.json")" "400 invalid_grant"
expect "  and the grant is revoked" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$(json d.refresh_token <"$TMP/x2.json")")" 400

echo "== second sign-in (bob), revocation"
authorize "$TMP/jar-bob" "$SIGNIN_QUERY" bob || die "bob sign-in"
expect "bob code exchange" "$(exchange "$CB" "$TMP/b.json")" 200
expect "bob: picture is null" "$(jwt_part 1 "$(json d.id_token <"$TMP/b.json")" | json 'd.picture === null && "picture" in d')" true
RTB=$(json d.refresh_token <"$TMP/b.json")
expect "bob: resource token scope" "$(token "$TMP/b2.json" grant_type=refresh_token "refresh_token=$RTB" resource=https://api.example.com && claim scope "$(json d.access_token <"$TMP/b2.json")")" "200read:docs"
RTB=$(json d.refresh_token <"$TMP/b2.json")
expect "bob: organization token (acme member)" "$(token "$TMP/b3.json" grant_type=refresh_token "refresh_token=$RTB" "organization_id=$ACME" && claim scope "$(json d.access_token <"$TMP/b3.json")")" "200read:reports"
RTB=$(json d.refresh_token <"$TMP/b3.json")
expect "client_secret_post refused" "$(curl -s -o "$TMP/t.json" -w '%{http_code}' -d "client_id=$APP" -d "client_secret=$SECRET" -d grant_type=refresh_token -d "refresh_token=$RTB" "$ISSUER/token") $(json d.error <"$TMP/t.json")" "401 invalid_client"
expect "revocation with client auth" "$(curl -s -o /dev/null -w '%{http_code}' -u "$APP:$SECRET" -d "token=$RTB" -d token_type_hint=refresh_token "$ISSUER/token/revocation")" 200
expect "revoked token" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RTB")" 400
expect "  error invalid_grant" "$(json d.error <"$TMP/t.json")" invalid_grant
expect "revocation without client auth" "$(curl -s -o /dev/null -w '%{http_code}' -d "token=x" "$ISSUER/token/revocation")" 400

echo "== signed-in user, prompt=consent: straight back"
authorize "$TMP/jar-alice" "$SIGNIN_QUERY" || die "signed-in alice sent back"
expect "no page shown" "$PAGES" 0
expect "code exchange" "$(exchange "$CB" "$TMP/t5.json")" 200
IDT=$(json d.id_token <"$TMP/t5.json")
SID=$(claim sid "$IDT")

echo "== RP-initiated logout and back-channel logout"
: >"$TMP/backchannel.log"
EXPIRED_HINT_NOTE="(expired hints are checked on the second instance)"
status=$(curl -s -o "$TMP/logout.html" -c "$TMP/jar-alice" -b "$TMP/jar-alice" -w '%{http_code}' \
	"$ISSUER/session/end?client_id=$APP&post_logout_redirect_uri=$(urlenc "$POST_LOGOUT")&id_token_hint=$IDT&state=bye")
expect "end session page" "$status" 200
grep -q "document.getElementById('op.logoutForm').submit()" "$TMP/logout.html" || die "logout page submits itself"
ok "logout page submits itself"
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$TMP/logout.html")
read -r status loc < <(curl -s -o /dev/null -c "$TMP/jar-alice" -b "$TMP/jar-alice" -w '%{http_code} %{redirect_url}\n' -d "xsrf=$XSRF" -d logout=yes "$ISSUER/session/end/confirm")
expect "confirm redirects to post_logout_redirect_uri" "$status $loc" "303 ${POST_LOGOUT}?state=bye"
for _ in $(seq 1 30); do [ -s "$TMP/backchannel.log" ] && break; sleep 0.1; done
LT=$(sed -n '1s/^logout_token=//p' "$TMP/backchannel.log")
[ -n "$LT" ] || die "back-channel logout token received"
verify_jwt "$LT" "$ISSUER/jwks" || die "logout token signature"
expect "logout token claims" "$(jwt_part 1 "$LT" | json '[d.iss,d.aud,d.sub,d.sid,typeof d.iat,typeof d.jti,JSON.stringify(d.events)].join("|")')" \
	"$ISSUER|$APP|$ALICE|$SID|number|string|{\"http://schemas.openid.net/event/backchannel-logout\":{}}"
authorize "$TMP/jar-alice" "$SIGNIN_QUERY" alice || die "sign in again after logout"
expect "IdP session ended: login page again" "$PAGES" 1
status=$(curl -s -o "$TMP/t.json" -w '%{http_code}' "$ISSUER/session/end?client_id=$APP&post_logout_redirect_uri=$(urlenc http://evil.example/)")
expect "unregistered post_logout_redirect_uri" "$status $(json d.error_description <"$TMP/t.json")" "400 post_logout_redirect_uri not registered"

echo "== admin sign-out (/__dev/logout)"
authorize "$TMP/jar-carol" "$SIGNIN_QUERY" carol || die "carol sign-in"
exchange "$CB" "$TMP/c.json" >/dev/null
curl -sf -X POST "$BASE/__dev/logout?sub=$CAROL" >"$TMP/adm.json"
expect "admin sign-out sends back-channel logout" "$(json '[d.sessions_ended, d.backchannel.length, d.backchannel[0].status, d.backchannel[0].sub].join(" ")' <"$TMP/adm.json")" "1 1 200 $CAROL"
expect "admin sign-out revokes tokens" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$(json d.refresh_token <"$TMP/c.json")")" 400

echo "== registration, Kakao, first_screen"
authorize "$TMP/jar-new" "$SIGNIN_QUERY&first_screen=register" "newuser$RANDOM" || die "register"
expect "registered user signs in" "$(exchange "$CB" "$TMP/n.json")" 200
grep -q '<title>Create account' "$TMP/shown.html" || die "first_screen=register shows Create account"
ok "first_screen=register shows the registration form"
authorize "$TMP/jar-kakao" "prompt=consent&scope=$(urlenc 'openid profile identities')&direct_sign_in=social:kakao" kakao || die "kakao"
grep -q '<title>Kakao' "$TMP/shown.html" || die "direct_sign_in=social:kakao shows the Kakao page"
expect "Kakao user" "$(exchange "$CB" "$TMP/k.json" && jwt_part 1 "$(json d.id_token <"$TMP/k.json")" | json 'd.name+" "+Object.keys(d.identities)')" "200Kakao User kakao"

echo "== key rotation"
OLD_KID=$(curl -sf "$ISSUER/jwks" | json 'd.keys[0].kid')
NEW_KID=$(curl -sf -X POST "$BASE/__dev/rotate-keys" | json d.current)
expect "JWKS keeps the old key" "$(curl -sf "$ISSUER/jwks" | json 'd.keys.map(k=>k.kid).join(" ")')" "$NEW_KID $OLD_KID"
authorize "$TMP/jar-bob" "$SIGNIN_QUERY" || die "bob again"
exchange "$CB" "$TMP/b4.json" >/dev/null
expect "new tokens use the new kid" "$(jwt_part 0 "$(json d.id_token <"$TMP/b4.json")" | json d.kid)" "$NEW_KID"
verify_jwt "$(json d.id_token <"$TMP/b4.json")" "$ISSUER/jwks" || die "new key verifies"
NEWER=$(curl -sf -X POST "$BASE/__dev/rotate-keys?drop_old=1" | json d.current)
expect "drop_old leaves one key" "$(curl -sf "$ISSUER/jwks" | json 'd.keys.map(k=>k.kid).join(" ")')" "$NEWER"

echo "== failure injection, stats"
curl -sf -X POST "$BASE/__dev/fail?endpoint=token&mode=500&count=1" >/dev/null
RTB=$(json d.refresh_token <"$TMP/b4.json")
expect "injected 500" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RTB")" 500
expect "then normal again" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$RTB")" 200
curl -sf -X POST "$BASE/__dev/fail?endpoint=jwks&mode=garbage&count=2" >/dev/null
curl -s -o "$TMP/garbage" "$ISSUER/jwks"
json d <"$TMP/garbage" >/dev/null 2>&1 && die "garbage JWKS is not JSON"
ok "injected garbage"
curl -sf -X POST "$BASE/__dev/fail?endpoint=discovery&mode=slow&delay_ms=1200" >/dev/null
expect_match "injected slowness" "$(curl -s -o /dev/null -w '%{time_total}' "$ISSUER/.well-known/openid-configuration")" '^[1-9]'
curl -sf "$BASE/__dev/stats" >"$TMP/stats.json"
expect "stats" "$(json '[d.authorization_code_grants, d.refresh_token_grants, d.refresh_token_grants_by_resource["https://api.example.com"], d.organization_token_grants, d.invalid_grants, d.revocations, d.end_sessions, d.backchannel_logouts_sent, d.userinfo_requests].join(" ")' <"$TMP/stats.json")" \
	"9 12 3 4 7 1 1 2 1"
curl -sf -X POST "$BASE/__dev/reset" >/dev/null
expect "reset" "$(curl -sf "$BASE/__dev/stats" | json 'd.authorization_code_grants + d.refresh_token_grants')$(curl -sf "$BASE/__dev/requests" | json 'd.length')" 00
stop_idp

echo "== Logto's strictness (strict-check.mjs, default settings)"
start_idp idp-strict
node strict-check.mjs "$BASE" | tee "$TMP/strict.out" || die "strict-check.mjs"
PASS=$((PASS + $(grep -c '^ok ' "$TMP/strict.out")))
stop_idp

echo "== second instance (env client, RS256, DEVIDP_ROTATE=logto, short TTLs, no extended claims, client_secret_post)"
start_idp idp2 DEVIDP_CLIENT_ID=$APP DEVIDP_CLIENT_SECRET=$SECRET DEVIDP_REDIRECT_URIS="$REDIRECT_URI http://localhost:9/other" \
	DEVIDP_POST_LOGOUT_REDIRECT_URIS="$POST_LOGOUT" DEVIDP_ALG=RS256 DEVIDP_ROTATE=logto DEVIDP_REFRESH_TOKEN_TTL=10 \
	DEVIDP_ID_TOKEN_TTL=2 DEVIDP_ACCESS_TOKEN_TTL=5 DEVIDP_ID_TOKEN_EXTENDED_CLAIMS=0 DEVIDP_CLIENT_SECRET_POST=1 \
	DEVIDP_AUTHORIZATION_CODE_TTL=3
ISSUER="$BASE/oidc"
expect "RS256 discovery" "$(curl -sf "$ISSUER/.well-known/openid-configuration" | json 'd.id_token_signing_alg_values_supported.join()')" RS256
# A code left to expire (DEVIDP_AUTHORIZATION_CODE_TTL=3), taken first so it
# is long expired when it is tried, whatever the machine's load.
authorize "$TMP/jar-late" "$SIGNIN_QUERY" bob || die "bob, code left to expire"
LATE_CB=$CB
authorize "$TMP/jar2" "$SIGNIN_QUERY" alice || die "sign-in with env client"
expect "code exchange" "$(exchange "$CB" "$TMP/e1.json")" 200
E1_MS=$(now_ms) # the refresh token's iat is at most this
# userinfo at once: the access token lives DEVIDP_ACCESS_TOKEN_TTL=5 s, and the
# checks below take seconds on a loaded machine.
curl -s -o "$TMP/me2.json" -H "Authorization: Bearer $(sed -n 's/.*"access_token": *"\([^"]*\)".*/\1/p' "$TMP/e1.json")" "$ISSUER/me"
IDT=$(json d.id_token <"$TMP/e1.json")
verify_jwt "$IDT" "$ISSUER/jwks" || die "RS256 ID token signature"
expect "no extended claims in ID token, no sid" "$(jwt_part 1 "$IDT" | json '[d.roles,d.organizations,d.sid,d.name,d.exp-d.iat].join("|")')" "|||Alice Park|2"
expect "userinfo still has them" "$(json 'd.roles.join()+" "+d.organizations.length' <"$TMP/me2.json")" "admin 2"
RT=$(json d.refresh_token <"$TMP/e1.json")
token "$TMP/e2.json" grant_type=refresh_token "refresh_token=$RT" resource=https://api.example.com >/dev/null
expect "logto rotation: same token before 70 %" "$(json d.refresh_token <"$TMP/e2.json")" "$RT"
expect "access token TTL" "$(json d.expires_in <"$TMP/e2.json")" 5
expect "DEVIDP_CLIENT_SECRET_POST=1: client_secret_post accepted" "$(curl -s -o "$TMP/t.json" -w '%{http_code}' -d "client_id=$APP" -d "client_secret=$SECRET" -d grant_type=refresh_token -d "refresh_token=$RT" "$ISSUER/token")" 200
# 70 % of the 10 s lifetime is 7 s after the exchange, its end 10 s: refresh
# at 7.6 s (timed from the clock, not after a fixed sleep, as the checks above
# take seconds on a loaded machine).
sleep_until $((E1_MS + 7600))
E3_STATUS=$(token "$TMP/e3.json" grant_type=refresh_token "refresh_token=$RT")
E3_LATE=$(( $(now_ms) - E1_MS ))
[ "$E3_STATUS" = 200 ] || die "logto rotation: the refresh 7.6 s into the 10 s lifetime got $E3_STATUS ($E3_LATE ms after the exchange): $(cat "$TMP/e3.json")"
RT2=$(json d.refresh_token <"$TMP/e3.json")
[[ $RT2 =~ ^[A-Za-z0-9_-]{43}$ ]] && [ "$RT2" != "$RT" ] || die "logto rotation: rotated after 70 % (got '$RT2')"
ok "logto rotation: rotated after 70 %"
expect "authorization code after its TTL (DEVIDP_AUTHORIZATION_CODE_TTL=3)" "$(exchange "$LATE_CB" "$TMP/t.json") $(json d.error <"$TMP/t.json")" "400 invalid_grant"
expect "DEVIDP_ID_TOKEN_TTL=2: the refresh's ID token lives 2 s" "$(jwt_part 1 "$(json d.id_token <"$TMP/e3.json")" | json 'd.exp-d.iat')" 2
curl -s -u "$APP:$SECRET" -d "token=$RT2" "$ISSUER/token/introspection" >"$TMP/i2.json"
expect "DEVIDP_REFRESH_TOKEN_TTL=10: the rotated refresh token gets the full 10 s again" "$(json '[d.active, d.exp-d.iat].join(" ")' <"$TMP/i2.json")" "true 10"
sleep_until $((E1_MS + 11000))
expect "past the first refresh token's lifetime, the session in use still refreshes (same token: under 70 % of its own)" \
	"$(token "$TMP/e5.json" grant_type=refresh_token "refresh_token=$RT2") $([ "$(json d.refresh_token <"$TMP/e5.json")" = "$RT2" ] && echo same)" "200 same"
authorize "$TMP/jar3" "prompt=consent&scope=$(urlenc 'openid offline_access profile')" bob || die "bob without organization scope"
exchange "$CB" "$TMP/e4.json" >/dev/null
expect "organization token without urn:logto:scope:organizations" "$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$(json d.refresh_token <"$TMP/e4.json")" organization_id=$(curl -sf "$BASE/__dev/organizations" | json 'd.find(o=>o.slug==="acme").id')) $(json d.error <"$TMP/t.json")" \
	"403 insufficient_scope"
status=$(curl -s -o "$TMP/logout2.html" -c "$TMP/jar2" -b "$TMP/jar2" -w '%{http_code}' "$ISSUER/session/end?post_logout_redirect_uri=$(urlenc "$POST_LOGOUT")&id_token_hint=$IDT")
expect "expired id_token_hint accepted" "$status" 200
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$TMP/logout2.html")
read -r status loc < <(curl -s -o /dev/null -c "$TMP/jar2" -b "$TMP/jar2" -w '%{http_code} %{redirect_url}\n' -d "xsrf=$XSRF" -d logout=yes "$ISSUER/session/end/confirm")
expect "  redirects to post_logout_redirect_uri" "$status $loc" "303 $POST_LOGOUT"
authorize "$TMP/jar2" "$SIGNIN_QUERY" alice || die "sign-in again"
curl -s -c "$TMP/jar2" -b "$TMP/jar2" -o "$TMP/logout3.html" "$ISSUER/session/end?post_logout_redirect_uri=$(urlenc "$POST_LOGOUT")"
XSRF=$(sed -n 's/.*name="xsrf" value="\([^"]*\)".*/\1/p' "$TMP/logout3.html")
read -r status loc < <(curl -s -o /dev/null -c "$TMP/jar2" -b "$TMP/jar2" -w '%{http_code} %{redirect_url}\n' -d "xsrf=$XSRF" -d logout=yes "$ISSUER/session/end/confirm")
expect "without client_id or hint: IdP's own success page" "$status $loc" "303 $ISSUER/session/end/success"
stop_idp

echo "== a tenant with some extended ID token claims (DEVIDP_ID_TOKEN_EXTENDED_CLAIMS=\"roles organization_roles\")"
start_idp idp3 DEVIDP_CLIENT_ID=$APP DEVIDP_CLIENT_SECRET=$SECRET DEVIDP_REDIRECT_URIS="$REDIRECT_URI" \
	DEVIDP_ID_TOKEN_EXTENDED_CLAIMS="roles organization_roles"
ISSUER="$BASE/oidc"
authorize "$TMP/jar4" "prompt=consent&scope=$(urlenc 'openid offline_access profile roles custom_data urn:logto:scope:organizations urn:logto:scope:organization_roles')" alice || die "sign-in, some extended claims"
exchange "$CB" "$TMP/p1.json" >/dev/null
expect "ID token: only the enabled extended claims" "$(jwt_part 1 "$(json d.id_token <"$TMP/p1.json")" | json '["roles","organization_roles","organizations","custom_data"].map(c=>c in d).join()')" "true,true,false,false"
expect "userinfo: all of them" "$(curl -sf -H "Authorization: Bearer $(json d.access_token <"$TMP/p1.json")" "$ISSUER/me" | json '["roles","organization_roles","organizations","custom_data"].map(c=>c in d).join()')" "true,true,true,true"
stop_idp
DEVIDP_PORT=0 DEVIDP_ID_TOKEN_EXTENDED_CLAIMS=roles,organization_data node server.js >"$TMP/bad.out" 2>&1 && die "unknown extended claim accepted"
expect "unknown extended claim refused" "$(grep -c 'not an extended claim: organization_data' "$TMP/bad.out")" 1

echo "== DEVIDP_STORE: kill -9 and a restart with the same store lose nothing"
export STORE="$TMP/store/devidp.json"
STORE_ENV=(DEVIDP_STORE="$STORE" DEVIDP_CLIENT_ID=$APP DEVIDP_CLIENT_SECRET=$SECRET DEVIDP_REDIRECT_URIS="$REDIRECT_URI" DEVIDP_ROTATE=always)
start_idp idp-store "${STORE_ENV[@]}"
ISSUER="$BASE/oidc"
STORE_BASE=$BASE
[ -s "$STORE" ] || die "DEVIDP_STORE: a snapshot is written at start"
ok "DEVIDP_STORE: a snapshot is written at start"
authorize "$TMP/jar-store" "$SIGNIN_QUERY" alice || die "store: sign-in"
expect "store: code exchange" "$(exchange "$CB" "$TMP/s1.json")" 200
S_IDT=$(json d.id_token <"$TMP/s1.json")
S_AT=$(json d.access_token <"$TMP/s1.json")
S_KID=$(jwt_part 0 "$S_IDT" | json d.kid)
S_RT1=$(json d.refresh_token <"$TMP/s1.json")
token "$TMP/s2.json" grant_type=refresh_token "refresh_token=$S_RT1" >/dev/null
S_AGAIN=$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$S_RT1") # within the 3 s grace
S_RT=$(json d.refresh_token <"$TMP/s2.json")
[ -n "$S_RT" ] && [ "$S_RT" != "$S_RT1" ] || die "store: the refresh token rotated before the kill"
expect "store: the rotated token redeemed again within the grace (a double redemption)" "$S_AGAIN" 200
authorize "$TMP/jar-store-new" "prompt=consent&scope=$(urlenc 'openid offline_access profile')&first_screen=register" "storeuser$RANDOM" || die "store: register"
exchange "$CB" "$TMP/s3.json" >/dev/null
kill -9 "$IDP_PID"
wait "$IDP_PID" 2>/dev/null || true
printf '{"op":"set","m":"Session","id":"torn-by-the-ki' >>"$STORE.journal" # as if the kill tore a write
start_idp idp-store2 "${STORE_ENV[@]}" DEVIDP_PORT="${STORE_BASE##*:}"
ISSUER="$BASE/oidc"
expect "store: restarted on the same port" "$BASE" "$STORE_BASE"
expect "store: the reuse counters survive the restart (grants, within grace, refused, double redemptions)" \
	"$(curl -sf "$BASE/__dev/refresh-reuse" | json '[d.refresh_token_grants, d.reused_within_grace, d.reused_refused, d.double_redemptions].join(" ")')" "2 1 0 1"
grep -q 'journal entries replayed, 1 torn skipped' "$TMP/idp-store2.err" || die "store: the journal is replayed, a torn line skipped: $(cat "$TMP/idp-store2.err")"
ok "store: the journal is replayed, a torn last line skipped"
expect "store: the JWKS kid is the same after the restart" "$(curl -sf "$ISSUER/jwks" | json 'd.keys.map(k=>k.kid).join(" ")')" "$S_KID"
verify_jwt "$S_IDT" "$ISSUER/jwks" || die "store: an ID token signed before the restart verifies after it"
ok "store: an ID token signed before the restart verifies after it"
expect "store: the refresh token rotated just before the kill refreshes" "$(token "$TMP/s4.json" grant_type=refresh_token "refresh_token=$S_RT")" 200
expect "store: and the new ID token has the same kid" "$(jwt_part 0 "$(json d.id_token <"$TMP/s4.json")" | json d.kid)" "$S_KID"
expect "store: an access token from before the restart works at userinfo" \
	"$(curl -s -o "$TMP/s5.json" -w '%{http_code}' -H "Authorization: Bearer $S_AT" "$ISSUER/me") $(json d.username <"$TMP/s5.json")" "200 alice"
authorize "$TMP/jar-store" "$SIGNIN_QUERY" || die "store: the IdP session (cookie and session) survives the restart"
expect "store: the IdP session survives the restart (straight back, no page)" "$PAGES" 0
expect "store: a user who registered before the restart refreshes after it" \
	"$(token "$TMP/s6.json" grant_type=refresh_token "refresh_token=$(json d.refresh_token <"$TMP/s3.json")")" 200
sleep 3 # past the grace of the redemption before the kill
expect "store: the token rotated before the restart, presented after the grace: refused (its consumption was kept)" \
	"$(token "$TMP/t.json" grant_type=refresh_token "refresh_token=$S_RT1") $(json d.error <"$TMP/t.json") $(curl -sf "$BASE/__dev/refresh-reuse" | json '[d.reused_within_grace, d.reused_refused].join(" ")')" \
	"400 invalid_grant 1 1"
expect "store: POST /__dev/store/snapshot folds the journal into the snapshot" \
	"$(curl -sf -X POST "$BASE/__dev/store/snapshot" | json '[d.persistence.journal_bytes, d.persistence.file === process.env.STORE, d.signed_in_sessions > 0].join(" ")')" "0 true true"
stop_idp

echo "== P-256 and P-521 tenants (DEVIDP_ALG=ES256, ES512)"
for pair in ES256/P-256 ES512/P-521; do
	start_idp "idp-${pair%/*}" DEVIDP_ALG="${pair%/*}" DEVIDP_CLIENT_ID=$APP DEVIDP_CLIENT_SECRET=$SECRET DEVIDP_REDIRECT_URIS="$REDIRECT_URI"
	ISSUER="$BASE/oidc"
	expect "${pair%/*}: discovery and JWKS" "$(curl -sf "$ISSUER/.well-known/openid-configuration" | json 'd.id_token_signing_alg_values_supported.join()') $(curl -sf "$ISSUER/jwks" | json 'd.keys.map(k=>k.kty+"/"+k.crv+"/"+k.alg).join()')" \
		"${pair%/*} EC/${pair#*/}/${pair%/*}"
	authorize "$TMP/jar-${pair%/*}" "prompt=consent&scope=$(urlenc 'openid offline_access profile')" alice || die "${pair%/*} sign-in"
	exchange "$CB" "$TMP/alg.json" >/dev/null
	IDT=$(json d.id_token <"$TMP/alg.json")
	expect "${pair%/*}: ID token alg" "$(jwt_part 0 "$IDT" | json d.alg)" "${pair%/*}"
	verify_jwt "$IDT" "$ISSUER/jwks" || die "${pair%/*} ID token signature"
	ok "${pair%/*}: ID token signature verifies with the JWKS"
	stop_idp
done

echo "== a taken port: the dev IdP stops at once and names DEVIDP_PORT (make demo relies on it)"
start_idp idp-port
TAKEN=${BASE##*:}
set +e
DEVIDP_PORT=$TAKEN timeout 20 node server.js >"$TMP/taken.out" 2>"$TMP/taken.err"
rc=$?
set -e
expect "taken port: exit status 2, no listening line" "$rc $(grep -c '^devidp listening on ' "$TMP/taken.out")" "2 0"
grep -q "cannot listen on 127.0.0.1:$TAKEN: .*EADDRINUSE.*set DEVIDP_PORT to another one" "$TMP/taken.err" || die "taken port: the error names DEVIDP_PORT: $(cat "$TMP/taken.err")"
ok "taken port: the error names DEVIDP_PORT"
if [ -f ../../.ci/lib.sh ]; then
	(source ../../.ci/lib.sh && port_taken "$TAKEN") || die ".ci/lib.sh port_taken: the port is taken"
	ok ".ci/lib.sh port_taken: sees the dev IdP's port taken"
	rc=$(source ../../.ci/lib.sh
		DEVIDP_PORT=$TAKEN node server.js >"$TMP/taken2.out" 2>/dev/null &
		wait_devidp $! "$TMP/taken2.out" 20 && echo 0 || echo 1)
	expect ".ci/lib.sh wait_devidp: fails for a dev IdP that cannot listen, though the port answers" "$rc" 1
fi
stop_idp

echo "== 20 starts in a row"
slowest=0
for i in $(seq 1 20); do
	start=$(date +%s%N)
	start_idp "idp-start-$i"
	curl -sf "$BASE/oidc/.well-known/openid-configuration" >/dev/null || die "start $i: discovery"
	stop_idp
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	[ "$ms" -lt 10000 ] || die "start $i took ${ms} ms"
	[ "$ms" -lt "$slowest" ] || slowest=$ms
done
ok "20 starts, the slowest ${slowest} ms"

echo "== machine-to-machine apps (client credentials, as Logto issues them)"
start_idp idp-m2m
ISSUER="$BASE/oidc"
curl -sf "$BASE/__dev/m2m-apps" >"$TMP/m2m.json"
M2M_ID=$(json 'd.find(a=>a.name.startsWith("Reporter")).client_id' <"$TMP/m2m.json")
M2M_SECRET=$(json 'd.find(a=>a.name.startsWith("Reporter")).client_secret' <"$TMP/m2m.json")
NOROLE_ID=$(json 'd.find(a=>a.name.startsWith("No role")).client_id' <"$TMP/m2m.json")
NOROLE_SECRET=$(json 'd.find(a=>a.name.startsWith("No role")).client_secret' <"$TMP/m2m.json")
expect_match "M2M app id: 21 lower-case letters and digits" "$M2M_ID" '^[a-z0-9]{21}$'
cc() { # cc <out file> <id> <secret> <form fields...>: client credentials, prints status
	local out=$1 id=$2 secret=$3
	shift 3
	local args=()
	for f in grant_type=client_credentials "$@"; do args+=(--data-urlencode "$f"); done
	curl -s -o "$out" -w '%{http_code}' -u "$id:$secret" "${args[@]}" "$ISSUER/token"
}
expect "granted permissions only" "$(cc "$TMP/m1.json" "$M2M_ID" "$M2M_SECRET" resource=https://api.example.com 'scope=read:docs write:docs') $(json d.scope <"$TMP/m1.json")" "200 read:docs"
AT=$(json d.access_token <"$TMP/m1.json")
expect "  answer: no refresh or ID token" "$(json 'Object.keys(d).sort().join(" ")' <"$TMP/m1.json")" "access_token expires_in scope token_type"
expect "  header" "$(jwt_part 0 "$AT" | json 'd.alg+" "+d.typ')" "ES384 at+jwt"
verify_jwt "$AT" "$ISSUER/jwks" || die "M2M token signature"
ok "  signed by the tenant's key"
expect "  sub = client_id = the app" "$(claim sub "$AT") $(claim client_id "$AT")" "$M2M_ID $M2M_ID"
expect "  aud is the indicator (one string)" "$(jwt_part 1 "$AT" | json 'typeof d.aud+" "+d.aud')" "string https://api.example.com"
expect "  claims" "$(jwt_part 1 "$AT" | json 'Object.keys(d).sort().join(" ")')" "aud client_id exp iat iss jti scope sub"
expect "  lifetime: exp - iat and expires_in" "$(jwt_part 1 "$AT" | json 'd.exp-d.iat') $(json d.expires_in <"$TMP/m1.json")" "3600 3600"
expect "nothing asked: no scope claim, no scope in the answer" "$(cc "$TMP/m2.json" "$M2M_ID" "$M2M_SECRET" resource=https://api.example.com) $(json '"scope" in d' <"$TMP/m2.json") $(jwt_part 1 "$(json d.access_token <"$TMP/m2.json")" | json '"scope" in d')" "200 false false"
expect "app without a role: no scope claim" "$(cc "$TMP/m3.json" "$NOROLE_ID" "$NOROLE_SECRET" resource=https://api.example.com scope=read:docs) $(jwt_part 1 "$(json d.access_token <"$TMP/m3.json")" | json '"scope" in d')" "200 false"
expect "no resource: invalid_target" "$(cc "$TMP/m4.json" "$M2M_ID" "$M2M_SECRET" scope=read:docs) $(json d.error <"$TMP/m4.json") $(json d.error_description <"$TMP/m4.json")" \
	'400 invalid_target both `resource` and `organization_id` are not provided'
expect "unknown indicator: invalid_target" "$(cc "$TMP/m5.json" "$M2M_ID" "$M2M_SECRET" resource=https://nope.example.com) $(json d.error <"$TMP/m5.json")" "400 invalid_target"
expect "wrong secret: invalid_client" "$(cc "$TMP/m6.json" "$M2M_ID" wrong resource=https://api.example.com) $(json d.error <"$TMP/m6.json")" "401 invalid_client"
ACME_ID=$(curl -sf "$BASE/__dev/organizations" | json 'd.find(o=>o.slug==="acme").id')
GLOBEX_ID=$(curl -sf "$BASE/__dev/organizations" | json 'd.find(o=>o.slug==="globex").id')
expect "organization the app is not in: access_denied" "$(cc "$TMP/m7.json" "$M2M_ID" "$M2M_SECRET" "organization_id=$GLOBEX_ID") $(json d.error <"$TMP/m7.json")" "403 access_denied"
cc "$TMP/m8.json" "$M2M_ID" "$M2M_SECRET" "organization_id=$ACME_ID" scope=read:reports >/dev/null
OT=$(json d.access_token <"$TMP/m8.json")
expect "organization token" "$(claim aud "$OT") $(claim scope "$OT") $(claim sub "$OT")" "urn:logto:organization:$ACME_ID read:reports $M2M_ID"
cc "$TMP/m9.json" "$M2M_ID" "$M2M_SECRET" "organization_id=$ACME_ID" resource=https://api.example.com 'scope=read:docs write:docs' >/dev/null
OT=$(json d.access_token <"$TMP/m9.json")
expect "organization-scoped API token" "$(claim aud "$OT") $(claim organization_id "$OT") $(claim scope "$OT")" "https://api.example.com $ACME_ID read:docs write:docs"
stop_idp

echo "$PASS passed, 0 failed"
