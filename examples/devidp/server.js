/**
 * Dev Logto: a Logto-compatible identity provider for caddy-logto's tests and
 * demo, built on node-oidc-provider (the library Logto's server runs on) and
 * configured like a Logto tenant. Everything lives in memory, unless
 * DEVIDP_STORE names a file to keep it in across restarts.
 *
 *   npm ci --prefix examples/devidp && node examples/devidp/server.js
 *
 * Prints one line, `devidp listening on <base>`, when ready. Issuer
 * `<base>/oidc`; discovery `<base>/oidc/.well-known/openid-configuration`;
 * /oidc/auth, /oidc/token, /oidc/me, /oidc/jwks, /oidc/session/end,
 * /oidc/token/revocation, /oidc/token/introspection. Sign-in pages at Logto's
 * URLs: /oidc/auth sends the browser to /sign-in?app_id=<client id> (or
 * /register, /direct/social/kakao … by first_screen and direct_sign_in),
 * whose forms post to /interaction/<uid>/login|register|kakao. What a
 * config checker's probes get (unknown client: 400 invalid_client "invalid
 * client <id>", …) is listed in README.md, "Probing a tenant".
 *
 * Environment (all optional):
 *   DEVIDP_PORT (3001; 0 = any free port), DEVIDP_HOST (127.0.0.1),
 *   DEVIDP_BASE (http://localhost:<port>)
 *   DEVIDP_CLIENT_ID, DEVIDP_CLIENT_SECRET, DEVIDP_REDIRECT_URIS,
 *   DEVIDP_POST_LOGOUT_REDIRECT_URIS (space separated), DEVIDP_BACKCHANNEL_LOGOUT_URI,
 *   DEVIDP_BACKCHANNEL_SESSION_REQUIRED (0/1): a "Traditional web" client
 *   DEVIDP_ALG: ES384 (default) | ES256 | ES512 | RS256
 *   Lifetimes, in seconds (positive integers; Logto's defaults):
 *   DEVIDP_ID_TOKEN_TTL (3600): every ID token, from the code exchange and
 *     from each refresh (exp - iat)
 *   DEVIDP_ACCESS_TOKEN_TTL (3600): opaque and API resource access tokens
 *     (organization and machine-to-machine tokens keep Logto's 3600)
 *   DEVIDP_REFRESH_TOKEN_TTL (1209600 = 14 days): every refresh token. A
 *     confidential client gets the same token back until 70 % of it has
 *     passed, then a new one with the full lifetime again, so a session that
 *     refreshes keeps living: 300 rotates after 210 s, then every ~210 s
 *   DEVIDP_SESSION_TTL (1209600): the IdP's own sign-in session (cookie)
 *   A soak test: DEVIDP_ID_TOKEN_TTL=20 DEVIDP_REFRESH_TOKEN_TTL=300
 *     DEVIDP_STORE=<file> DEVIDP_PORT=<fixed> (README.md, "Soak test")
 *   DEVIDP_ROTATE: logto (default; confidential clients rotate after 70 % of
 *     the refresh token's lifetime) | always | never
 *   DEVIDP_AUTHORIZATION_CODE_TTL (60, as Logto): seconds
 *   DEVIDP_ID_TOKEN_EXTENDED_CLAIMS: 1 (default) puts roles, organizations,
 *     organization_roles, custom_data, identities in ID tokens (each only when
 *     its scope was granted); 0 leaves them to userinfo only; a list (e.g.
 *     "roles organizations") enables just those, as a tenant can
 *   DEVIDP_CLIENT_SECRET_POST: 1 accepts the client secret in the form body
 *     too, as node-oidc-provider (and so Logto) does; by default only
 *     client_secret_basic authenticates a client (401 invalid_client)
 *   DEVIDP_STORE: a file path. Keeps what a restart (even kill -9) must not
 *     lose: sessions, grants, refresh/access tokens, codes, clients, the
 *     signing keys (JWKS kids stay; old ID tokens still verify), the cookie
 *     keys (IdP sessions survive), registered users and /__dev/stats. Written
 *     as <file> (snapshot, temp file + rename) and <file>.journal (one line
 *     appended per change before the answer); loaded at start (persist.js).
 *     Unset: in memory, new keys at every start, like a new tenant.
 *
 * Demo users (password = username): alice (role admin; acme admin, globex
 * member; custom_data {plan:"pro"}), bob (viewer; acme member; picture null),
 * carol (nothing), many (member of org-01..org-50); kakao_user signs in
 * through the stand-in Kakao page only. Ids (fixed): README.md,
 * GET /__dev/users, GET /__dev/organizations (by slug), GET /__dev/resources.
 *
 * Test hooks (JSON): POST /__dev/clients, GET /__dev/clients, GET /__dev/m2m-apps,
 * POST /__dev/rotate-keys[?drop_old=1], GET /__dev/requests, GET /__dev/stats,
 * POST /__dev/reset, POST /__dev/fail?endpoint=token|jwks|discovery|userinfo|
 * revocation|end_session&mode=500|garbage|slow&count=N[&delay_ms=5000],
 * POST /__dev/logout?sub=<user id>[&keep_tokens=1], GET /__dev/backchannel,
 * POST /__dev/resources/delete?indicator=<API resource> (as if deleted in
 * Console), POST /__dev/resources/restore (reset restores them too),
 * GET /__dev/refresh-reuse ({refresh_token_grants: successful refresh_token
 * grants, reused_within_grace: an already redeemed (rotated) refresh token
 * presented again inside Logto's 3 s grace and accepted, reused_refused: after
 * the grace, refused with the grant revoked, double_redemptions: the sum};
 * also in /__dev/stats, reset by /__dev/reset, kept by DEVIDP_STORE),
 * GET /__dev/store ({models: {<model>: live entries}, signed_in_sessions,
 * persistence: null | {file, snapshot_saved_at, snapshots_written,
 * last_snapshot_ms, journal_bytes}}), POST /__dev/store/snapshot (fold the
 * journal into the snapshot now; 409 without DEVIDP_STORE).
 */
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

