// oidc-provider configured the way Logto's server configures it
// (packages/core/src/oidc/init.ts): issuer `<endpoint>/oidc`, JSON errors,
// resource indicators with per-user permissions, refresh-token rotation,
// `offline_access` only with `prompt=consent`, back-channel logout and an
// auto-submitting sign-out page.
import Provider, { errors } from 'oidc-provider';
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';

import { adapterFor } from './adapter.js';
import {
  ORGANIZATIONS_SCOPE, ORGANIZATION_ROLES_SCOPE, ORGANIZATION_RESOURCE, ORGANIZATION_PERMISSIONS,
  RESOURCES, users, resourcePermissions, userClaim,
} from './data.js';
import { refreshTokenGrant, parameters as refreshParameters } from './refresh-grant.js';
import {
  clientCredentialsGrant, parameters as m2mParameters, machinePermissions,
} from './m2m.js';
import { generateSigningKey, randomId } from './keys.js';
import { logtoErrorMiddleware } from './logto-errors.js';
import * as views from './views.js';

/** Logto's extra authorization parameters (ExtraParamsKey). */
export const LOGTO_PARAMS = [
  'interaction_mode', 'first_screen', 'identifier', 'direct_sign_in', 'organization_id',
  'one_time_token', 'google_one_tap_credential',
];

// Claims by scope as in @logto/core-kit: the base ID-token claims, and the
// "extended" ones a tenant may enable for ID tokens (userinfo always has them).
const BASE_CLAIMS = {
  profile: [
    'name', 'family_name', 'given_name', 'middle_name', 'nickname', 'preferred_username', 'profile',
    'picture', 'website', 'gender', 'birthdate', 'zoneinfo', 'locale', 'updated_at', 'username',
    'created_at',
  ],
  email: ['email', 'email_verified'],
  phone: ['phone_number', 'phone_number_verified'],
  address: ['address'],
};
const EXTENDED_CLAIMS = {
  custom_data: ['custom_data'],
  identities: ['identities', 'sso_identities'],
  roles: ['roles'],
  [ORGANIZATIONS_SCOPE]: ['organizations', 'organization_data'],
  [ORGANIZATION_ROLES_SCOPE]: ['organization_roles'],
};
// What a Logto 1.37 tenant with the extended claims enabled put in ID tokens:
// `organization_data` and `sso_identities` stayed userinfo-only. A tenant
// enables them one by one (idTokenConfig.enabledExtendedClaims).
export const ID_TOKEN_EXTENDED = new Set(['custom_data', 'identities', 'roles', 'organizations', 'organization_roles']);
const USERINFO_CLAIMS = Object.fromEntries(
  [...Object.keys(BASE_CLAIMS), ...Object.keys(EXTENDED_CLAIMS)]
    .map((scope) => [scope, [...(BASE_CLAIMS[scope] ?? []), ...(EXTENDED_CLAIMS[scope] ?? [])]]),
);

function acceptedClaims(use, scope, rejected, extendedIdTokenClaims) {
  const out = [];
  for (const s of scope.split(' ')) {
    if (BASE_CLAIMS[s]) out.push(...BASE_CLAIMS[s]);
    for (const claim of EXTENDED_CLAIMS[s] ?? []) {
      if (use === 'userinfo' || extendedIdTokenClaims.has(claim)) out.push(claim);
    }
  }
  return out.filter((claim) => !rejected.includes(claim));
}

// Logto's sign-in experience routes (@logto/schemas experience.routes) by
// first_screen (or the legacy interaction_mode).
const FIRST_SCREEN_ROUTES = {
  sign_in: 'sign-in',
  signIn: 'sign-in',
  register: 'register',
  signUp: 'register',
  reset_password: 'reset-password',
  'identifier:sign_in': 'identifier-sign-in',
  'identifier:register': 'identifier-register',
  single_sign_on: 'single-sign-on',
};
/** The paths the dev IdP serves its sign-in pages at (see server.js). */
export const EXPERIENCE_PATH = /^\/(?:sign-in|register|reset-password|identifier-sign-in|identifier-register|single-sign-on|consent|direct(?:\/[^/]*){1,2})\/?$/;

