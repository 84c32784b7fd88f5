// Checks that the dev IdP is exactly as strict as Logto (../../README and
// README.md here list the rules): what a sign-in did not ask for, it never
// gets later. Run by smoke.sh against a running dev IdP:
//
//   node strict-check.mjs <base URL>
//
// Registers its own clients through /__dev/clients, signs in as the demo users
// and prints one "ok" line per check; exits 1 on the first failure.
import http from 'node:http';
import { deepStrictEqual } from 'node:assert/strict';

import { Flow, decodeJwt } from './strict-flow.mjs';

const BASE = process.argv[2];
if (!BASE) {
  process.stderr.write('usage: node strict-check.mjs <base URL>\n');
  process.exit(2);
}
const ISSUER = `${BASE}/oidc`;
const API = 'https://api.example.com';
const ORG_RESOURCE = 'urn:logto:resource:organizations';
const ORGS = 'urn:logto:scope:organizations';
const ORG_ROLES = 'urn:logto:scope:organization_roles';

let passed = 0;
function ok(name) {
  passed += 1;
  process.stdout.write(`ok   ${name}\n`);
}
function expect(name, actual, expected) {
  try {
    deepStrictEqual(actual, expected);
  } catch {
    process.stderr.write(`FAIL ${name}:\n  got  ${JSON.stringify(actual)}\n  want ${JSON.stringify(expected)}\n`);
    process.exit(1);
  }
  ok(name);
}
const keys = (o) => Object.keys(o).sort().join(' ');
const sorted = (list) => [...list].sort().join(' ');

// A back-channel logout receiver on loopback.
const logoutTokens = [];
const receiver = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    logoutTokens.push(new URLSearchParams(body).get('logout_token'));
    res.end('ok');
  });
});
await new Promise((resolve) => { receiver.listen(0, '127.0.0.1', resolve); });
const BACKCHANNEL = `http://127.0.0.1:${receiver.address().port}/logto/backchannel-logout`;

const flow = new Flow(BASE, {
  clientId: 'strict-app',
  secret: 'strict-secret-123',
  redirectUri: 'http://localhost:9/logto/sign-in-callback',
  postLogout: 'http://localhost:9/',
  backchannel: BACKCHANNEL,
});
await flow.register();

const users = await (await fetch(`${BASE}/__dev/users`)).json();
const orgs = await (await fetch(`${BASE}/__dev/organizations`)).json();
const id = (name) => users.find((u) => u.username === name).id;
const ACME = orgs.find((o) => o.slug === 'acme').id;
const GLOBEX = orgs.find((o) => o.slug === 'globex').id;

// --- claims by scope --------------------------------------------------------

const BASE_ID = sorted('aud at_hash created_at exp iat iss name nonce picture sub updated_at username'.split(' '));
const BASE_ME = sorted('created_at name picture sub updated_at username'.split(' '));
const BY_SCOPE = {
  email: { id: ['email', 'email_verified'], me: ['email', 'email_verified'] },
  phone: { id: ['phone_number', 'phone_number_verified'], me: ['phone_number', 'phone_number_verified'] },
  roles: { id: ['roles'], me: ['roles'] },
  [ORGS]: { id: ['organizations'], me: ['organizations', 'organization_data'] },
  [ORG_ROLES]: { id: ['organization_roles'], me: ['organization_roles'] },
  custom_data: { id: ['custom_data'], me: ['custom_data'] },
  identities: { id: ['identities'], me: ['identities', 'sso_identities'] },
};