import { Store } from './adapter.js';
import { Persistence } from './persist.js';
import {
  seedUsers, users, organizations, addUser, findUserByUsername, logtoId, publicUser,
  KAKAO_USER_ID, RESOURCES, ROLES, ORGANIZATION_ROLES, deleteResource, restoreResources,
} from './data.js';
import { createProvider, ID_TOKEN_EXTENDED, EXPERIENCE_PATH } from './provider.js';
import { refuseSecretInBody } from './client-auth.js';
import { registerMachineApps, machineAppsInfo } from './m2m.js';
import { SUPPORTED_ALGS } from './keys.js';
import * as views from './views.js';

// --- configuration ---------------------------------------------------------

const env = process.env;

function seconds(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) fail(`${name} must be a positive number of seconds, got ${raw}`);
  return value;
}

function fail(message) {
  process.stderr.write(`devidp: ${message}\n`);
  process.exit(2);
}

const list = (raw) => (raw ?? '').split(/\s+/).filter(Boolean);

const port = env.DEVIDP_PORT === undefined || env.DEVIDP_PORT === '' ? 3001 : Number(env.DEVIDP_PORT);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`DEVIDP_PORT is not a port: ${env.DEVIDP_PORT}`);
const host = env.DEVIDP_HOST || '127.0.0.1';
const alg = env.DEVIDP_ALG || 'ES384';
if (!SUPPORTED_ALGS.includes(alg)) fail(`DEVIDP_ALG must be one of ${SUPPORTED_ALGS.join(', ')}`);
const rotate = env.DEVIDP_ROTATE || 'logto';
if (!['logto', 'always', 'never'].includes(rotate)) fail('DEVIDP_ROTATE must be logto, always or never');
const ttl = {
  accessToken: seconds('DEVIDP_ACCESS_TOKEN_TTL', 3600),
  idToken: seconds('DEVIDP_ID_TOKEN_TTL', 3600),
  refreshToken: seconds('DEVIDP_REFRESH_TOKEN_TTL', 14 * 24 * 3600),
  session: seconds('DEVIDP_SESSION_TTL', 14 * 24 * 3600),
  authorizationCode: seconds('DEVIDP_AUTHORIZATION_CODE_TTL', 60),
};
const extendedIdTokenClaims = (() => {
  const raw = (env.DEVIDP_ID_TOKEN_EXTENDED_CLAIMS ?? '1').trim();
  if (raw === '1' || raw === '') return new Set(ID_TOKEN_EXTENDED);
  if (raw === '0') return new Set();
  const names = raw.split(/[\s,]+/).filter(Boolean);
  const unknown = names.filter((name) => !ID_TOKEN_EXTENDED.has(name));
  if (unknown.length) fail(`DEVIDP_ID_TOKEN_EXTENDED_CLAIMS: not an extended claim: ${unknown.join(' ')} (one of ${[...ID_TOKEN_EXTENDED].join(' ')}, or 1 or 0)`);
  return new Set(names);
})();
const clientSecretPost = env.DEVIDP_CLIENT_SECRET_POST === '1';
const storeFile = env.DEVIDP_STORE || undefined;

