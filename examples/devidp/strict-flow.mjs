// A small OIDC client for strict-check.mjs: a cookie jar, the authorization
// code flow through the dev IdP's sign-in page, the token endpoint with
// client_secret_basic, userinfo and RP-initiated logout.

export function decodeJwt(jwt) {
  const [header, payload] = jwt.split('.').slice(0, 2)
    .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')));
  return { header, payload };
}

class Jar {
  constructor() { this.cookies = new Map(); }

  take(res) {
    for (const line of res.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
  }

  get header() { return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '); }
}

export class Flow {
  constructor(base, {
    clientId, secret, redirectUri, postLogout, backchannel,
  }) {
    Object.assign(this, {
      base, clientId, secret, redirectUri, postLogout, backchannel,
    });
    this.issuer = `${base}/oidc`;
  }

  jar() { return new Jar(); }

  async register() {
    const res = await fetch(`${this.base}/__dev/clients`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_id: this.clientId,
        client_secret: this.secret,
        redirect_uris: [this.redirectUri],
        post_logout_redirect_uris: [this.postLogout],
        backchannel_logout_uri: this.backchannel,
        backchannel_logout_session_required: false,
      }),
    });
    if (res.status !== 200) throw new Error(`register client: ${res.status} ${await res.text()}`);
  }

  async #get(jar, url, init = {}) {
    const res = await fetch(url, {
      ...init,
      redirect: 'manual',
      headers: { ...init.headers, cookie: jar.header },
    });
    jar.take(res);
    return res;
  }

  /**
   * Runs /oidc/auth, signs `user` in on the page shown (if one is shown) and
   * follows redirects up to the redirect URI. Returns {location, pages}.
   */
  async authorizeRaw({
    jar, user, scope, resources = [], prompt = 'consent', extra = {},
    nonce = `n-${Math.random().toString(36).slice(2)}`,
  }) {
    const url = new URL(`${this.issuer}/auth`);
    const q = url.searchParams;
    q.set('client_id', this.clientId);
    q.set('redirect_uri', this.redirectUri);
    q.set('response_type', 'code');
    q.set('scope', scope);
    q.set('state', `st-${Math.random().toString(36).slice(2)}`);
    if (nonce !== null) q.set('nonce', nonce); // null: no nonce, as Logto's SDKs
    if (prompt) q.set('prompt', prompt);
    for (const r of resources) q.append('resource', r);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    let next = url.href;
    let pages = 0;
    for (let hop = 0; hop < 15; hop += 1) {
      const res = await this.#get(jar, next);
      const location = res.headers.get('location');
      const html = await res.text();
      if (location?.startsWith(this.redirectUri)) return { location, pages };
      if (location) {
        next = new URL(location, next).href;
        continue;
      }
      // The page is at Logto's /sign-in?app_id=…; its forms name the interaction.
      const uid = html.match(/="\/interaction\/([\w-]+)\//)?.[1];
      if (res.status !== 200 || !uid || !user) throw new Error(`sign-in stuck at ${next} (HTTP ${res.status})`);
      pages += 1;
      const login = await this.#get(jar, `${this.base}/interaction/${uid}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ username: user, password: user }),
      });
      await login.arrayBuffer();
      next = new URL(login.headers.get('location'), next).href;
      user = undefined;
    }
    throw new Error('too many redirects');
  }

  async token(form, secret = this.secret) {
    const res = await fetch(`${this.issuer}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(this.clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams(form),
    });
    return { status: res.status, body: await res.json() };
  }

  async exchange(location, extra = {}) {
    const code = new URL(location).searchParams.get('code');
    const r = await this.token({
      grant_type: 'authorization_code', code, redirect_uri: this.redirectUri, ...extra,
    });
    if (r.status !== 200) throw new Error(`code exchange: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async signInAndExchange({ exchange = {}, ...opts }) {
    const { location } = await this.authorizeRaw(opts);
    return this.exchange(location, exchange);
  }

  async userinfo(accessToken) {
    const res = await fetch(`${this.issuer}/me`, { headers: { authorization: `Bearer ${accessToken}` } });
    if (res.status !== 200) throw new Error(`userinfo: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** RP-initiated logout; returns "<status> <location>" of the confirmation. */
  async endSession(jar, params) {
    const page = await this.#get(jar, `${this.issuer}/session/end?${new URLSearchParams(params)}`);
    const html = await page.text();
    const xsrf = html.match(/name="xsrf" value="([^"]*)"/)?.[1];
    if (page.status !== 200 || !xsrf) throw new Error(`end session page: ${page.status}`);
    const res = await this.#get(jar, `${this.issuer}/session/end/confirm`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ xsrf, logout: 'yes' }),
    });
    await res.arrayBuffer();
    return `${res.status} ${res.headers.get('location')}`;
  }
}
