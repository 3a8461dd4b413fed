// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Merkle} from "./Merkle.sol";

/// @notice A proof that a header sits in the history tree of one commit transaction.
/// @param commitIndex Index of the commit transaction (`historyRoot(commitIndex)`).
/// @param leafIndex Position of the header among the transaction's accepted headers.
/// @param leafCount Number of headers the transaction accepted.
/// @param siblings Merkle siblings bottom-up (docs/protocol.md, "Merkle tree", promoted levels skipped).
struct HistoryProof {
    uint64 commitIndex;
    uint32 leafIndex;
    uint32 leafCount;
    bytes32[] siblings;
}

/// @title History
/// @notice The per-transaction history tree of registry v2 (docs/protocol.md, "Version 2"): one leaf
///         per accepted header, `leaf = keccak256(streamId ‖ uint64 number ‖ headerHash)` (72 bytes,
///         so never equal to an inner node's 65-byte preimage `0x01 ‖ a ‖ b`), inner nodes and odd
///         promotion as in the events tree.
library History {
    /// @dev keccak256(abi.encodePacked(streamId, number, headerHash)).
    function leaf(bytes32 streamId, uint64 num, bytes32 headerHash) internal pure returns (bytes32 r) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, streamId)
            mstore(add(p, 0x20), shl(192, num))
            mstore(add(p, 0x28), headerHash)
            r := keccak256(p, 0x48)
        }
    }

    /// @dev Folds `proof.siblings` from `leaf_` up; true iff it ends at `root` using every sibling.
    ///      Membership is sound for any claimed leafCount (leaves and nodes have preimages of
    ///      different lengths); leafCount only fixes the path shape.
    function verify(bytes32 root, bytes32 leaf_, HistoryProof calldata proof) internal pure returns (bool) {
        if (root == bytes32(0)) return false;
        uint256 count = proof.leafCount;
        uint256 index = proof.leafIndex;
        if (index >= count) return false;
        bytes32 h = leaf_;
        uint256 p;
        bytes32[] calldata s = proof.siblings;
        uint256 len = s.length;
        unchecked {
            while (count > 1) {
                if (index & 1 == 1) {
                    if (p >= len) return false;
                    h = Merkle.nodeHash(s[p++], h);
                } else if (index + 1 < count) {
                    if (p >= len) return false;
                    h = Merkle.nodeHash(h, s[p++]);
                }
                index >>= 1;
                count = (count + 1) >> 1;
            }
        }
        return h == root && p == len;
    }

    /// @dev Root over `n` leaf words at memory `ptr`, computed in place (the words are overwritten).
    function rootInPlace(uint256 ptr, uint256 n) internal pure returns (bytes32 r) {
        assembly ("memory-safe") {
            let scratch := mload(0x40)
            mstore8(scratch, 0x01)
            for {} gt(n, 1) {} {
                let half := shr(1, n)
                for { let i := 0 } lt(i, half) { i := add(i, 1) } {
                    let a := add(ptr, shl(6, i))
                    mstore(add(scratch, 0x01), mload(a))
                    mstore(add(scratch, 0x21), mload(add(a, 0x20)))
                    mstore(add(ptr, shl(5, i)), keccak256(scratch, 0x41))
                }
                if and(n, 1) { mstore(add(ptr, shl(5, half)), mload(add(ptr, shl(5, sub(n, 1))))) }
                n := shr(1, add(n, 1))
            }
            r := mload(ptr)
        }
    }
}
