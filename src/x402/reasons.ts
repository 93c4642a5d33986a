/**
 * Reason strings in verify and settle responses. Where the reference implementation has a string
 * for a failure, this is it (clients and dashboards already know them); turnpike's own checks
 * that the reference lacks get names in the same style.
 */
export const reasons = {
  invalidScheme: 'invalid_scheme',
  invalidNetwork: 'invalid_network',
  invalidPayload: 'invalid_payload',
  invalidVersion: 'invalid_x402_version',
  networkMismatch: 'invalid_exact_evm_network_mismatch',
  missingDomain: 'invalid_exact_evm_missing_eip712_domain',
  tokenNameMismatch: 'invalid_exact_evm_token_name_mismatch',
  tokenVersionMismatch: 'invalid_exact_evm_token_version_mismatch',
  assetNotAllowed: 'invalid_exact_evm_asset_not_allowed',
  assetMismatch: 'invalid_exact_evm_asset_mismatch',
  requirementsMismatch: 'invalid_exact_evm_requirements_mismatch',
  signature: 'invalid_exact_evm_signature',
  recipientMismatch: 'invalid_exact_evm_recipient_mismatch',
  validBefore: 'invalid_exact_evm_payload_authorization_valid_before',
  validAfter: 'invalid_exact_evm_payload_authorization_valid_after',
  validityTooLong: 'invalid_exact_evm_payload_authorization_validity_too_long',
  valueMismatch: 'invalid_exact_evm_payload_authorization_value_mismatch',
  /** The reference's string for a value it does not settle; here, zero (it moves nothing, and costs gas). */
  authorizationValue: 'invalid_exact_evm_authorization_value',
  /** Below the smallest payment this facilitator's API settles (`facilitator.minAmountUsd`). */
  amountBelowMinimum: 'invalid_exact_evm_amount_below_minimum',
  /** A payee this facilitator's API does not settle for (a gateway settles only its own). */
  recipientNotAllowed: 'invalid_exact_evm_recipient_not_allowed',
  nonceUsed: 'invalid_exact_evm_nonce_already_used',
  insufficientBalance: 'invalid_exact_evm_insufficient_balance',
  transactionFailed: 'invalid_exact_evm_transaction_failed',
  transferEventMismatch: 'invalid_exact_evm_transfer_event_mismatch',
  settlementPending: 'settlement_pending',
  /** The payer has deferred payments that were delivered and then failed on chain, not cleared yet. */
  unsettledLosses: 'payer_has_unsettled_losses',
  unexpectedVerify: 'unexpected_verify_error',
  unexpectedSettle: 'unexpected_settle_error',
} as const;

export type Reason = (typeof reasons)[keyof typeof reasons];

/**
 * The names x402 v1's reference (npm `x402` 0.x, `ErrorReasons`; its EVM facilitator's checks)
 * gives the same failures, for answers to a v1 payment: v1 clients and servers parse reasons
 * against that list. A reason it has no name for (`settlement_pending`, the retry handshake) keeps
 * turnpike's; the message still says exactly what happened.
 */
const v1Names: Partial<Record<Reason, string>> = {
  [reasons.invalidScheme]: 'unsupported_scheme',
  [reasons.networkMismatch]: 'invalid_network',
  [reasons.missingDomain]: 'invalid_payment_requirements',
  [reasons.tokenNameMismatch]: 'invalid_payment_requirements',
  [reasons.tokenVersionMismatch]: 'invalid_payment_requirements',
  [reasons.assetNotAllowed]: 'invalid_payment_requirements',
  [reasons.assetMismatch]: 'invalid_payment_requirements',
  [reasons.recipientNotAllowed]: 'invalid_payment_requirements',
  [reasons.signature]: 'invalid_exact_evm_payload_signature',
  [reasons.recipientMismatch]: 'invalid_exact_evm_payload_recipient_mismatch',
  [reasons.validityTooLong]: 'invalid_exact_evm_payload_authorization_valid_before',
  [reasons.valueMismatch]: 'invalid_exact_evm_payload_authorization_value',
  [reasons.authorizationValue]: 'invalid_exact_evm_payload_authorization_value',
  [reasons.amountBelowMinimum]: 'invalid_exact_evm_payload_authorization_value',
  [reasons.nonceUsed]: 'invalid_payment',
  [reasons.insufficientBalance]: 'insufficient_funds',
  [reasons.transactionFailed]: 'invalid_transaction_state',
  [reasons.transferEventMismatch]: 'invalid_transaction_state',
};

/**
 * A reason as the payment's protocol version names it: v2's as they are, v1's by its reference.
 *
 * @example reasonFor(1, reasons.valueMismatch) // 'invalid_exact_evm_payload_authorization_value'
 */
export function reasonFor(x402Version: 1 | 2, reason: string): string {
  return x402Version === 1 ? (v1Names[reason as Reason] ?? reason) : reason;
}