// --- state -----------------------------------------------------------------

const store = new Store();
// DEVIDP_STORE: load what the last run saved (persist.js); journaling starts
// once the provider is up (persistence.open below).
const persistence = storeFile ? new Persistence(storeFile) : undefined;
let saved;
if (persistence) {
  try {
    const loaded = persistence.load();
    if (loaded) {
      ({ saved } = loaded);
      store.restore(saved.models);
      process.stderr.write(`devidp: loaded ${persistence.file} (saved ${saved.saved_at}; ${loaded.replayed} journal entries replayed${loaded.skipped ? `, ${loaded.skipped} torn skipped` : ''})\n`);
    }
  } catch (err) {
    fail(`DEVIDP_STORE: ${err.message}`);
  }
  store.journal = (op) => persistence.append(op);
}
setInterval(() => store.sweep(), 60_000).unref();

const newStats = () => ({
  authorization_code_grants: 0,
  refresh_token_grants: 0,
  refresh_token_grants_by_resource: {},
  refresh_token_reuse_within_grace: 0,
  refresh_token_reuse_refused: 0,
  organization_token_grants: 0,
  invalid_grants: 0,
  revocations: 0,
  end_sessions: 0,
  backchannel_logouts_sent: 0,
  userinfo_requests: 0,
});
let stats = { ...newStats(), ...saved?.stats };
/** Call after changing `stats`: journals them when DEVIDP_STORE is set. */
const statsChanged = () => persistence?.append({ op: 'stats', v: stats });
/** Users who registered on the sign-up page (kept by DEVIDP_STORE). */
const registeredUsers = new Map();
let authorizationRequests = [];
let backchannelLog = [];
/** endpoint → {mode, remaining, delayMs} */
let failures = {};

const FAILABLE = {
  token: '/oidc/token',
  jwks: '/oidc/jwks',
  discovery: '/oidc/.well-known/openid-configuration',
  userinfo: '/oidc/me',
  revocation: '/oidc/token/revocation',
  end_session: '/oidc/session/end',
};

let provider;
let oidcCallback;
let base;
let ready = false; // set once the env client is registered
let alive = true;

// --- helpers ---------------------------------------------------------------

function sendJson(res, status, body) {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(html),
  });
  res.end(html);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1 << 20) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  const type = req.headers['content-type'] ?? '';
  if (type.includes('application/json')) {
    try {
      return text ? JSON.parse(text) : {};
    } catch {
      throw Object.assign(new Error('body is not JSON'), { status: 400 });
    }
  }
  return Object.fromEntries(new URLSearchParams(text));
}