{
  const jar = flow.jar();
  const t = await flow.signInAndExchange({ jar, user: 'alice', scope: 'openid offline_access profile' });
  const idt = decodeJwt(t.id_token);
  expect('claims: profile only → ID token has just the profile claims', keys(idt.payload), BASE_ID);
  expect('claims: profile only → userinfo has just the profile claims', keys(await flow.userinfo(t.access_token)), BASE_ME);
  const r = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token });
  expect('claims: the refreshed ID token has no more claims than the sign-in', keys(decodeJwt(r.body.id_token).payload), BASE_ID);
  const wider = await flow.token({ grant_type: 'refresh_token', refresh_token: r.body.refresh_token, scope: `openid profile ${ORG_ROLES}` });
  expect('claims: a refresh asking for more scope → 400 invalid_scope', [wider.status, wider.body.error], [400, 'invalid_scope']);
  expect('ID token: typ JWT, aud the client id (a string), no sid or auth_time without "session required"',
    [idt.header.typ, idt.payload.aud, idt.payload.sid, idt.payload.auth_time], ['JWT', flow.clientId, undefined, undefined]);

  for (const [scope, claims] of Object.entries(BY_SCOPE)) {
    // Alice is still signed in at the IdP: prompt=consent sends her straight back.
    const s = await flow.signInAndExchange({ jar, scope: `openid offline_access profile ${scope}` });
    expect(`claims: ${scope} → ID token adds ${claims.id.join(', ')}`, keys(decodeJwt(s.id_token).payload), sorted([...BASE_ID.split(' '), ...claims.id]));
    expect(`claims: ${scope} → userinfo adds ${claims.me.join(', ')}`, keys(await flow.userinfo(s.access_token)), sorted([...BASE_ME.split(' '), ...claims.me]));
  }
  const all = await flow.signInAndExchange({ jar, scope: `openid offline_access profile ${Object.keys(BY_SCOPE).join(' ')}` });
  const me = await flow.userinfo(all.access_token);
  expect('claims: organization_roles entries are <organization id>:<role>', sorted(me.organization_roles), sorted([`${ACME}:admin`, `${GLOBEX}:member`]));
  expect('claims: organization_data in userinfo only', [decodeJwt(all.id_token).payload.organization_data === undefined, me.organization_data.length], [true, 2]);
  const stepUp = await flow.authorizeRaw({ jar, prompt: '', scope: `openid offline_access profile ${ORG_ROLES}` });
  const stepped = await flow.exchange(stepUp.location);
  expect('signed in at the IdP, asking for more scope without prompt: straight back, no page, and granted',
    [stepUp.pages, Array.isArray(decodeJwt(stepped.id_token).payload.organization_roles)], [0, true]);
  const onlyOpenid = await flow.signInAndExchange({ jar, scope: 'openid' });
  expect('claims: scope openid alone → sub and token claims only', keys(decodeJwt(onlyOpenid.id_token).payload), sorted(['at_hash', 'aud', 'exp', 'iat', 'iss', 'nonce', 'sub']));
}

// --- offline_access only with prompt=consent ---------------------------------

{
  const jar = flow.jar();
  const without = await flow.signInAndExchange({ jar, user: 'bob', prompt: '', scope: 'openid offline_access profile' });
  expect('offline_access without prompt=consent: dropped, no refresh token',
    [without.scope, without.refresh_token], ['openid profile', undefined]);
  const withConsent = await flow.signInAndExchange({ jar, scope: 'openid offline_access profile' });
  expect('offline_access with prompt=consent: granted, refresh token issued',
    [sorted(withConsent.scope.split(' ')), typeof withConsent.refresh_token], ['offline_access openid profile', 'string']);
}

// --- resource indicators ------------------------------------------------------

const INVALID_TARGET = {
  code: 'oidc.invalid_target',
  message: 'Invalid resource indicator.',
  error: 'invalid_target',
  error_description: 'resource indicator is missing, or unknown',
};

