import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { SecretBoxError, secretBox } from '../../src/operators/secret-box.js';

const keyHex = randomBytes(32).toString('hex');
const box = secretBox(keyHex);
const SECRET = 'sk-upstream-0123456789';
const CONTEXT = 'srv_01H000000000000000000000';

/** Opening must fail with a SecretBoxError whose message gives away neither the secret nor the key. */
function refuses(open: () => unknown, label: string) {
  assert.throws(
    open,
    (error: unknown) => {
      assert.ok(error instanceof SecretBoxError, `${label}: ${String(error)}`);
      assert.ok(
        !error.message.includes(SECRET) && !error.message.toLowerCase().includes(keyHex),
        `${label}: message leaks: ${error.message}`,
      );
      return true;
    },
    label,
  );
}

test('round trip, including empty, non-ASCII and long secrets', () => {
  for (const plaintext of ['', SECRET, 'pässwörd 🔑 秘密', 'x'.repeat(8192)]) {
    const sealed = box.seal(plaintext, CONTEXT);
    assert.match(sealed, /^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{22}$/);
    assert.ok(!sealed.includes(SECRET));
    assert.equal(box.open(sealed, CONTEXT), plaintext);
  }
});

test('every seal draws a fresh IV, so sealing the same secret twice gives different strings', () => {
  const seals = new Set(Array.from({ length: 50 }, () => box.seal(SECRET, CONTEXT)));
  assert.equal(seals.size, 50);
  assert.equal(new Set([...seals].map((s) => s.split('.')[1])).size, 50);
});

test('a wrong key does not open it', () => {
  const sealed = box.seal(SECRET, CONTEXT);
  refuses(() => secretBox(randomBytes(32).toString('hex')).open(sealed, CONTEXT), 'other key');
  const oneBitOff = (parseInt(keyHex[0]!, 16) ^ 1).toString(16) + keyHex.slice(1);
  refuses(() => secretBox(oneBitOff).open(sealed, CONTEXT), 'key one bit off');
});

test('the context is bound: a value copied to another row does not open', () => {
  const sealed = box.seal(SECRET, CONTEXT);
  for (const other of ['', 'srv_01H000000000000000000001', `${CONTEXT} `, CONTEXT.toUpperCase()])
    refuses(() => box.open(sealed, other), `context ${JSON.stringify(other)}`);
  assert.equal(box.open(box.seal(SECRET, ''), ''), SECRET);
});

test('changing any byte of the IV, ciphertext or tag makes it refuse', () => {
  const sealed = box.seal(SECRET, CONTEXT);
  const parts = sealed.split('.');
  for (const index of [1, 2, 3]) {
    const bytes = Buffer.from(parts[index]!, 'base64url');
    for (let at = 0; at < bytes.length; at += 1) {
      for (const flip of [0x01, 0x80]) {
        const altered = Buffer.from(bytes);
        altered[at]! ^= flip;
        const tampered = parts.with(index, altered.toString('base64url')).join('.');
        refuses(() => box.open(tampered, CONTEXT), `part ${index} byte ${at} ^ ${flip}`);
      }
    }
  }
});

test('changing any character of the string makes it refuse, spare bits of the last base64 character included', () => {
  const sealed = box.seal(SECRET, CONTEXT);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ';
  let tried = 0;
  for (let at = 0; at < sealed.length; at += 1) {
    for (const c of alphabet) {
      if (c === sealed[at]) continue;
      refuses(() => box.open(sealed.slice(0, at) + c + sealed.slice(at + 1), CONTEXT), `char ${at} -> ${c}`);
      tried += 1;
    }
  }
  assert.ok(tried > 4000);
});

test('garbage and other formats are refused', () => {
  const [, iv, ciphertext, tag] = box.seal(SECRET, CONTEXT).split('.') as [string, string, string, string];
  const garbage = [
    '',
    'v1',
    'v1...',
    `v2.${iv}.${ciphertext}.${tag}`,
    `V1.${iv}.${ciphertext}.${tag}`,
    `${iv}.${ciphertext}.${tag}`,
    `v1.${iv}.${ciphertext}`,
    `v1.${iv}.${ciphertext}.${tag}.`,
    `v1.${iv}.${ciphertext}.${tag}.${tag}`,
    `v1.${iv}.${ciphertext}.${tag.slice(0, -2)}`,
    `v1.${iv}AAAA.${ciphertext}.${tag}`,
    `v1.${iv.slice(0, -4)}.${ciphertext}.${tag}`,
    `v1.${iv}.${ciphertext}.${tag}==`,
    ` v1.${iv}.${ciphertext}.${tag}`,
    `v1.${iv}.${ciphertext}.${tag}\n`,
    `v1.${iv}..${tag}`,
    `v1.${iv}.${ciphertext}${ciphertext}.${tag}`,
    SECRET,
  ];
  for (const sealed of garbage) refuses(() => box.open(sealed, CONTEXT), JSON.stringify(sealed));
});

test('the key is 64 hex digits, with or without 0x, in either case', () => {
  const sealed = secretBox(`0x${keyHex}`).seal(SECRET, CONTEXT);
  assert.equal(box.open(sealed, CONTEXT), SECRET);
  assert.equal(secretBox(keyHex.toUpperCase()).open(box.seal(SECRET, CONTEXT), CONTEXT), SECRET);
  for (const bad of [
    '',
    '0x',
    keyHex.slice(0, 62),
    `${keyHex}00`,
    `0x${keyHex.slice(0, 63)}`,
    `${keyHex.slice(0, 63)}g`,
    ` ${keyHex}`,
    `0X${keyHex}`,
  ]) {
    assert.throws(
      () => secretBox(bad),
      (error: unknown) =>
        error instanceof SecretBoxError && /32 bytes/.test(error.message) && (bad === '' || !error.message.includes(bad.trim())),
      `key ${JSON.stringify(bad)}`,
    );
  }
});