/** Query parameters as an object; repeated ones (resource) become arrays. */
function queryObject(searchParams) {
  const out = {};
  for (const [key, value] of searchParams) {
    if (key in out) out[key] = [].concat(out[key], value);
    else out[key] = value;
  }
  return out;
}

async function registerClient(input) {
  const str = (v) => (typeof v === 'string' ? v : undefined);
  const arr = (v) => (Array.isArray(v) ? v.map(String) : list(str(v)));
  const clientId = str(input.client_id);
  const clientSecret = str(input.client_secret);
  if (!clientId || !clientSecret) {
    throw Object.assign(new Error('client_id and client_secret are required'), { status: 400 });
  }
  const metadata = {
    client_id: clientId,
    client_secret: clientSecret,
    client_name: str(input.client_name) ?? clientId,
    application_type: 'web',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: alg,
    redirect_uris: arr(input.redirect_uris),
    post_logout_redirect_uris: arr(input.post_logout_redirect_uris),
  };
  if (str(input.backchannel_logout_uri)) {
    metadata.backchannel_logout_uri = input.backchannel_logout_uri;
    const required = input.backchannel_logout_session_required;
    metadata.backchannel_logout_session_required = required === true || required === 1 || required === '1' || required === 'true';
  }
  try {
    await provider.Client.validate(metadata);
  } catch (err) {
    throw Object.assign(new Error(err.error_description ?? err.message), { status: 400, code: err.error ?? 'invalid_client_metadata' });
  }
  store.set('Client', clientId, { payload: metadata });
  const { client_secret: _, ...shown } = metadata;
  return shown;
}

// --- interactions (the sign-in pages) -------------------------------------

const isRegister = (p) => ['register', 'identifier:register'].includes(p.first_screen)
  || (!p.first_screen && p.interaction_mode === 'signUp');

async function finishLogin(req, res, accountId) {
  await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
}

/**
 * Logto consents first-party apps automatically: grant everything the
 * consent prompt asks for (OIDC scopes, claims, resource permissions).
 */
async function autoConsent(req, res, interaction) {
  const { prompt: { details }, params, session } = interaction;
  let grant = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined;
  grant ??= new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

async function handleInteraction(req, res, uid, action) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch {
    sendHtml(res, 400, views.errorPage('Sign-in expired', 'This sign-in attempt has expired or was already used. Go back to the application and sign in again.'));
    return;
  }
  if (interaction.uid !== uid) {
    sendHtml(res, 400, views.errorPage('Sign-in expired', 'This page does not belong to the current sign-in attempt.'));
    return;
  }
  const { params } = interaction;

  if (interaction.prompt.name === 'consent') {
    await autoConsent(req, res, interaction);
    return;
  }

  const page = (status, html) => sendHtml(res, status, html);
  const method = req.method;

  switch (action) {
    case '': {
      if (method !== 'GET') break;
      if (typeof params.direct_sign_in === 'string' && params.direct_sign_in === 'social:kakao') {
        page(200, views.kakaoPage({ uid, params }));
      } else if (isRegister(params)) {
        page(200, views.registerPage({ uid, params, username: '' }));
      } else {
        const notice = params.direct_sign_in
          ? `direct_sign_in=${params.direct_sign_in} is not available in the dev IdP; sign in here.`
          : undefined;
        page(200, views.loginPage({ uid, params, username: params.login_hint ?? '', notice }));
      }
      return;
    }
    case 'login': {
      if (method === 'GET') {
        page(200, views.loginPage({ uid, params, username: params.login_hint ?? '' }));
        return;
      }
      if (method !== 'POST') break;
      const { username = '', password = '' } = await readBody(req);
      const user = findUserByUsername(String(username).trim());
      if (!user || !user.password || user.password !== password) {
        page(401, views.loginPage({ uid, params, username, error: 'Incorrect username or password.' }));
        return;
      }
      await finishLogin(req, res, user.id);
      return;
    }
    case 'register': {
      if (method === 'GET') {
        page(200, views.registerPage({ uid, params, username: '' }));
        return;
      }
      if (method !== 'POST') break;
      const body = await readBody(req);
      const username = String(body.username ?? '').trim();
      const password = String(body.password ?? '');
      let error;
      if (!/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(username)) {
        error = 'Username must start with a letter or underscore and contain only letters, digits and underscores.';
      } else if (!password) {
        error = 'Password is required.';
      } else if (findUserByUsername(username) || users.has(logtoId(`user:${username}`))) {
        error = 'This username is already in use.';
      }
      if (error) {
        page(422, views.registerPage({ uid, params, username, error }));
        return;
      }
      const user = addUser({ username, password });
      registeredUsers.set(user.id, user);
      persistence?.append({ op: 'user', v: user });
      await finishLogin(req, res, user.id);
      return;
    }
    case 'kakao': {
      if (method === 'GET') {
        page(200, views.kakaoPage({ uid, params }));
        return;
      }
      if (method !== 'POST') break;
      await readBody(req);
      await finishLogin(req, res, KAKAO_USER_ID);
      return;
    }
    default:
  }
  page(404, views.errorPage('Not found', 'No such page.'));
}

