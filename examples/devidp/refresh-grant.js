// The refresh_token grant with Logto's organization token (Logto RFC 0001):
// `organization_id` on a refresh request returns an access token whose `aud`
// is `urn:logto:organization:<id>`; with `resource` as well, a token for that
// API scoped to the organization (permissions from that organization's roles
// and an `organization_id` claim). Without `organization_id` it behaves as
// oidc-provider's own refresh grant. Logto replaces the grant the same way;
// the checks run in the order Logto's v8-era grant runs them, so the errors
// match (403 access_denied for a non-member, 403 insufficient_scope without
// the organizations scope, 400 invalid_grant for a reused refresh token).
import { errors } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import revoke from 'oidc-provider/lib/helpers/revoke.js';
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
import filterClaims from 'oidc-provider/lib/helpers/filter_claims.js';

import {
  ORGANIZATIONS_SCOPE, ORGANIZATION_RESOURCE, isMember, organizationPermissions, organizationUrn,
} from './data.js';

const {
  InvalidGrant, InvalidRequest, InvalidScope, InsufficientScope, AccessDenied,
} = errors;

export const parameters = ['refresh_token', 'scope', 'organization_id', 'resource'];

function forbidden(message) {
  const error = new AccessDenied(message);
  error.statusCode = 403;
  return error;
}

/**
 * @param {object} opts
 * @param {string} opts.alg signing algorithm for organization tokens
 * @param {number} opts.organizationTokenTtl seconds
 * @param {object} [opts.reuse] reuse counting (GET /__dev/refresh-reuse)
 * @param {(jti: string) => number|undefined} opts.reuse.consumedAt when the
 *   stored token was consumed (rotated), whatever the adapter's 3 s grace says
 * @param {(kind: 'within_grace'|'refused') => void} opts.reuse.report
 */
