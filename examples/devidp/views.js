// HTML of the dev IdP's pages: small, self-contained (no external fonts or
// scripts), so they render the same offline and in screenshots.

const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

const CSS = `
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
  font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;
  background:#f4f5fa;color:#1d1b31}
main{width:100%;max-width:400px;margin:32px 16px;background:#fff;border-radius:16px;
  box-shadow:0 4px 24px rgba(30,20,80,.08);padding:32px 32px 24px}
.brand{display:flex;align-items:center;gap:10px;font-weight:700;font-size:18px;margin-bottom:20px}
.logo{width:32px;height:32px;border-radius:8px;background:#5d34f2;color:#fff;display:flex;
  align-items:center;justify-content:center;font-weight:800}
.dev{font-size:11px;font-weight:600;background:#ffe9b3;color:#7a5200;border-radius:6px;padding:2px 6px}
h1{font-size:22px;margin:0 0 4px}
p.sub{margin:0 0 20px;color:#5e5a73}
label{display:block;font-size:13px;font-weight:600;margin:12px 0 4px}
input[type=text],input[type=password]{width:100%;height:44px;border:1px solid #c9c5d8;border-radius:8px;
  padding:0 12px;font:inherit}
input:focus{outline:2px solid #5d34f2;border-color:transparent}
button,.button{display:flex;align-items:center;justify-content:center;gap:8px;width:100%;height:44px;
  margin-top:16px;border:0;border-radius:8px;font:600 15px system-ui,sans-serif;cursor:pointer;
  text-decoration:none}
.primary{background:#5d34f2;color:#fff}
.primary:hover{background:#4a22e0}
.kakao{background:#fee500;color:#191600}
.kakao:hover{background:#f5dc00}
.divider{display:flex;align-items:center;gap:12px;color:#8b879c;font-size:13px;margin:20px 0 0}
.divider:before,.divider:after{content:"";flex:1;border-top:1px solid #e6e4ee}
.error{background:#fdecea;color:#a3160b;border-radius:8px;padding:10px 12px;margin:0 0 8px;font-size:14px}
.notice{background:#eef3ff;color:#22408f;border-radius:8px;padding:10px 12px;margin:0 0 8px;font-size:14px}
.links{text-align:center;margin-top:18px;font-size:14px}
a{color:#5d34f2}
.hint{margin-top:20px;font-size:12px;color:#6f6b82;background:#f7f6fb;border-radius:8px;padding:8px 12px}
.hint code{font-size:12px}
details{margin-top:12px;font-size:12px;color:#5e5a73}
summary{cursor:pointer}
table{width:100%;border-collapse:collapse;margin-top:6px}
td{padding:3px 4px;border-top:1px solid #efedf5;vertical-align:top;word-break:break-all}
td:first-child{font-family:ui-monospace,monospace;white-space:nowrap;color:#3b3752;width:1%}
.empty{color:#b1adc0}
`;

function layout(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
<main>
<div class="brand"><span class="logo">L</span>Dev Logto <span class="dev">dev IdP</span></div>
${body}
</main>
</body>
</html>`;
}

/** Logto parameters shown on the sign-in pages (and asserted by tests). */
const SHOWN_PARAMS = [
  'first_screen', 'identifier', 'direct_sign_in', 'login_hint', 'ui_locales', 'organization_id',
  'interaction_mode', 'prompt', 'scope', 'resource',
];

function paramsPanel(params) {
  const rows = SHOWN_PARAMS.map((name) => {
    const value = params[name];
    const shown = Array.isArray(value) ? value.join(' ') : value;
    return `<tr data-param="${name}"><td>${name}</td><td>${
      shown ? `<span class="value">${esc(shown)}</span>` : '<span class="empty">—</span>'
    }</td></tr>`;
  }).join('');
  return `<details class="params" open><summary>Parameters received</summary><table>${rows}</table></details>`;
}

const DEMO_HINT = `<div class="hint">Demo users (password = username):
<code>alice</code> (admin, 2 orgs), <code>bob</code> (viewer, no picture),
<code>carol</code> (no roles), <code>many</code> (50 orgs).</div>`;

export function loginPage({ uid, params, error, notice, username }) {
  return layout('Sign in · Dev Logto', `
<h1>Sign in</h1>
<p class="sub">to continue to the application</p>
${notice ? `<p class="notice">${esc(notice)}</p>` : ''}
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" type="text" value="${esc(username)}" autofocus required>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button class="primary" type="submit">Sign in</button>
</form>
<div class="divider">or</div>
<a class="button kakao" href="/interaction/${esc(uid)}/kakao">Continue with Kakao</a>
<div class="links">No account? <a href="/interaction/${esc(uid)}/register">Create account</a></div>
${DEMO_HINT}
${paramsPanel(params)}`);
}

export function registerPage({ uid, params, error, username }) {
  return layout('Create account · Dev Logto', `
<h1>Create account</h1>
<p class="sub">The account lives in memory until the dev IdP stops.</p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/register" autocomplete="off">
<label for="username">Username</label>
<input id="username" name="username" type="text" value="${esc(username)}" autofocus required>
<label for="password">Password</label>
<input id="password" name="password" type="password" required>
<button class="primary" type="submit">Create account</button>
</form>
<div class="links">Have an account? <a href="/interaction/${esc(uid)}/login">Sign in</a></div>
${paramsPanel(params)}`);
}

export function kakaoPage({ uid, params }) {
  return layout('Kakao (stand-in) · Dev Logto', `
<h1>Kakao</h1>
<p class="sub">Stand-in for Kakao Login: continue as <b>Kakao User</b>.</p>
<form method="post" action="/interaction/${esc(uid)}/kakao">
<button class="kakao" type="submit">Continue</button>
</form>
<div class="links"><a href="/interaction/${esc(uid)}/login">Back to sign in</a></div>
${paramsPanel(params)}`);
}

export function errorPage(title, message) {
  return layout(`${title} · Dev Logto`, `<h1>${esc(title)}</h1><p class="sub">${esc(message)}</p>`);
}

/** Logto's sign-out page: submits itself, no click needed. */
export function logoutPage(form) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign Out</title></head>
<body onload="document.getElementById('op.logoutForm').submit();">
${form}
<input type="hidden" form="op.logoutForm" value="yes" name="logout">
<noscript><button type="submit" form="op.logoutForm">Sign out</button></noscript>
</body>
</html>`;
}

export function logoutSuccessPage() {
  return layout('Signed out · Dev Logto', '<h1>Signed out</h1><p class="sub">You have signed out of Dev Logto.</p>');
}

const AVATAR_COLORS = ['#5d34f2', '#0e9f6e', '#e0512d', '#1f7ae0', '#b5179e'];

export function avatarSvg(name) {
  const initial = (name[0] ?? '?').toUpperCase();
  const color = AVATAR_COLORS[[...name].reduce((a, c) => a + c.charCodeAt(0), 0) % AVATAR_COLORS.length];
  return `<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">
<rect width="96" height="96" rx="48" fill="${color}"/>
<text x="48" y="60" font-family="system-ui,sans-serif" font-size="42" font-weight="700" fill="#fff" text-anchor="middle">${esc(initial)}</text>
</svg>`;
}