// --- test hooks ------------------------------------------------------------

async function adminSignOut(sub, keepTokens) {
  const before = backchannelLog.length;
  let sessionsEnded = 0;
  for (const [id, session] of [...store.entries('Session')]) {
    if (session.accountId !== sub) continue;
    for (const [clientId, authorization] of Object.entries(session.authorizations ?? {})) {
      const client = await provider.Client.find(clientId);
      if (client?.backchannelLogoutUri) {
        await client.backchannelLogout(sub, authorization.sid).catch(() => {});
      }
    }
    store.delete('Session', id);
    sessionsEnded += 1;
  }
  // Logto's "sign out user" also deletes the user's access and refresh tokens.
  let tokensRevoked = 0;
  if (!keepTokens) {
    for (const model of ['AccessToken', 'RefreshToken', 'AuthorizationCode']) {
      for (const [id, payload] of [...store.entries(model)]) {
        if (payload.accountId === sub) {
          store.delete(model, id);
          tokensRevoked += 1;
        }
      }
    }
  }
  return {
    sub,
    sessions_ended: sessionsEnded,
    tokens_revoked: tokensRevoked,
    backchannel: backchannelLog.slice(before),
  };
}

/**
 * Double redemptions of refresh tokens: a token that was already redeemed
 * (rotated) presented again, accepted inside Logto's 3 s grace or refused
 * after it (which revokes the grant); and the refresh grants served.
 */
function refreshReuse() {
  const withinGrace = stats.refresh_token_reuse_within_grace;
  const refused = stats.refresh_token_reuse_refused;
  return {
    refresh_token_grants: stats.refresh_token_grants,
    reused_within_grace: withinGrace,
    reused_refused: refused,
    double_redemptions: withinGrace + refused,
  };
}

/** What the store holds: live entries per model, and sessions with a user. */
function storeInfo() {
  const models = {};
  for (const name of [...store.models.keys()].sort()) {
    models[name] = [...store.entries(name)].length;
  }
  const signedInSessions = [...store.entries('Session')].filter(([, session]) => session.accountId).length;
  return { models, signed_in_sessions: signedInSessions, persistence: persistence?.info() ?? null };
}

