import type { Context, Env } from 'hono';
import { z } from 'zod';
import { DomainError } from '../errors.js';
import { oauthIssuerSchema, oauthSubjectSchema } from '../oauth/settings.js';
import type { KeyRecord } from '../store/credits/credits.js';
import type { Store } from '../store/store.js';
import type { documented } from './documented.js';

/** An OAuth caller: the identity provider exactly as its tokens' `iss` says, and the token's `sub`. */
const subjectSchema = z.strictObject({
  issuer: oauthIssuerSchema,
  subject: oauthSubjectSchema,
});

export type SubjectRoutesOptions<E extends Env> = {
  store: Store;
  /** The key named by the path's `:id`, as this API's caller may see it (else the error that it is not theirs). */
  keyOf: (c: Context<E>) => Promise<KeyRecord>;
  /** The issuers the caller's servers name: a subject can be linked only for one of them. */
  issuers: (c: Context<E>) => Promise<string[]>;
  /** Whose servers those are, in an answer: `here` (the admin), `of yours` (an operator). */
  whose: string;
  /** Told each link and unlink made (the operator's audit log). */
  changed?: (
    c: Context<E>,
    action: 'subject.link' | 'subject.unlink',
    keyId: string,
    subject: z.output<typeof subjectSchema>,
  ) => Promise<void>;
};

/**
 * `POST|GET|DELETE <base>/keys/:id/subjects`: the OAuth subjects a key pays for, as the admin and
 * an operator both manage them. A link belongs to its key's owner (see `CreditsStore.linkSubject`):
 * an operator links only to their own keys, and their links pay only on their own servers.
 */
export function subjectRoutes<E extends Env>(api: ReturnType<typeof documented<E>>, options: SubjectRoutesOptions<E>) {
  const { store, keyOf, whose } = options;
  const linking = {
    summary: `link an OAuth subject to a key: its calls on OAuth servers ${whose} are charged to the key`,
    body: subjectSchema,
    status: 201,
  };
  api.post('/keys/:id/subjects', linking, async (c, { body }) => {
    const issuers = [...new Set(await options.issuers(c))];
    if (!issuers.includes(body.issuer)) {
      throw new DomainError(
        'issuer_unknown',
        `no server ${whose} takes tokens of ${body.issuer}; name it as a server's oauth.issuer first`,
        {
          issuers,
        },
      );
    }
    const key = await keyOf(c);
    if (key.status === 'revoked') throw new DomainError('key_already_revoked', 'a revoked key cannot pay for anyone');
    const result = await store.credits.linkSubject({ ...body, keyId: key.id });
    if (result.keyId !== key.id) {
      throw new DomainError('subject_linked', `this subject is linked to key ${result.keyId}; unlink it there first`, {
        keyId: result.keyId,
      });
    }
    if (result.linked) await options.changed?.(c, 'subject.link', key.id, body);
    return c.json({ ...body, keyId: key.id, linked: result.linked }, result.linked ? 201 : 200);
  });
  api.get('/keys/:id/subjects', { summary: 'the OAuth subjects a key pays for' }, async (c) => {
    const key = await keyOf(c);
    const subjects = await store.credits.subjects(key.id);
    return c.json({
      subjects: subjects.map((s) => ({ issuer: s.issuer, subject: s.subject, createdAt: new Date(s.createdAt!).toISOString() })),
    });
  });
  api.delete('/keys/:id/subjects', { summary: 'unlink an OAuth subject from a key', query: subjectSchema }, async (c, { query }) => {
    const key = await keyOf(c);
    if (!(await store.credits.unlinkSubject({ ...query, keyId: key.id }))) {
      throw new DomainError('subject_not_linked', `subject ${query.subject} of ${query.issuer} is not linked to key ${key.id}`);
    }
    await options.changed?.(c, 'subject.unlink', key.id, query);
    return c.json({ ...query, keyId: key.id, linked: false });
  });
}
