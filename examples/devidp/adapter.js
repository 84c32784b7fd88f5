// In-memory storage for oidc-provider models, with Logto's refresh-token
// reuse grace: Logto's adapter reports a consumed RefreshToken as consumed
// only 3 s after it was consumed, so a rotated token presented again inside
// that window still works (and rotates again); after it, oidc-provider sees a
// reused token and revokes the whole grant.
//
// Clients: Logto's adapter throws `invalid client <id>` for an unknown
// application id (packages/core/src/oidc/adapter.ts), so an unknown client_id
// gets 400 invalid_client "invalid client <id>" at the token endpoint and at
// /oidc/auth, where node-oidc-provider alone would say "client authentication
// failed" (401) or "client is invalid".
import { errors } from 'oidc-provider';

export const REFRESH_TOKEN_REUSE_GRACE_MS = 3000;

export class Store {
  constructor() {
    /** @type {Map<string, Map<string, {payload: object, expiresAt?: number, consumedAt?: number}>>} */
    this.models = new Map();
    /** Called with every change ({op: set|consume|del|revoke, …}) when DEVIDP_STORE is set. */
    this.journal = undefined;
  }

  // Every change goes through these four, so it can be journaled (persist.js).

  set(name, id, entry) {
    this.model(name).set(id, entry);
    this.journal?.({ op: 'set', m: name, id, e: entry });
  }

  consume(name, id, at = Date.now()) {
    const entry = this.model(name).get(id);
    if (!entry) return;
    entry.consumedAt = at;
    this.journal?.({ op: 'consume', m: name, id, at });
  }

  delete(name, id) {
    if (this.model(name).delete(id)) this.journal?.({ op: 'del', m: name, id });
  }

  revokeByGrantId(name, grantId) {
    const map = this.model(name);
    let revoked = 0;
    for (const [id, entry] of map) {
      if (entry.payload.grantId === grantId) {
        map.delete(id);
        revoked += 1;
      }
    }
    if (revoked) this.journal?.({ op: 'revoke', m: name, grant: grantId });
  }

  /** When a stored entry was consumed (a refresh token rotated), or undefined. */
  consumedAt(name, id) {
    return this.model(name).get(id)?.consumedAt;
  }

  /** Puts back the models of a saved store, dropping what has expired. */
  restore(models) {
    const now = Date.now();
    for (const [name, entries] of Object.entries(models)) {
      const map = this.model(name);
      for (const [id, entry] of Object.entries(entries)) {
        if (entry.expiresAt !== undefined && entry.expiresAt <= now) continue;
        map.set(id, entry);
      }
    }
  }

  /** The live entries of every model, for a snapshot. */
  dump() {
    const now = Date.now();
    const out = {};
    for (const [name, map] of this.models) {
      const entries = {};
      for (const [id, entry] of map) {
        if (entry.expiresAt !== undefined && entry.expiresAt <= now) continue;
        entries[id] = entry;
      }
      out[name] = entries;
    }
    return out;
  }

  model(name) {
    let map = this.models.get(name);
    if (!map) {
      map = new Map();
      this.models.set(name, map);
    }
    return map;
  }

  /** Live (unexpired) payloads of a model. */
  *entries(name) {
    const now = Date.now();
    for (const [id, entry] of this.model(name)) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) continue;
      yield [id, entry.payload];
    }
  }

  sweep() {
    const now = Date.now();
    for (const map of this.models.values()) {
      for (const [id, entry] of map) {
        if (entry.expiresAt !== undefined && entry.expiresAt <= now) map.delete(id);
      }
    }
  }
}

export function adapterFor(store) {
  return class MemoryAdapter {
    constructor(name) {
      this.name = name;
      this.map = store.model(name);
    }

    async upsert(id, payload, expiresIn) {
      const previous = this.map.get(id);
      store.set(this.name, id, {
        payload: structuredClone(payload),
        expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
        consumedAt: previous?.consumedAt,
      });
    }

    #load(id) {
      const entry = this.map.get(id);
      if (!entry) return undefined;
      if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
        this.map.delete(id); // expired: a restart drops it too, no need to journal
        return undefined;
      }
      const payload = structuredClone(entry.payload);
      if (entry.consumedAt !== undefined) {
        const graceOver = entry.consumedAt + REFRESH_TOKEN_REUSE_GRACE_MS <= Date.now();
        if (this.name !== 'RefreshToken' || graceOver) {
          payload.consumed = Math.floor(entry.consumedAt / 1000);
        }
      }
      return payload;
    }

    async find(id) {
      const payload = this.#load(id);
      if (!payload && this.name === 'Client') throw new errors.InvalidClient(`invalid client ${id}`);
      return payload;
    }

    async findByUid(uid) {
      for (const [id, entry] of this.map) {
        if (entry.payload.uid === uid) return this.#load(id);
      }
      return undefined;
    }

    async findByUserCode(userCode) {
      for (const [id, entry] of this.map) {
        if (entry.payload.userCode === userCode) return this.#load(id);
      }
      return undefined;
    }

    async consume(id) {
      store.consume(this.name, id);
    }

    async destroy(id) {
      store.delete(this.name, id);
    }

    async revokeByGrantId(grantId) {
      store.revokeByGrantId(this.name, grantId);
    }
  };
}