async function handleDev(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  const q = url.searchParams;
  switch (route) {
    case 'GET /__dev/requests': return sendJson(res, 200, authorizationRequests);
    case 'GET /__dev/stats': return sendJson(res, 200, stats);
    case 'GET /__dev/refresh-reuse': return sendJson(res, 200, refreshReuse());
    case 'GET /__dev/backchannel': return sendJson(res, 200, backchannelLog);
    case 'GET /__dev/store': return sendJson(res, 200, storeInfo());
    case 'POST /__dev/store/snapshot':
      if (!persistence) return sendJson(res, 409, { error: 'DEVIDP_STORE is not set' });
      persistence.snapshot();
      return sendJson(res, 200, storeInfo());
    case 'POST /__dev/reset':
      stats = newStats();
      statsChanged();
      authorizationRequests = [];
      backchannelLog = [];
      failures = {};
      restoreResources();
      return sendJson(res, 200, { ok: true });
    case 'GET /__dev/fail': return sendJson(res, 200, failures);
    case 'POST /__dev/fail': {
      const endpoint = q.get('endpoint') ?? 'token';
      const mode = q.get('mode') ?? '500';
      const count = Number(q.get('count') ?? '1');
      const delayMs = Number(q.get('delay_ms') ?? '5000');
      if (!FAILABLE[endpoint]) return sendJson(res, 400, { error: `endpoint must be one of ${Object.keys(FAILABLE).join(', ')}` });
      if (!['500', 'garbage', 'slow'].includes(mode)) return sendJson(res, 400, { error: 'mode must be 500, garbage or slow' });
      if (!Number.isInteger(count) || count < 0) return sendJson(res, 400, { error: 'count must be a non-negative integer' });
      if (!Number.isFinite(delayMs) || delayMs < 0) return sendJson(res, 400, { error: 'delay_ms must be a non-negative number' });
      if (count === 0) delete failures[endpoint];
      else failures[endpoint] = { mode, remaining: count, delayMs };
      return sendJson(res, 200, failures);
    }
    case 'GET /__dev/clients': {
      const clients = [...store.entries('Client')].map(([, { client_secret: _, ...m }]) => m);
      return sendJson(res, 200, clients);
    }
    case 'POST /__dev/clients': {
      const body = await readBody(req);
      return sendJson(res, 200, await registerClient(body));
    }
    case 'POST /__dev/rotate-keys': {
      const dropOld = ['1', 'true'].includes(q.get('drop_old') ?? '');
      return sendJson(res, 200, provider.rotateSigningKey(dropOld));
    }
    case 'POST /__dev/logout': {
      const sub = q.get('sub');
      if (!sub) return sendJson(res, 400, { error: 'sub is required' });
      const keepTokens = ['1', 'true'].includes(q.get('keep_tokens') ?? '');
      return sendJson(res, 200, await adminSignOut(sub, keepTokens));
    }
    case 'GET /__dev/users': return sendJson(res, 200, [...users.values()].map(publicUser));
    case 'GET /__dev/organizations': return sendJson(res, 200, [...organizations.values()]);
    case 'POST /__dev/resources/delete': {
      const indicator = q.get('indicator') ?? '';
      if (!deleteResource(indicator)) return sendJson(res, 404, { error: `no API resource ${indicator}` });
      return sendJson(res, 200, { deleted: indicator, resources: Object.keys(RESOURCES) });
    }
    case 'POST /__dev/resources/restore':
      restoreResources();
      return sendJson(res, 200, { resources: Object.keys(RESOURCES) });
    case 'GET /__dev/m2m-apps': return sendJson(res, 200, machineAppsInfo());
    case 'GET /__dev/resources':
      return sendJson(res, 200, { resources: RESOURCES, roles: ROLES, organization_roles: ORGANIZATION_ROLES });
    default: return sendJson(res, 404, { error: 'not found' });
  }
}

// --- HTTP ------------------------------------------------------------------