{
  const jar = flow.jar();
  const t = await flow.signInAndExchange({ jar, user: 'alice', scope: `openid offline_access profile ${ORGS} read:docs write:docs` });
  const r = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token, resource: API });
  expect('resource not sent at sign-in → exactly Logto\'s 400 invalid_target', [r.status, r.body], [400, INVALID_TARGET]);
  const g = await flow.signInAndExchange({ jar, scope: `openid offline_access profile ${ORGS} read:docs write:docs`, resources: [API] });
  expect('code exchange without resource: opaque access token (43 characters)', g.access_token.length, 43);
  const ok1 = await flow.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token, resource: API });
  const at = decodeJwt(ok1.body.access_token);
  expect('resource sent at sign-in → 200, a JWT for it', [ok1.status, at.header.typ, at.header.alg, at.payload.aud], [200, 'at+jwt', 'ES384', API]);
  expect('resource token claims', keys(at.payload), sorted(['aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub']));
  expect('resource token scope: the permissions asked for that the roles grant', at.payload.scope, 'read:docs write:docs');
  const other = await flow.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token, resource: 'https://billing.example.com' });
  expect('another resource of the same tenant, not sent at sign-in → 400 invalid_target', [other.status, other.body], [400, INVALID_TARGET]);
  const unknown = await flow.token({ grant_type: 'refresh_token', refresh_token: g.refresh_token, resource: 'https://unknown.example.test' });
  expect('an unknown resource → 400 invalid_target', [unknown.status, unknown.body.code], [400, 'oidc.invalid_target']);
  const me = await fetch(`${ISSUER}/me`, { headers: { authorization: `Bearer ${ok1.body.access_token}` } });
  expect('userinfo refuses a resource token', me.status, 401);

  const direct = await flow.signInAndExchange({ jar, scope: 'openid offline_access profile read:docs', resources: [API], exchange: { resource: API } });
  expect('code exchange with resource: the resource token directly, the answer\'s scope its permissions',
    [decodeJwt(direct.access_token).payload.aud, decodeJwt(direct.access_token).payload.scope, direct.scope], [API, 'read:docs', 'read:docs']);

  const noPerms = await flow.signInAndExchange({ jar, scope: 'openid offline_access profile', resources: [API] });
  const np = await flow.token({ grant_type: 'refresh_token', refresh_token: noPerms.refresh_token, resource: API });
  expect('resource without permissions in scope → "scope": "" (present, empty)', [np.status, 'scope' in decodeJwt(np.body.access_token).payload, decodeJwt(np.body.access_token).payload.scope], [200, true, '']);

  for (const [user, want] of [['bob', 'read:docs'], ['carol', '']]) {
    const u = await flow.signInAndExchange({ jar: flow.jar(), user, scope: 'openid offline_access profile read:docs write:docs delete:docs', resources: [API] });
    const ut = await flow.token({ grant_type: 'refresh_token', refresh_token: u.refresh_token, resource: API });
    expect(`resource token for ${user}: only what the roles grant (${JSON.stringify(want)})`, decodeJwt(ut.body.access_token).payload.scope, want);
  }

  const auth = await flow.authorizeRaw({ jar: flow.jar(), scope: 'openid profile', resources: ['https://unknown.example.test'] });
  expect('an unknown resource at sign-in: back to the redirect URI with error=invalid_target, no sign-in page',
    [auth.location?.startsWith(flow.redirectUri), new URL(auth.location).searchParams.get('error')], [true, 'invalid_target']);
}

// --- organization tokens ------------------------------------------------------

