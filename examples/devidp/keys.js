// Signing keys, generated at start-up and on /__dev/rotate-keys. Without
// DEVIDP_STORE every start gets fresh keys, like a new tenant; with it they
// are saved and loaded again (persist.js), as a Logto tenant keeps its keys.
import { generateKeyPairSync, randomBytes } from 'node:crypto';

const ALGS = {
  ES384: { type: 'ec', options: { namedCurve: 'P-384' } },
  ES256: { type: 'ec', options: { namedCurve: 'P-256' } },
  ES512: { type: 'ec', options: { namedCurve: 'P-521' } },
  RS256: { type: 'rsa', options: { modulusLength: 2048 } },
};

export const SUPPORTED_ALGS = Object.keys(ALGS);

const ALNUM = '0123456789abcdefghijklmnopqrstuvwxyz';

export function randomId(length) {
  const bytes = randomBytes(length);
  let id = '';
  for (const byte of bytes) id += ALNUM[byte % ALNUM.length];
  return id;
}

/** A private JWK for `alg` with a fresh Logto-style random `kid`. */
export function generateSigningKey(alg) {
  const spec = ALGS[alg];
  if (!spec) throw new Error(`DEVIDP_ALG must be one of ${SUPPORTED_ALGS.join(', ')}, got ${alg}`);
  const { privateKey } = generateKeyPairSync(spec.type, spec.options);
  return { ...privateKey.export({ format: 'jwk' }), kid: randomId(32), alg, use: 'sig' };
}
