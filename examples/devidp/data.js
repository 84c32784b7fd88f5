// The dev IdP's directory: demo users, organizations, roles and API resources,
// modelled on Logto's tenant data (users, roles with API permissions,
// organizations with organization roles and organization permissions).
import { createHash } from 'node:crypto';

const ALNUM = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * A Logto-looking id (12 lowercase alphanumerics) derived from a seed, so the
 * demo users and organizations keep the same ids across restarts and machines.
 */
export function logtoId(seed) {
  const digest = createHash('sha256').update(`devidp:${seed}`).digest();
  let id = '';
  for (let i = 0; i < 12; i += 1) id += ALNUM[digest[i] % ALNUM.length];
  return id;
}

export const ORGANIZATIONS_SCOPE = 'urn:logto:scope:organizations';
export const ORGANIZATION_ROLES_SCOPE = 'urn:logto:scope:organization_roles';
export const ORGANIZATION_RESOURCE = 'urn:logto:resource:organizations';
export const organizationUrn = (id) => `urn:logto:organization:${id}`;

/** API resources (Console → API resources) and their permissions. */
export const RESOURCES = {
  'https://api.example.com': ['read:docs', 'write:docs', 'delete:docs'],
  'https://billing.example.com': ['read:invoices'],
};

const deletedResources = new Map();

/**
 * Deletes an API resource, as in Console: the refresh grant then refuses its
 * indicator with invalid_target even for a sign-in that was granted it, and an
 * authorization request naming it goes back with error=invalid_target.
 */
export function deleteResource(indicator) {
  if (!RESOURCES[indicator]) return false;
  deletedResources.set(indicator, RESOURCES[indicator]);
  delete RESOURCES[indicator];
  return true;
}

/** Brings every deleted API resource back. */
export function restoreResources() {
  for (const [indicator, scopes] of deletedResources) RESOURCES[indicator] = scopes;
  deletedResources.clear();
}

/** Global (tenant) roles and the API permissions each grants. */
export const ROLES = {
  admin: {
    'https://api.example.com': ['read:docs', 'write:docs', 'delete:docs'],
    'https://billing.example.com': ['read:invoices'],
  },
  editor: { 'https://api.example.com': ['read:docs', 'write:docs'] },
  viewer: { 'https://api.example.com': ['read:docs'] },
};

/** Organization permissions (organization template scopes). */
export const ORGANIZATION_PERMISSIONS = ['manage:members', 'read:reports'];

/** Organization roles: organization permissions plus API permissions. */
export const ORGANIZATION_ROLES = {
  admin: {
    scopes: ['manage:members', 'read:reports'],
    resources: { 'https://api.example.com': ['read:docs', 'write:docs'] },
  },
  member: {
    scopes: ['read:reports'],
    resources: { 'https://api.example.com': ['read:docs'] },
  },
};

export const organizations = new Map();

function addOrganization(slug, name, description) {
  const id = logtoId(`org:${slug}`);
  organizations.set(id, { id, slug, name, description });
  return id;
}

export const ACME = addOrganization('acme', 'Acme Inc.', 'Demo organization: alice is admin, bob is member');
export const GLOBEX = addOrganization('globex', 'Globex Corporation', 'Demo organization: alice is member');
const MANY_ORGS = [];
for (let i = 1; i <= 50; i += 1) {
  const n = String(i).padStart(2, '0');
  MANY_ORGS.push(addOrganization(`org-${n}`, `org-${n}`, null));
}

// Fixed timestamps keep the demo users' claims stable (Logto sends ms epochs).
const CREATED = Date.UTC(2025, 0, 15, 9, 30);
const UPDATED = Date.UTC(2025, 5, 1, 12, 0);

export const users = new Map();

/**
 * Adds a user. `organizations` maps organization id → organization role
 * names. `picture` may be null, as in Logto.
 */
export function addUser({
  username,
  password = null,
  name = null,
  picture = null,
  email = null,
  phone = null,
  roles = [],
  organizations: orgs = {},
  customData = {},
  identities = {},
  createdAt = Date.now(),
  updatedAt = createdAt,
  id = logtoId(`user:${username}`),
}) {
  const user = {
    id, username, password, name, picture, email, phone, roles, organizations: orgs,
    customData, identities, createdAt, updatedAt,
  };
  users.set(id, user);
  return user;
}

