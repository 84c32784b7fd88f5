// Logto's error bodies. Logto's server wraps oidc-provider in a middleware
// (koa-oidc-error-handler in packages/core) that adds its own `code`
// (`oidc.<error>`, or `session.not_found`) and an English `message` in front
// of oidc-provider's `error` and `error_description`, and an `error_uri` for
// `invalid_grant`. A refused refresh grant then reads, exactly:
//   {"code":"oidc.invalid_target","message":"Invalid resource indicator.",
//    "error":"invalid_target","error_description":"resource indicator is missing, or unknown"}

// Logto's English phrases (errors.oidc.*), interpolated only with {code}.
const MESSAGES = {
  aborted: 'The end-user aborted interaction.',
  invalid_scope: 'Invalid scope: {{error_description}}.',
  invalid_token: 'Invalid token provided.',
  invalid_client_metadata: 'Invalid client metadata provided.',
  insufficient_scope: 'Token missing scope `{{scope}}`.',
  invalid_request: 'Request is invalid.',
  invalid_grant: 'Grant request is invalid.',
  invalid_issuer: 'Invalid issuer.',
  invalid_redirect_uri: "`redirect_uri` did not match any of the client's registered `redirect_uris`.",
  access_denied: 'Access denied.',
  invalid_target: 'Invalid resource indicator.',
  unsupported_grant_type: 'Unsupported `grant_type` requested.',
  unsupported_response_mode: 'Unsupported `response_mode` requested.',
  unsupported_response_type: 'Unsupported `response_type` requested.',
  server_error: 'An unknown OIDC error occurred. Please try again later.',
};
const SESSION_NOT_FOUND = 'Session not found.';
const ERROR_URIS = { invalid_grant: 'https://openid.sh/debug/invalid_grant' };

// i18next (skipOnVariables, its default) leaves a placeholder it was given no
// value for as it is: Logto passes only {code}.
const interpolate = (text, vars) => text.replace(/\{\{(\w+)\}\}/g, (match, name) => vars[name] ?? match);

const isSessionNotFound = (description) => typeof description === 'string'
  && ((description.includes('session') && description.includes('not found'))
    || description.includes('authorization request has expired'));

/** Logto's body for an oidc-provider error body `{error, error_description, …}`. */
export function logtoErrorBody(body) {
  const code = isSessionNotFound(body.error_description) ? 'session.not_found' : `oidc.${body.error}`;
  let message;
  if (code === 'session.not_found') message = SESSION_NOT_FOUND;
  else if (MESSAGES[body.error]) message = interpolate(MESSAGES[body.error], { code });
  else message = `An OIDC error occurred: ${code}.`;
  const out = { code, message };
  if (ERROR_URIS[body.error]) out.error_uri = ERROR_URIS[body.error];
  return { ...out, ...body };
}

/** Koa middleware for the provider: reshapes every JSON error body as Logto does. */
export async function logtoErrorMiddleware(ctx, next) {
  await next();
  const { body } = ctx;
  if (ctx.status >= 400 && body && typeof body === 'object' && !Buffer.isBuffer(body)
    && typeof body.error === 'string'
    && (body.error_description === undefined || typeof body.error_description === 'string')) {
    ctx.body = logtoErrorBody(body);
  }
}
