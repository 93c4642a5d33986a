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
  unexpectedVerify: 'unexpected_verify_error',
  unexpectedSettle: 'unexpected_settle_error',
} as const;

export type Reason = (typeof reasons)[keyof typeof reasons];