async function injectFailure(req, res, pathname) {
  const endpoint = Object.keys(FAILABLE).find((name) => FAILABLE[name] === pathname);
  const failure = endpoint && failures[endpoint];
  if (!failure) return false;
  failure.remaining -= 1;
  if (failure.remaining <= 0) delete failures[endpoint];
  switch (failure.mode) {
    case '500':
      sendJson(res, 500, { error: 'server_error', error_description: 'injected failure (devidp /__dev/fail)' });
      return true;
    case 'garbage': {
      const body = '{"access_token": <html>garbage from devidp';
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return true;
    }
    default: // slow: answer normally, late
      await sleep(failure.delayMs);
      return false;
  }
}

function observe(req, res, url) {
  const { pathname } = url;
  if (pathname === '/oidc/auth' && (req.method === 'GET' || req.method === 'POST')) {
    authorizationRequests.push({ timestamp: new Date().toISOString(), method: req.method, params: queryObject(url.searchParams) });
    if (authorizationRequests.length > 10_000) authorizationRequests.splice(0, 1000);
  } else if (pathname === '/oidc/me') {
    stats.userinfo_requests += 1;
    statsChanged();
  } else if (pathname === '/oidc/token/revocation' && req.method === 'POST') {
    res.on('finish', () => {
      if (res.statusCode !== 200) return;
      stats.revocations += 1;
      statsChanged();
    });
  }
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://devidp.invalid');
  const { pathname } = url;

  if (!ready) {
    sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
    return;
  }

  if (pathname === '/oidc' || pathname.startsWith('/oidc/')) {
    if (await injectFailure(req, res, pathname)) return;
    observe(req, res, url);
    if (!clientSecretPost && await refuseSecretInBody(req, res, pathname)) return;
    // Mount oidc-provider at /oidc, as Logto does; it reads the mount path
    // back from originalUrl when it builds URLs.
    req.originalUrl = req.url;
    req.url = req.url.slice('/oidc'.length) || '/';
    oidcCallback(req, res);
    return;
  }

  // Logto's sign-in experience URLs (/sign-in?app_id=…, /register, /direct/…,
  // /consent): the interaction is the one the `_interaction` cookie names.
  if (EXPERIENCE_PATH.test(pathname) && req.method === 'GET') {
    let uid;
    try {
      ({ uid } = await provider.interactionDetails(req, res));
    } catch {
      sendHtml(res, 400, views.errorPage('Sign-in expired', 'There is no sign-in in progress in this browser, or it has expired. Go back to the application and sign in again.'));
      return;
    }
    await handleInteraction(req, res, uid, '');
    return;
  }

  const interaction = pathname.match(/^\/interaction\/([\w-]+)(?:\/(login|register|kakao))?\/?$/);
  if (interaction) {
    await handleInteraction(req, res, interaction[1], interaction[2] ?? '');
    return;
  }

  if (pathname.startsWith('/__dev/')) {
    await handleDev(req, res, url);
    return;
  }

  const avatar = pathname.match(/^\/avatars\/([a-z_]+)\.svg$/);
  if (avatar && req.method === 'GET') {
    const svg = views.avatarSvg(avatar[1]);
    res.writeHead(200, { 'content-type': 'image/svg+xml', 'cache-control': 'public, max-age=3600' });
    res.end(svg);
    return;
  }

  if (pathname === '/' && req.method === 'GET') {
    sendHtml(res, 200, views.errorPage('Dev Logto', `A Logto-compatible development IdP. Issuer: ${base}/oidc`));
    return;
  }

  sendJson(res, 404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    const status = err.status ?? 500;
    if (status >= 500) process.stderr.write(`devidp: ${err.stack ?? err}\n`);
    if (!res.headersSent) sendJson(res, status, { error: err.code ?? (status >= 500 ? 'server_error' : 'invalid_request'), error_description: err.message });
    else res.destroy();
  });
});
server.keepAliveTimeout = 5000;

