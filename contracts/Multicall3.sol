// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Multicall3-compatible batcher for turnpike's local Base sandbox
/// @notice Planted with `anvil_setCode` at 0xcA11bde05977b3631167028862bE2a173976CA11, where Base has
/// the canonical Multicall3, so viem's `multicall` batches reads against the sandbox as against Base.
/// It keeps Multicall3's ABI and revert message; it has no constructor and no immutables, because
/// only its runtime code is ever installed.
contract Multicall3 {
    struct Call {
        address target;
        bytes callData;
    }

    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Calls each target in order; reverts the whole batch if a call that may not fail does.
    function aggregate3(Call3[] calldata calls) public payable returns (Result[] memory returnData) {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool success, bytes memory data) = calls[i].target.call(calls[i].callData);
            if (!success && !calls[i].allowFailure) revert("Multicall3: call failed");
            returnData[i] = Result(success, data);
        }
    }

    /// @notice The original Multicall interface: every call must succeed.
    function aggregate(Call[] calldata calls) public payable returns (uint256 blockNumber, bytes[] memory returnData) {
        blockNumber = block.number;
        returnData = new bytes[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool success, bytes memory data) = calls[i].target.call(calls[i].callData);
            if (!success) revert("Multicall3: call failed");
            returnData[i] = data;
        }
    }

    function getBlockNumber() public view returns (uint256) {
        return block.number;
    }

    function getCurrentBlockTimestamp() public view returns (uint256) {
        return block.timestamp;
    }

    function getChainId() public view returns (uint256) {
        return block.chainid;
    }

    function getEthBalance(address account) public view returns (uint256) {
        return account.balance;
    }

    function getBasefee() public view returns (uint256) {
        return block.basefee;
    }
}
