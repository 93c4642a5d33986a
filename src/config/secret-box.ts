import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/** A sealed secret cannot be opened: wrong key, wrong context, or altered. Never says more. */
export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

const VERSION = 'v1';

/**
 * Seals short secrets (operators' upstream credentials) with AES-256-GCM under the key from
 * `TURNPIKE_SECRETS_KEY`. `context` is bound as associated data (the server's id), so a sealed
 * value copied onto another row does not open.
 *
 * @example
 * const box = secretBox(secrets.secretsKey);
 * const sealed = box.seal('sk-upstream', server.id); // v1.<iv>.<ciphertext>.<tag>
 * box.open(sealed, server.id); // 'sk-upstream'
 */
export function secretBox(keyHex: string) {
  const key = Buffer.from(keyHex.replace(/^0x/, ''), 'hex');
  if (key.length !== 32 || !/^(0x)?[0-9a-fA-F]{64}$/.test(keyHex)) throw new SecretBoxError('the secrets key must be 32 bytes as 64 hex digits');
  return {
    seal(plaintext: string, context: string): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return [VERSION, iv, ciphertext, cipher.getAuthTag()].map((p) => (typeof p === 'string' ? p : p.toString('base64url'))).join('.');
    },
    open(sealed: string, context: string): string {
      const [version, iv, ciphertext, tag, ...rest] = sealed.split('.');
      if (version !== VERSION || iv === undefined || ciphertext === undefined || tag === undefined || rest.length > 0) throw new SecretBoxError('not a sealed secret');
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'), { authTagLength: 16 });
        decipher.setAAD(Buffer.from(context, 'utf8'));
        decipher.setAuthTag(Buffer.from(tag, 'base64url'));
        return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8');
      } catch {
        throw new SecretBoxError('the sealed secret does not open with this key and context');
      }
    },
  };
}

export type SecretBox = ReturnType<typeof secretBox>;
