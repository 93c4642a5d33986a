/**
 * What a payment is taken for. The journal keeps it with the authorization, and a payment buys
 * one thing: presented for anything else it is answered as used (`invalid_exact_evm_nonce_already_used`).
 *
 * @example
 * await facilitator.reserve(request, purposes.call('weather', callHash)); // the gateway's hold
 * await facilitator.settle(request, purposes.topup(payTo, `key:${keyId}`)); // POST /credits/topup
 */
export const purposes = {
  /** The public facilitator API (`POST /settle`): one success per authorization. */
  api: 'settle',
  /** One MCP tool call: the server's slug and the call's hash (tool and arguments). */
  call: (server: string, callHash: string) => `call:${server}:${callHash}`,
  /**
   * USDC bought as credits, paid to `payTo`, for `recipient`: the key it credits (`key:<id>`), or
   * the caller a new key is made for (`new:<digest>`, see `callerOf`). Its settlement publishes the
   * payment, so a copy presented for another recipient is a payment used, never their credit.
   */
  topup: (payTo: string, recipient: string) => `topup:${payTo.toLowerCase()}:${recipient}`,
} as const;
