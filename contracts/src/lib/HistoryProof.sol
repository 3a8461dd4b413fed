// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice A proof that a header was committed by one commit transaction of registry v2
///         (docs/protocol.md, "Version 2", "History proof").
/// @param commitIndex The commit transaction (`MiniblocksCommitted.commitIndex`).
/// @param position The header's position among the transaction's accepted headers.
/// @param headerHashes The transaction's accepted header hashes in batch order (its
///        `MiniblocksCommitted.headerHashes`): keccak256 of their concatenation is its history root.
/// @param prevAcc `historyAcc` before the transaction (0 for commit 0).
/// @param laterRoots The history roots of commits commitIndex+1, commitIndex+2, ... up to a
///        checkpoint (the last commit of a window of HISTORY_WINDOW) or the latest commit.
struct HistoryProof {
    uint64 commitIndex;
    uint32 position;
    bytes32[] headerHashes;
    bytes32 prevAcc;
    bytes32[] laterRoots;
}

/// @title History
/// @notice The history of registry v2: per commit transaction a root over its accepted header
///         hashes, `root = keccak256(h_0 ‖ ... ‖ h_{m-1})`; all roots folded into one accumulator
///         `acc = keccak256(acc ‖ root)`, whose value the registry keeps after the latest commit and
///         after each HISTORY_WINDOW-th commit (a checkpoint). A proof starts from a header (its
///         struct hash, a 352-byte preimage beginning with the type hash), so no root or
///         accumulator value can stand in for a header hash.
library History {
    /// @dev The accumulator after folding the root of `headerHashes` onto `prevAcc`, then each later root.
    function fold(bytes32 prevAcc, bytes32[] calldata headerHashes, bytes32[] calldata laterRoots)
        internal
        pure
        returns (bytes32 acc)
    {
        acc = step(prevAcc, root(headerHashes));
        for (uint256 i; i < laterRoots.length; ++i) acc = step(acc, laterRoots[i]);
    }

    /// @dev keccak256(h_0 ‖ ... ‖ h_{m-1}).
    function root(bytes32[] calldata headerHashes) internal pure returns (bytes32 r) {
        r = keccak256(abi.encodePacked(headerHashes));
    }

    /// @dev keccak256(acc ‖ root).
    function step(bytes32 acc, bytes32 root_) internal pure returns (bytes32 r) {
        assembly ("memory-safe") {
            mstore(0x00, acc)
            mstore(0x20, root_)
            r := keccak256(0x00, 0x40)
        }
    }
}