export function refreshTokenGrant({ alg, organizationTokenTtl, reuse }) {
  return async function refreshTokenHandler(ctx, next) {
    const { provider, client, params } = ctx.oidc;
    const {
      RefreshToken, AccessToken, IdToken, Grant, Account,
    } = provider;
    const {
      conformIdTokenClaims, rotateRefreshToken, features: { userinfo, resourceIndicators },
    } = instance(provider).configuration();

    if (!params.refresh_token) {
      throw new InvalidRequest("missing required parameter 'refresh_token'");
    }

    let refreshTokenValue = params.refresh_token;
    let refreshToken = await RefreshToken.find(refreshTokenValue, { ignoreExpiration: true });
    if (!refreshToken) throw new InvalidGrant('refresh token not found');
    if (refreshToken.clientId !== client.clientId) throw new InvalidGrant('client mismatch');
    if (refreshToken.isExpired) throw new InvalidGrant('refresh token is expired');

    const organizationId = params.organization_id ? String(params.organization_id) : undefined;
    if (organizationId && !refreshToken.scopes.has(ORGANIZATIONS_SCOPE)) {
      throw new InsufficientScope('refresh token missing required scope', ORGANIZATIONS_SCOPE);
    }

    const grant = await Grant.find(refreshToken.grantId, { ignoreExpiration: true });
    if (!grant) throw new InvalidGrant('grant not found');
    if (grant.isExpired) throw new InvalidGrant('grant is expired');
    if (grant.clientId !== client.clientId) throw new InvalidGrant('client mismatch');

    if (params.scope) {
      const missing = [...ctx.oidc.requestParamScopes].filter((s) => !refreshToken.scopes.has(s));
      if (missing.length) {
        throw new InvalidScope(`refresh token missing requested scope${missing.length > 1 ? 's' : ''}`, missing.join(' '));
      }
    }

    ctx.oidc.entity('RefreshToken', refreshToken);
    ctx.oidc.entity('Grant', grant);

    const account = await Account.findAccount(ctx, refreshToken.accountId, refreshToken);
    if (!account) throw new InvalidGrant('refresh token invalid (referenced account not found)');
    if (refreshToken.accountId !== grant.accountId) throw new InvalidGrant('accountId mismatch');
    ctx.oidc.entity('Account', account);

    // Reuse of a rotated token (past the adapter's 3 s grace): revoke the
    // whole grant, the newest refresh token included.
    if (refreshToken.consumed) {
      reuse?.report('refused');
      await Promise.all([refreshToken.destroy(), revoke(ctx, refreshToken.grantId)]);
      throw new InvalidGrant('refresh token already used');
    }
    // Presented again after it was redeemed (rotated), inside Logto's 3 s
    // grace: accepted, and a double redemption all the same.
    let reuseCounted = false;
    if (reuse?.consumedAt(refreshToken.jti) !== undefined) {
      reuse.report('within_grace');
      reuseCounted = true;
    }

    if (organizationId && !isMember(account.accountId, organizationId)) {
      throw forbidden('user is not a member of the organization');
    }

    if (rotateRefreshToken === true
      || (typeof rotateRefreshToken === 'function' && await rotateRefreshToken(ctx))) {
      // Two requests with the same token racing to the rotation point: the
      // second finds it consumed only now.
      if (!reuseCounted && reuse?.consumedAt(refreshToken.jti) !== undefined) reuse.report('within_grace');
      await refreshToken.consume();
      ctx.oidc.entity('RotatedRefreshToken', refreshToken);
      const previous = refreshToken;
      refreshToken = new RefreshToken({
        accountId: previous.accountId,
        acr: previous.acr,
        amr: previous.amr,
        authTime: previous.authTime,
        claims: previous.claims,
        client,
        expiresWithSession: previous.expiresWithSession,
        iiat: previous.iiat,
        grantId: previous.grantId,
        gty: previous.gty,
        nonce: previous.nonce,
        resource: previous.resource,
        rotations: typeof previous.rotations === 'number' ? previous.rotations + 1 : 1,
        scope: previous.scope,
        sessionUid: previous.sessionUid,
        sid: previous.sid,
      });
      if (refreshToken.gty && !refreshToken.gty.endsWith('refresh_token')) {
        refreshToken.gty = `${refreshToken.gty} refresh_token`;
      }
      ctx.oidc.entity('RefreshToken', refreshToken);
      refreshTokenValue = await refreshToken.save();
    }

    const at = new AccessToken({
      accountId: account.accountId,
      client,
      expiresWithSession: refreshToken.expiresWithSession,
      grantId: refreshToken.grantId,
      gty: refreshToken.gty,
      sessionUid: refreshToken.sessionUid,
      sid: refreshToken.sid,
    });
    if (at.gty && !at.gty.endsWith('refresh_token')) at.gty = `${at.gty} refresh_token`;

    const scope = params.scope ? ctx.oidc.requestParamScopes : refreshToken.scopes;

    if (organizationId && !params.resource) {
      // Organization token: the user's organization permissions in this
      // organization that were also granted (asked for in `scope`) at sign-in.
      const available = organizationPermissions(account.accountId, organizationId);
      const audience = organizationUrn(organizationId);
      at.aud = audience;
      at.resourceServer = new provider.ResourceServer(audience, {
        audience,
        scope: available.join(' '),
        accessTokenTTL: organizationTokenTtl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      });
      // Logto grants organization permissions only to a sign-in that sent
      // `resource=urn:logto:resource:organizations` and asked for them in
      // `scope`; otherwise the token comes with an empty scope.
      at.scope = refreshToken.resourceIndicators.has(ORGANIZATION_RESOURCE)
        ? grant.getResourceScopeFiltered(ORGANIZATION_RESOURCE, available.filter((name) => scope.has(name)))
        : '';
    } else {
      const resource = await resolveResource(ctx, refreshToken, { userinfo, resourceIndicators }, scope);
      if (resource) {
        const info = await resourceIndicators.getResourceServerInfo(ctx, resource, client);
        at.resourceServer = new provider.ResourceServer(resource, info);
        at.scope = grant.getResourceScopeFiltered(
          resource,
          [...scope].filter(Set.prototype.has.bind(at.resourceServer.scopes)),
        );
      } else {
        at.claims = refreshToken.claims;
        at.scope = grant.getOIDCScopeFiltered(scope);
      }
    }

    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    let idToken;
    if (scope.has('openid')) {
      const claims = filterClaims(refreshToken.claims, 'id_token', grant);
      const rejected = grant.getRejectedOIDCClaims();
      const token = new IdToken({
        ...await account.claims('id_token', [...scope].join(' '), claims, rejected),
        acr: refreshToken.acr,
        amr: refreshToken.amr,
        auth_time: refreshToken.authTime,
      }, { ctx });
      token.scope = conformIdTokenClaims && userinfo.enabled && !at.aud
        ? 'openid'
        : grant.getOIDCScopeFiltered(scope);
      token.mask = claims;
      token.rejected = rejected;
      token.set('nonce', refreshToken.nonce);
      token.set('at_hash', accessToken);
      token.set('sid', refreshToken.sid);
      idToken = await token.issue({ use: 'idtoken' });
    }

    ctx.body = {
      access_token: accessToken,
      expires_in: at.expiration,
      id_token: idToken,
      refresh_token: refreshTokenValue,
      scope: at.scope,
      token_type: at.tokenType,
    };

    await next();
  };
}