/** The demo users; `base` is the IdP's public base URL (for avatar URLs). */
export function seedUsers(base) {
  addUser({
    username: 'alice',
    password: 'alice',
    name: 'Alice Park',
    picture: `${base}/avatars/alice.svg`,
    email: 'alice@example.com',
    phone: '+15555550100',
    roles: ['admin'],
    organizations: { [ACME]: ['admin'], [GLOBEX]: ['member'] },
    customData: { plan: 'pro' },
    createdAt: CREATED,
    updatedAt: UPDATED,
  });
  addUser({
    username: 'bob',
    password: 'bob',
    name: 'Bob Lee',
    picture: null,
    email: 'bob@example.com',
    roles: ['viewer'],
    organizations: { [ACME]: ['member'] },
    createdAt: CREATED,
    updatedAt: UPDATED,
  });
  addUser({
    username: 'carol',
    password: 'carol',
    name: 'Carol Diaz',
    picture: `${base}/avatars/carol.svg`,
    email: 'carol@example.com',
    createdAt: CREATED,
    updatedAt: UPDATED,
  });
  addUser({
    username: 'many',
    password: 'many',
    name: 'Many Orgs',
    picture: `${base}/avatars/many.svg`,
    email: 'many@example.com',
    organizations: Object.fromEntries(MANY_ORGS.map((id) => [id, ['member']])),
    createdAt: CREATED,
    updatedAt: UPDATED,
  });
  // Signs in only through the stand-in Kakao page (no password). Social
  // users in Logto often have no username; this one keeps one so tests can
  // find it in /__dev/users.
  addUser({
    username: 'kakao_user',
    name: 'Kakao User',
    picture: `${base}/avatars/kakao.svg`,
    identities: { kakao: { userId: '3141592653', details: { id: '3141592653', name: 'Kakao User' } } },
    createdAt: CREATED,
    updatedAt: UPDATED,
  });
}

export const KAKAO_USER_ID = logtoId('user:kakao_user');

export function findUserByUsername(username) {
  for (const user of users.values()) {
    if (user.username && user.username === username) return user;
  }
  return undefined;
}

export function isMember(userId, organizationId) {
  const user = users.get(userId);
  return Boolean(user && Object.hasOwn(user.organizations, organizationId));
}

/** Organization permissions the user holds in one organization. */
export function organizationPermissions(userId, organizationId) {
  const user = users.get(userId);
  const roleNames = user?.organizations[organizationId] ?? [];
  const scopes = new Set();
  for (const role of roleNames) {
    for (const scope of ORGANIZATION_ROLES[role]?.scopes ?? []) scopes.add(scope);
  }
  return ORGANIZATION_PERMISSIONS.filter((scope) => scopes.has(scope));
}

/**
 * API permissions of a user for a resource, as Logto computes them: from the
 * user's roles plus the organization roles (in every organization, or only in
 * `organizationId` when given).
 */
export function resourcePermissions(userId, indicator, organizationId) {
  const user = users.get(userId);
  if (!user) return [];
  const scopes = new Set();
  for (const role of user.roles) {
    for (const scope of ROLES[role]?.[indicator] ?? []) scopes.add(scope);
  }
  const orgIds = organizationId ? [organizationId] : Object.keys(user.organizations);
  for (const orgId of orgIds) {
    for (const role of user.organizations[orgId] ?? []) {
      for (const scope of ORGANIZATION_ROLES[role]?.resources[indicator] ?? []) scopes.add(scope);
    }
  }
  return (RESOURCES[indicator] ?? []).filter((scope) => scopes.has(scope));
}

/** Claims by name, as Logto's getUserClaimsData fills them. */
export function userClaim(user, claim) {
  switch (claim) {
    case 'name': return user.name;
    case 'picture': return user.picture;
    case 'username': return user.username;
    case 'created_at': return user.createdAt;
    case 'updated_at': return user.updatedAt;
    case 'email': return user.email;
    case 'email_verified': return Boolean(user.email);
    case 'phone_number': return user.phone;
    case 'phone_number_verified': return Boolean(user.phone);
    case 'custom_data': return user.customData;
    case 'identities': return user.identities;
    case 'sso_identities': return [];
    case 'roles': return [...user.roles];
    case 'organizations': return Object.keys(user.organizations);
    case 'organization_roles':
      return Object.entries(user.organizations).flatMap(([id, roles]) => roles.map((r) => `${id}:${r}`));
    case 'organization_data':
      return Object.keys(user.organizations).map((id) => {
        const { name, description } = organizations.get(id) ?? {};
        return { id, name: name ?? null, description: description ?? null };
      });
    default: return undefined;
  }
}

export function publicUser(user) {
  const { password, ...rest } = user;
  return { ...rest, hasPassword: Boolean(password) };
}
