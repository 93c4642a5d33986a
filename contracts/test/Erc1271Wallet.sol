// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title A minimal ERC-1271 smart wallet, for tests only
/// @notice Approves a hash when its 65-byte signature is its owner's. Planted with setCode; the
/// owner is storage slot 0, written with setStorageAt. It lets tests pay from a contract account,
/// which the token then checks through ERC-1271 instead of ECDSA.
contract Erc1271Wallet {
    address public owner;

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return 0xffffffff;
        address signer = ecrecover(hash, uint8(signature[64]), bytes32(signature[0:32]), bytes32(signature[32:64]));
        return signer != address(0) && signer == owner ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}
