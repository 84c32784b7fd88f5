// Machine-to-machine applications and the client_credentials grant, as a
// Logto 1.37 tenant issues them (packages/core/src/oidc/grants/
// client-credentials.ts and resource.ts, written here from their behaviour):
//
// - Basic auth with the app's id and secret; `resource` is required unless
//   `organization_id` is given (400 invalid_target "both `resource` and
//   `organization_id` are not provided"); an unknown indicator is 400
//   invalid_target; more than one is 400 invalid_target.
// - `scope` of the token = the requested permissions that the app's
//   machine-to-machine roles grant for that resource; none granted means no
//   `scope` claim at all (and none in the answer).
// - `sub` = `client_id` = the app's id (21 lower-case letters and digits);
//   `aud` the indicator; no refresh token, no ID token.
// - `organization_id` of an organization the app is not in: 403
//   access_denied. With it and no `resource`: an organization token (`aud`
//   urn:logto:organization:<id>, `scope` the requested organization
//   permissions of the app's organization roles there). With `resource` as
//   well: a token for the resource with the app's organization roles' API
//   permissions there, and an `organization_id` claim.
import { createHash } from 'node:crypto';

import { errors } from 'oidc-provider';
import checkResource from 'oidc-provider/lib/shared/check_resource.js';

import {
  ACME, GLOBEX, ORGANIZATION_PERMISSIONS, organizationUrn,
} from './data.js';

const { AccessDenied, InvalidTarget, InvalidClient } = errors;

const ALNUM = '0123456789abcdefghijklmnopqrstuvwxyz';

/** A Logto application id (21 lower-case alphanumerics), stable per seed. */
export function appId(seed) {
  const digest = createHash('sha256').update(`devidp:app:${seed}`).digest();
  let id = '';
  for (let i = 0; i < 21; i += 1) id += ALNUM[digest[i] % ALNUM.length];
  return id;
}

/**
 * The machine-to-machine apps. `roles` are machine-to-machine roles (API
 * permissions per indicator); `organizations` maps an organization the app
 * was added to → the permissions of its organization roles there.
 */
export const MACHINE_APPS = [
  {
    id: appId('m2m:reporter'),
    secret: 'reporter-m2m-secret-0123456789ab',
    name: 'Reporter (machine-to-machine)',
    roles: { 'https://api.example.com': ['read:docs'] },
    organizations: {
      [ACME]: { scopes: ['read:reports'], resources: { 'https://api.example.com': ['read:docs', 'write:docs'] } },
    },
  },
  {
    id: appId('m2m:no-role'),
    secret: 'norole-m2m-secret-0123456789abcd',
    name: 'No role (machine-to-machine)',
    roles: {},
    organizations: { [GLOBEX]: { scopes: [], resources: {} } },
  },
];

const byId = new Map(MACHINE_APPS.map((app) => [app.id, app]));

/**
 * API permissions an app holds for a resource: from its machine-to-machine
 * roles, or, for an organization, from its organization roles there.
 */
export function machinePermissions(clientId, indicator, organizationId) {
  const app = byId.get(clientId);
  if (!app) return [];
  if (organizationId) return app.organizations[organizationId]?.resources[indicator] ?? [];
  return app.roles[indicator] ?? [];
}

/** The apps, their secrets included: this is a development IdP. */
export function machineAppsInfo() {
  return MACHINE_APPS.map(({ id, secret, name, roles, organizations }) => ({
    client_id: id, client_secret: secret, name, roles, organizations,
  }));
}

/** Registers the apps as clients that may only use client_credentials. */
export async function registerMachineApps(provider, store) {
  for (const app of MACHINE_APPS) {
    const metadata = {
      client_id: app.id,
      client_secret: app.secret,
      client_name: app.name,
      application_type: 'web',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    };
    await provider.Client.validate(metadata);
    store.set('Client', app.id, { payload: metadata });
  }
}

export const parameters = ['scope', 'organization_id', 'resource'];

/** Logto's client_credentials grant (with organization tokens, RFC 0006). */
export function clientCredentialsGrant({ alg }) {
  return async function clientCredentialsHandler(ctx, next) {
    const { client, params, provider } = ctx.oidc;
    if (!client) throw new InvalidClient('client must be available');
    const app = byId.get(client.clientId);
    const organizationId = params.organization_id ? String(params.organization_id) : undefined;

    if (organizationId && !app?.organizations[organizationId]) {
      const error = new AccessDenied('app has not associated with the organization');
      error.statusCode = 403;
      throw error;
    }
    // An organization token needs no resource; anything else does.
    if (!(organizationId && !params.resource)) {
      await checkResource(ctx, async () => {});
    }
    const servers = Object.values(ctx.oidc.resourceServers ?? {});
    if (!organizationId && servers.length === 0) {
      throw new InvalidTarget('both `resource` and `organization_id` are not provided');
    }
    const requested = params.scope ? [...new Set(String(params.scope).split(' '))] : [];
    const token = new provider.ClientCredentials({ client, scope: requested.join(' ') || undefined });

    if (servers.length > 0) {
      if (servers.length !== 1) {
        throw new InvalidTarget('only a single resource indicator value is supported for this grant type');
      }
      const [server] = servers;
      const granted = new Set(server.scope.split(' '));
      token.resourceServer = server;
      token.scope = requested.filter((s) => granted.has(s)).join(' ') || undefined;
    } else {
      const audience = organizationUrn(organizationId);
      const available = app.organizations[organizationId].scopes
        .filter((s) => ORGANIZATION_PERMISSIONS.includes(s));
      token.resourceServer = {
        audience,
        scope: available.join(' '),
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      };
      token.scope = available.filter((s) => requested.includes(s)).join(' ');
    }

    ctx.oidc.entity('ClientCredentials', token);
    const value = await token.save();
    ctx.body = {
      access_token: value,
      expires_in: token.expiration,
      token_type: token.tokenType,
      scope: token.scope,
    };
    await next();
  };
}