const str = (v) => (typeof v === 'string' && v !== '' ? v : undefined);

/** Logto's buildLoginPromptUrl (packages/core/src/oidc/utils.ts), without the leading "/". */
export function loginPromptUrl(params, appId) {
  const search = new URLSearchParams();
  if (str(appId)) search.append('app_id', appId);
  if (str(params.organization_id)) search.append('organization_id', params.organization_id);
  if (str(params.ui_locales)) search.append('ui_locales', params.ui_locales);
  for (const key of ['one_time_token', 'login_hint', 'identifier']) {
    if (str(params[key])) search.append(key, params[key]);
  }
  const firstScreen = FIRST_SCREEN_ROUTES[str(params.first_screen) ?? str(params.interaction_mode) ?? 'sign_in'] ?? 'sign-in';
  const query = () => (search.size > 0 ? `?${search}` : '');
  const direct = str(params.direct_sign_in);
  if (direct) {
    search.append('fallback', firstScreen);
    const [method = '', target = ''] = direct.split(':');
    return `${['direct', method, target].filter(Boolean).join('/')}${query()}`;
  }
  return `${firstScreen}${query()}`;
}

/** Logto's buildConsentPromptUrl. */
function consentPromptUrl(appId) {
  return str(appId) ? `consent?${new URLSearchParams({ app_id: appId })}` : 'consent';
}

/** oidc-provider's default rotation policy, which Logto keeps. */
function logtoRotation(ctx) {
  const { RefreshToken: refreshToken, Client: client } = ctx.oidc.entities;
  if (!refreshToken || !client) return false;
  if (refreshToken.totalLifetime() >= 365.25 * 24 * 60 * 60) return false;
  if (client.clientAuthMethod === 'none' && !refreshToken.isSenderConstrained()) return true;
  return refreshToken.ttlPercentagePassed() >= 70;
}

/**
 * @param {object} cfg
 * @param {string} cfg.issuer
 * @param {string} cfg.alg
 * @param {object} cfg.ttl {accessToken, idToken, refreshToken, session, authorizationCode}
 * @param {'logto'|'always'|'never'} cfg.rotate
 * @param {Set<string>} cfg.extendedIdTokenClaims the extended claims the tenant puts in ID tokens
 * @param {import('./adapter.js').Store} cfg.store
 * @param {object[]} [cfg.signingKeys] saved private JWKs, the current one first
 * @param {string[]} [cfg.cookieKeys] saved cookie signing keys
 * @param {(keys: object[]) => void} [cfg.onKeysChanged] called after a key rotation
 * @param {(kind: 'within_grace'|'refused') => void} [cfg.onRefreshReuse] called
 *   when a refresh token that was already redeemed (rotated) is presented again
 * @param {(event: object) => void} cfg.onBackchannel called for every logout token sent
 */
