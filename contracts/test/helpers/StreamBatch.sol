// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IStreamCreator {
    function createStream(bytes32 streamId) external;
}

/// @dev Bench and test helper only (never deployed by a node or the devnet): creates many streams in one
///      transaction, so 100,000 registered streams take a few hundred transactions instead of 100,000.
///      Stream i's id is keccak256(abi.encode(tag, i)); the streams' creator is this contract.
contract StreamBatch {
    function create(IStreamCreator registry, bytes32 tag, uint256 from, uint256 to) external {
        for (uint256 i = from; i < to; ++i) {
            registry.createStream(keccak256(abi.encode(tag, i)));
        }
    }
}
