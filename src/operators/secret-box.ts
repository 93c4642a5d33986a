import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/** A key that is not 32 bytes, or a sealed secret that does not open: wrong key, wrong context, or altered. Never says more. */
export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

const encode = (bytes: Buffer) => bytes.toString('base64url');

// Buffer skips characters it does not know and the spare bits of the last one, so without this
// check an altered string could still open; only the one canonical spelling of the bytes is read.
function decode(part: string, bytes?: number): Buffer {
  const decoded = Buffer.from(part, 'base64url');
  if (encode(decoded) !== part || (bytes !== undefined && decoded.length !== bytes)) throw new SecretBoxError('not a sealed secret');
  return decoded;
}

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
  if (!/^(0x)?[0-9a-fA-F]{64}$/.test(keyHex)) throw new SecretBoxError('the secrets key must be 32 bytes as 64 hex digits');
  const key = Buffer.from(keyHex.replace(/^0x/, ''), 'hex');
  return {
    seal(plaintext: string, context: string): string {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(context, 'utf8'));
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return [VERSION, encode(iv), encode(ciphertext), encode(cipher.getAuthTag())].join('.');
    },
    open(sealed: string, context: string): string {
      const [version, iv, ciphertext, tag, ...rest] = sealed.split('.');
      if (version !== VERSION || iv === undefined || ciphertext === undefined || tag === undefined || rest.length > 0)
        throw new SecretBoxError('not a sealed secret');
      const decipher = createDecipheriv('aes-256-gcm', key, decode(iv, IV_BYTES), { authTagLength: TAG_BYTES });
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(decode(tag, TAG_BYTES));
      const body = decode(ciphertext);
      try {
        return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
      } catch {
        throw new SecretBoxError('the sealed secret does not open with this key and context');
      }
    },
  };
}

export type SecretBox = ReturnType<typeof secretBox>;