export function createProvider(cfg) {
  const { alg, ttl } = cfg;
  // Saved keys (DEVIDP_STORE) are kept, as a Logto tenant keeps its keys; a
  // new key is made when none signs with `alg` (a new tenant, or DEVIDP_ALG
  // changed: the old keys stay published, as after a rotation).
  const signingKeys = [...(cfg.signingKeys ?? [])];
  if (!signingKeys.some((key) => key.alg === alg)) signingKeys.unshift(generateSigningKey(alg));
  const cookieKeys = cfg.cookieKeys?.length ? [...cfg.cookieKeys] : [randomId(32), randomId(32)];

  const resourceServer = (scope, accessTokenTTL = ttl.accessToken) => ({
    scope: scope.join(' '),
    accessTokenTTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg } },
  });

  const provider = new Provider(cfg.issuer, {
    adapter: adapterFor(cfg.store),
    jwks: { keys: signingKeys },
    cookies: {
      keys: cookieKeys,
      long: { signed: true, sameSite: 'lax', path: '/' },
      short: { signed: true, sameSite: 'lax', path: '/' },
    },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: alg,
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'ES384', 'ES512'],
    },
    claims: { openid: ['sub'], ...USERINFO_CLAIMS },
    conformIdTokenClaims: false,
    extraParams: LOGTO_PARAMS,
    pkce: {
      methods: ['S256'],
      required: (ctx, client) => client.clientAuthMethod !== 'client_secret_basic',
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      clientCredentials: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: (ctx, form) => { ctx.body = views.logoutPage(form); },
        postLogoutSuccessSource: (ctx) => { ctx.body = views.logoutSuccessPage(); },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        // Logto: the code exchange without `resource` gets an opaque token for
        // userinfo, never a token for a granted resource.
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, indicator) => {
          if (indicator === ORGANIZATION_RESOURCE) {
            return resourceServer(ORGANIZATION_PERMISSIONS, 3600);
          }
          if (!RESOURCES[indicator]) throw new errors.InvalidTarget();
          const userId = ctx.oidc.session?.accountId ?? ctx.oidc.entities.Account?.accountId;
          const organizationId = ctx.oidc.params?.organization_id;
          const orgId = typeof organizationId === 'string' ? organizationId : undefined;
          const scopes = userId
            ? resourcePermissions(userId, indicator, orgId)
            : machinePermissions(ctx.oidc.client?.clientId, indicator, orgId);
          return resourceServer(scopes);
        },
      },
    },
    formats: {
      customizers: {
        // Logto: a user's access token always has `scope`, empty ("") when
        // none of the permissions asked for at sign-in is granted;
        // oidc-provider would leave the claim out. A machine-to-machine
        // token (no account) granted none has no `scope` claim at all.
        jwt: (ctx, token, jwt) => {
          if (token.accountId && jwt.payload.scope === undefined) jwt.payload.scope = '';
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      const organizationId = ctx.oidc.params?.organization_id;
      const { AccessToken, ClientCredentials } = ctx.oidc.provider;
      if (organizationId && ctx.oidc.params?.resource
        && (token instanceof AccessToken || token instanceof ClientCredentials)) {
        return { organization_id: organizationId };
      }
      return undefined;
    },
    findAccount: (ctx, sub) => {
      const user = users.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        claims: (use, scope, _claims, rejected = []) => {
          const claims = { sub };
          for (const claim of acceptedClaims(use, scope, rejected, cfg.extendedIdTokenClaims)) {
            const value = userClaim(user, claim);
            if (value !== undefined) claims[claim] = value;
          }
          return claims;
        },
      };
    },
    interactions: {
      // Logto sends the browser to its sign-in experience, not to a URL that
      // names the interaction (which it finds again by the `_interaction`
      // cookie): `/sign-in?app_id=<client_id>`, `/register?…`,
      // `/direct/social/kakao?…&fallback=sign-in`, `/consent?app_id=…`; and
      // it sets a `_logto` cookie with the app id for its pages.
      url: (ctx, interaction) => {
        const appId = interaction.params.client_id;
        const params = ctx.oidc.params ?? {};
        ctx.cookies.set('_logto', JSON.stringify(Object.fromEntries(Object.entries({
          appId: typeof appId === 'string' ? appId : undefined,
          organizationId: typeof params.organization_id === 'string' ? params.organization_id : undefined,
          uiLocales: typeof params.ui_locales === 'string' ? params.ui_locales : undefined,
        }).filter(([, v]) => v !== undefined))), { sameSite: 'lax', overwrite: true, httpOnly: false });
        if (interaction.prompt.name === 'consent') return `/${consentPromptUrl(appId)}`;
        return `/${loginPromptUrl(params, appId)}`;
      },
    },
    // Logto answers errors as JSON, browser or not.
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
    rotateRefreshToken: { logto: logtoRotation, always: true, never: false }[cfg.rotate],
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? ttl.accessToken,
      // Logto keeps oidc-provider's default: 60 s.
      AuthorizationCode: ttl.authorizationCode,
      BackchannelAuthenticationRequest: 600,
      ClientCredentials: 3600,
      DeviceCode: 600,
      Grant: Math.max(180 * 24 * 3600, ttl.refreshToken, ttl.session),
      IdToken: ttl.idToken,
      Interaction: 3600,
      RefreshToken: (ctx, token, client) => {
        // oidc-provider's default: public clients' rotated tokens keep the
        // original expiry.
        const rotated = ctx?.oidc?.entities?.RotatedRefreshToken;
        if (rotated && client.applicationType === 'web' && client.clientAuthMethod === 'none'
          && !token.isSenderConstrained()) {
          return rotated.remainingTTL;
        }
        return ttl.refreshToken;
      },
      Session: ttl.session,
    },
  });

  provider.use(logtoErrorMiddleware);

  provider.registerGrantType(
    'refresh_token',
    refreshTokenGrant({
      alg,
      organizationTokenTtl: 3600,
      reuse: {
        consumedAt: (jti) => cfg.store.consumedAt('RefreshToken', jti),
        report: (kind) => cfg.onRefreshReuse?.(kind),
      },
    }),
    refreshParameters,
    ['resource'],
  );

  provider.registerGrantType('client_credentials', clientCredentialsGrant({ alg }), m2mParameters, ['resource']);

  // Logout tokens are sent here rather than by oidc-provider's own client so
  // every delivery (and the status the RP answered) can be reported.
  provider.Client.prototype.backchannelLogout = async function backchannelLogout(sub, sid) {
    const logoutToken = new provider.IdToken({ sub }, { client: this, ctx: undefined });
    logoutToken.mask = { sub: null };
    logoutToken.set('events', { 'http://schemas.openid.net/event/backchannel-logout': {} });
    logoutToken.set('jti', randomId(21));
    if (this.backchannelLogoutSessionRequired) logoutToken.set('sid', sid);
    const event = {
      at: new Date().toISOString(), client_id: this.clientId, uri: this.backchannelLogoutUri, sub,
      sid: this.backchannelLogoutSessionRequired ? sid : undefined,
    };
    try {
      const response = await fetch(this.backchannelLogoutUri, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ logout_token: await logoutToken.issue({ use: 'logout' }) }),
        signal: AbortSignal.timeout(5000),
        redirect: 'manual',
      });
      await response.arrayBuffer().catch(() => {});
      event.status = response.status;
    } catch (err) {
      event.error = err.cause?.code ?? err.message;
    }
    cfg.onBackchannel(event);
    if (event.status !== 200 && event.status !== 204) {
      throw new Error(`back-channel logout to ${this.backchannelLogoutUri} got ${event.status ?? event.error}`);
    }
  };

  /** Makes a new key current; keeps the old ones in the JWKS unless dropOld. */
  provider.rotateSigningKey = (dropOld = false) => {
    const key = generateSigningKey(alg);
    if (dropOld) signingKeys.length = 0;
    // The first key of an algorithm is the one oidc-provider signs with.
    signingKeys.unshift(key);
    initializeKeystore.call(provider, { keys: signingKeys });
    cfg.onKeysChanged?.(signingKeys);
    return { current: key.kid, kids: signingKeys.map((k) => k.kid) };
  };
  provider.signingKids = () => signingKeys.map((k) => k.kid);
  /** The private signing JWKs and cookie keys, for DEVIDP_STORE. */
  provider.secrets = () => ({ signing_keys: [...signingKeys], cookie_keys: [...cookieKeys] });

  return provider;
}
