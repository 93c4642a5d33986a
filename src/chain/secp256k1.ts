import { createRequire } from 'node:module';

type NativeSecp256k1 = {
  ecdsaRecover(signature: Uint8Array, recid: number, message: Uint8Array, compressed: boolean): Uint8Array;
  ecdsaSign(message: Uint8Array, privateKey: Uint8Array): { signature: Uint8Array; recid: number };
};

/**
 * libsecp256k1 through the `secp256k1` package's prebuilt addon, ~25× faster than pure-JS
 * secp256k1, which is otherwise most of the CPU of a verify (recovery) and of a settle (signing
 * the transaction). Optional: without the addon (another platform, a failed install) callers use
 * viem's pure-JS implementation and get the same answers.
 */
export const nativeSecp256k1: NativeSecp256k1 | undefined = (() => {
  try {
    return createRequire(import.meta.url)('secp256k1/bindings') as NativeSecp256k1;
  } catch {
    return undefined;
  }
})();

/** Which implementation this process uses (reported by the benchmark). */
export const secp256k1Backend = nativeSecp256k1 ? 'libsecp256k1 (native addon)' : 'noble (pure JS)';
