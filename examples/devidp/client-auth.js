// Client authentication at the token, revocation and introspection endpoints:
// `client_secret_basic` only. Logto registers Traditional web apps with
// `token_endpoint_auth_method: client_secret_basic`, but node-oidc-provider
// (and so Logto) also accepts the secret in the form body; the dev IdP refuses
// that unless DEVIDP_CLIENT_SECRET_POST=1, so a client that does not use Basic
// auth fails here rather than in front of a stricter server.
import { logtoErrorBody } from './logto-errors.js';

const AUTHENTICATED = new Set(['/oidc/token', '/oidc/token/revocation', '/oidc/token/introspection']);
const LIMIT = 56 * 1024; // oidc-provider's own body limit

/**
 * Reads a form POST to an endpoint with client authentication. Answers 401
 * invalid_client (and returns true) when the secret is in the body; otherwise
 * leaves the body in req.body, where oidc-provider reads it, and returns false.
 */
export async function refuseSecretInBody(req, res, pathname) {
  if (req.method !== 'POST' || !AUTHENTICATED.has(pathname)) return false;
  if (!String(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) return false;
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > LIMIT) throw Object.assign(new Error('body too large'), { status: 413 });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  req.body = text;
  if (!new URLSearchParams(text).has('client_secret')) return false;
  const body = JSON.stringify(logtoErrorBody({
    error: 'invalid_client',
    error_description: 'client authentication failed',
  }));
  res.writeHead(401, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
  return true;
}