{
  const jar = flow.jar();
  const orgToken = async (t, form) => {
    const r = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token, ...form });
    return { status: r.status, body: r.body, jwt: r.body.access_token ? decodeJwt(r.body.access_token) : undefined };
  };
  const both = await flow.signInAndExchange({ jar, user: 'alice', scope: `openid offline_access profile ${ORGS} manage:members read:reports read:docs`, resources: [ORG_RESOURCE, API] });
  const o = await orgToken(both, { organization_id: ACME });
  expect('organization token: aud urn:logto:organization:<id>, typ at+jwt',
    [o.status, o.jwt.payload.aud, o.jwt.header.typ], [200, `urn:logto:organization:${ACME}`, 'at+jwt']);
  expect('organization token: permissions asked for and held, no organization_id claim',
    [o.jwt.payload.scope, o.jwt.payload.organization_id, keys(o.jwt.payload)], ['manage:members read:reports', undefined, sorted(['aud', 'client_id', 'exp', 'iat', 'iss', 'jti', 'scope', 'sub'])]);
  const g = await orgToken(both, { organization_id: GLOBEX });
  expect('organization token: only the roles held in that organization', g.jwt.payload.scope, 'read:reports');
  const ar = await orgToken(both, { organization_id: GLOBEX, resource: API });
  expect('resource + organization_id: aud the API, organization_id claim',
    [ar.jwt.payload.aud, ar.jwt.payload.organization_id, typeof ar.jwt.payload.aud], [API, GLOBEX, 'string']);
  const stranger = await orgToken(both, { organization_id: 'notamember01' });
  expect('organization token for a non-member → 403 access_denied',
    [stranger.status, stranger.body.code, stranger.body.error, stranger.body.error_description],
    [403, 'oidc.access_denied', 'access_denied', 'user is not a member of the organization']);

  const noResource = await flow.signInAndExchange({ jar, scope: `openid offline_access profile ${ORGS} manage:members read:reports` });
  const nr = await orgToken(noResource, { organization_id: ACME });
  expect('organization permissions asked for without resource=urn:logto:resource:organizations → empty scope', [nr.status, nr.jwt.payload.scope], [200, '']);
  const noScope = await flow.signInAndExchange({ jar, scope: `openid offline_access profile ${ORGS}`, resources: [ORG_RESOURCE] });
  const ns = await orgToken(noScope, { organization_id: ACME });
  expect('resource=urn:logto:resource:organizations without permissions in scope → empty scope', [ns.status, ns.jwt.payload.scope], [200, '']);
  const partial = await flow.signInAndExchange({ jar, scope: `openid offline_access profile ${ORGS} read:reports`, resources: [ORG_RESOURCE] });
  expect('organization token: only the permissions asked for', (await orgToken(partial, { organization_id: ACME })).jwt.payload.scope, 'read:reports');
  const noOrgScope = await flow.signInAndExchange({ jar, scope: 'openid offline_access profile manage:members', resources: [ORG_RESOURCE] });
  const nos = await orgToken(noOrgScope, { organization_id: ACME });
  expect(`organization token without ${ORGS} → 403 insufficient_scope`, [nos.status, nos.body.error], [403, 'insufficient_scope']);
}

// --- client authentication ----------------------------------------------------