function shutdown() {
  if (!alive) return;
  alive = false;
  try {
    persistence?.snapshotIfChanged();
  } catch (err) {
    process.stderr.write(`devidp: DEVIDP_STORE: ${err.message}\n`);
  }
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => fail(`cannot listen on ${host}:${port}: ${err.message}${err.code === 'EADDRINUSE' ? ' (another service has the port: set DEVIDP_PORT to another one)' : ''}`));

server.listen(port, host, async () => {
  const actualPort = server.address().port;
  base = (env.DEVIDP_BASE || `http://localhost:${actualPort}`).replace(/\/+$/, '');
  seedUsers(base);
  for (const user of saved?.users ?? []) registeredUsers.set(user.id, addUser(user));
  if (saved && saved.issuer !== `${base}/oidc`) {
    process.stderr.write(`devidp: warning: ${persistence.file} was saved by the issuer ${saved.issuer}; this one is ${base}/oidc, so its tokens will not verify here\n`);
  }

  provider = createProvider({
    issuer: `${base}/oidc`,
    alg,
    ttl,
    rotate,
    extendedIdTokenClaims,
    store,
    signingKeys: saved?.signing_keys,
    cookieKeys: saved?.cookie_keys,
    onKeysChanged: (keys) => persistence?.append({ op: 'keys', signing: keys }),
    onRefreshReuse: (kind) => {
      if (kind === 'refused') stats.refresh_token_reuse_refused += 1;
      else stats.refresh_token_reuse_within_grace += 1;
      statsChanged();
    },
    onBackchannel: (event) => {
      stats.backchannel_logouts_sent += 1;
      statsChanged();
      backchannelLog.push(event);
    },
  });
  // Behind a TLS-terminating proxy (DEVIDP_BASE=https://...), trust its
  // X-Forwarded-* headers.
  provider.proxy = true;
  oidcCallback = provider.callback();

  provider.on('grant.success', (ctx) => {
    const { grant_type: grantType, resource, organization_id: organizationId } = ctx.oidc.params;
    if (grantType === 'authorization_code') {
      stats.authorization_code_grants += 1;
      statsChanged();
    }
    if (grantType !== 'refresh_token') return;
    stats.refresh_token_grants += 1;
    if (organizationId) stats.organization_token_grants += 1;
    if (resource) {
      const by = stats.refresh_token_grants_by_resource;
      by[resource] = (by[resource] ?? 0) + 1;
    }
    statsChanged();
  });
  provider.on('grant.error', (ctx, err) => {
    if (err.error !== 'invalid_grant') return;
    stats.invalid_grants += 1;
    statsChanged();
  });
  provider.on('end_session.success', () => {
    stats.end_sessions += 1;
    statsChanged();
  });

  await registerMachineApps(provider, store);

  if (env.DEVIDP_CLIENT_ID) {
    try {
      await registerClient({
        client_id: env.DEVIDP_CLIENT_ID,
        client_secret: env.DEVIDP_CLIENT_SECRET,
        redirect_uris: list(env.DEVIDP_REDIRECT_URIS),
        post_logout_redirect_uris: list(env.DEVIDP_POST_LOGOUT_REDIRECT_URIS),
        backchannel_logout_uri: env.DEVIDP_BACKCHANNEL_LOGOUT_URI || undefined,
        backchannel_logout_session_required: env.DEVIDP_BACKCHANNEL_SESSION_REQUIRED === '1',
      });
    } catch (err) {
      fail(`DEVIDP_CLIENT_ID: ${err.message}`);
    }
  }

  // The first snapshot: keys (new or loaded), clients, the replayed journal.
  try {
    persistence?.open(() => ({
      issuer: `${base}/oidc`,
      ...provider.secrets(),
      stats,
      users: [...registeredUsers.values()],
      models: store.dump(),
    }));
  } catch (err) {
    fail(`DEVIDP_STORE: cannot write ${persistence.file}: ${err.message}`);
  }

  ready = true;
  process.stdout.write(`devidp listening on ${base}\n`);
});