{
  const t = await flow.signInAndExchange({ jar: flow.jar(), user: 'bob', scope: 'openid offline_access profile' });
  const post = await fetch(`${ISSUER}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: t.refresh_token, client_id: flow.clientId, client_secret: flow.secret }),
  });
  expect('client_secret_post → 401 invalid_client', [post.status, (await post.json()).error], [401, 'invalid_client']);
  const revoke = await fetch(`${ISSUER}/token/revocation`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: t.refresh_token, client_id: flow.clientId, client_secret: flow.secret }),
  });
  expect('revocation with the secret in the body → 401 invalid_client', revoke.status, 401);
  const basic = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token });
  expect('client_secret_basic → 200 (the refresh token still valid)', basic.status, 200);
  const wrong = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token }, 'not-the-secret');
  expect('a wrong secret → 401 invalid_client', [wrong.status, wrong.body.error], [401, 'invalid_client']);
}

// --- callback iss, end session, back-channel logout by sub ----------------------

{
  const jar = flow.jar();
  const auth = await flow.authorizeRaw({ jar, user: 'carol', scope: 'openid offline_access profile' });
  expect('callback carries iss = the issuer (RFC 9207)', new URL(auth.location).searchParams.get('iss'), ISSUER);
  await flow.exchange(auth.location);
  logoutTokens.length = 0;
  const clientOnly = await flow.endSession(jar, { client_id: flow.clientId, post_logout_redirect_uri: flow.postLogout });
  expect('end session with client_id (no id_token_hint): to post_logout_redirect_uri', clientOnly, `303 ${flow.postLogout}`);
  for (let i = 0; i < 50 && logoutTokens.length === 0; i += 1) await new Promise((r) => { setTimeout(r, 100); });
  const lt = decodeJwt(logoutTokens[0] ?? 'e30.e30.');
  expect('back-channel logout without "session required": names the sub, no sid',
    [lt.payload.sub, lt.payload.sid, lt.payload.aud, lt.payload.iss, typeof lt.payload.jti], [id('carol'), undefined, flow.clientId, ISSUER, 'string']);
  await flow.authorizeRaw({ jar, user: 'carol', scope: 'openid profile' });
  const none = await flow.endSession(jar, { post_logout_redirect_uri: flow.postLogout });
  expect('end session without client_id or id_token_hint: the IdP\'s own success page', none, `303 ${ISSUER}/session/end/success`);
  const bad = await fetch(`${ISSUER}/session/end?client_id=${flow.clientId}&post_logout_redirect_uri=${encodeURIComponent('http://localhost:9/elsewhere')}`);
  const badBody = await bad.json();
  expect('unregistered post_logout_redirect_uri → 400', [bad.status, badBody.error_description], [400, 'post_logout_redirect_uri not registered']);
}

// --- an API resource deleted in Logto ------------------------------------------

{
  const jar = flow.jar();
  const t = await flow.signInAndExchange({ jar, user: 'bob', scope: 'openid offline_access profile read:docs', resources: [API] });
  const del = await fetch(`${BASE}/__dev/resources/delete?indicator=${encodeURIComponent(API)}`, { method: 'POST' });
  expect('hook: delete an API resource', del.status, 200);
  const r = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token, resource: API });
  expect('deleted resource, granted at sign-in → exactly Logto\'s 400 invalid_target', [r.status, r.body], [400, INVALID_TARGET]);
  const plain = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token });
  expect('deleted resource: a refresh without resource still works', plain.status, 200);
  const auth = await flow.authorizeRaw({ jar: flow.jar(), scope: 'openid profile', resources: [API] });
  expect('deleted resource at sign-in → error=invalid_target at the redirect URI', new URL(auth.location).searchParams.get('error'), 'invalid_target');
  await fetch(`${BASE}/__dev/resources/restore`, { method: 'POST' });
  const back = await flow.token({ grant_type: 'refresh_token', refresh_token: plain.body.refresh_token, resource: API });
  expect('restored resource: the grant gets its token again', [back.status, decodeJwt(back.body.access_token).payload.scope], [200, 'read:docs']);
}

// --- defaults: lifetimes, token shapes, the answer's scope ----------------------
// smoke.sh starts this instance with no DEVIDP_* variables, so what is checked
// here are the dev IdP's defaults, which must be Logto's.

const lifetime = (jwt) => { const { payload } = decodeJwt(jwt); return payload.exp - payload.iat; };
const OPAQUE_43 = /^[A-Za-z0-9_-]{43}$/;

{
  const jar = flow.jar();
  const base = `openid offline_access profile ${ORGS}`;
  const t = await flow.signInAndExchange({ jar, user: 'alice', scope: `${base} read:docs manage:members`, resources: [API, ORG_RESOURCE] });
  expect('default ID token lifetime: exp - iat = 3600 s', lifetime(t.id_token), 3600);
  expect('refresh token: opaque, 43 characters (not a JWT)', [OPAQUE_43.test(t.refresh_token), t.refresh_token.split('.').length], [true, 1]);
  expect(`code exchange without resource: scope lists the OIDC scopes asked and granted, no ${ORG_ROLES}, no permissions`,
    sorted(t.scope.split(' ')), sorted(base.split(' ')));
  const intro = await fetch(`${ISSUER}/token/introspection`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${flow.clientId}:${flow.secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token: t.refresh_token }),
  });
  const rt = await intro.json();
  expect('default refresh token lifetime (introspection): 14 days', [intro.status, rt.active, rt.exp - rt.iat], [200, true, 14 * 24 * 3600]);

  const r = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token });
  expect('refresh (confidential client, before 70 % of the lifetime): the same refresh token back',
    [r.status, r.body.refresh_token === t.refresh_token], [200, true]);
  expect('refresh without resource: a fresh ID token of 3600 s, scope as at sign-in',
    [lifetime(r.body.id_token), sorted(r.body.scope.split(' '))], [3600, sorted(base.split(' '))]);

  const a = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token, resource: API });
  const at = decodeJwt(a.body.access_token).payload;
  expect('default API resource token lifetime: exp - iat = expires_in = 3600 s', [at.exp - at.iat, a.body.expires_in], [3600, 3600]);
  expect('API resource token: iss the issuer, sub the user, client_id the app; the answer\'s scope its permissions',
    [at.iss, at.sub, at.client_id, a.body.scope], [ISSUER, id('alice'), flow.clientId, 'read:docs']);
  expect('refresh with resource: an opaque refresh token still', OPAQUE_43.test(a.body.refresh_token), true);

  const o = await flow.token({ grant_type: 'refresh_token', refresh_token: t.refresh_token, organization_id: ACME });
  const ot = decodeJwt(o.body.access_token).payload;
  expect('default organization token lifetime: exp - iat = expires_in = 3600 s', [ot.exp - ot.iat, o.body.expires_in], [3600, 3600]);
  expect('organization token: iss the issuer, sub the user, client_id the app; the answer\'s scope its permissions',
    [ot.iss, ot.sub, ot.client_id, o.body.scope], [ISSUER, id('alice'), flow.clientId, 'manage:members']);

  const direct = await flow.signInAndExchange({ jar, scope: `${base} read:docs`, resources: [API], exchange: { resource: API } });
  expect('code exchange with resource: exp - iat = expires_in = 3600 s', [lifetime(direct.access_token), direct.expires_in], [3600, 3600]);

  const withRoles = await flow.signInAndExchange({ jar, scope: `${base} ${ORG_ROLES}` });
  expect(`code exchange: scope lists ${ORG_ROLES} when asked for`, sorted(withRoles.scope.split(' ')), sorted([...base.split(' '), ORG_ROLES]));
  const rr = await flow.token({ grant_type: 'refresh_token', refresh_token: withRoles.refresh_token });
  expect(`refresh: scope lists ${ORG_ROLES} when it was asked for at sign-in`, sorted(rr.body.scope.split(' ')), sorted([...base.split(' '), ORG_ROLES]));
  const again = await flow.signInAndExchange({ jar, scope: base });
  const ar = await flow.token({ grant_type: 'refresh_token', refresh_token: again.refresh_token });
  expect(`a later sign-in not asking for ${ORG_ROLES}: not in the exchange's or the refresh's scope (earlier grants do not leak)`,
    [sorted(again.scope.split(' ')), sorted(ar.body.scope.split(' '))], [sorted(base.split(' ')), sorted(base.split(' '))]);
  const narrow = await flow.token({ grant_type: 'refresh_token', refresh_token: again.refresh_token, scope: 'openid profile' });
  expect('refresh asking for less scope: the answer lists only that', [narrow.status, sorted(narrow.body.scope.split(' '))], [200, 'openid profile']);

  const noNonce = await flow.signInAndExchange({ jar, scope: base, nonce: null });
  expect('no nonce in the authorization request (as Logto SDKs send): accepted, ID token without nonce',
    [typeof noNonce.id_token, decodeJwt(noNonce.id_token).payload.nonce], ['string', undefined]);
}

receiver.close();
process.stdout.write(`strict-check: ${passed} passed\n`);
