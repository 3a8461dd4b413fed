// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Merkle
/// @notice Positional binary Merkle tree of docs/protocol.md: leaf = keccak256(0x00 || e),
///         node = keccak256(0x01 || left || right), an odd last node is promoted unchanged,
///         root of one leaf is the leaf, root of none is bytes32(0).
library Merkle {
    /// @dev L(e) = keccak256(0x00 || e).
    function leafHash(bytes32 e) internal pure returns (bytes32 r) {
        assembly ("memory-safe") {
            mstore8(0x00, 0x00)
            mstore(0x01, e)
            r := keccak256(0x00, 0x21)
        }
    }

    /// @dev N(a, b) = keccak256(0x01 || a || b).
    function nodeHash(bytes32 a, bytes32 b) internal pure returns (bytes32 r) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x01)
            mstore(add(p, 0x01), a)
            mstore(add(p, 0x21), b)
            r := keccak256(p, 0x41)
        }
    }

    /// @dev Root over the ordered item hashes (leaf inputs).
    function root(bytes32[] memory items) internal pure returns (bytes32) {
        uint256 n = items.length;
        if (n == 0) return bytes32(0);
        bytes32[] memory level = new bytes32[](n);
        for (uint256 i; i < n; ++i) level[i] = leafHash(items[i]);
        unchecked {
            while (n > 1) {
                uint256 half = n >> 1;
                for (uint256 i; i < half; ++i) level[i] = nodeHash(level[2 * i], level[2 * i + 1]);
                if (n & 1 == 1) level[half] = level[n - 1];
                n = (n + 1) >> 1;
            }
        }
        return level[0];
    }

    /// @dev Proof for `index` (siblings bottom-up, promoted levels skipped). Reverts if index >= n.
    function proof(bytes32[] memory items, uint256 index) internal pure returns (bytes32[] memory out) {
        uint256 n = items.length;
        require(index < n, "Merkle: index");
        bytes32[] memory level = new bytes32[](n);
        for (uint256 i; i < n; ++i) level[i] = leafHash(items[i]);
        bytes32[] memory tmp = new bytes32[](256);
        uint256 p;
        unchecked {
            while (n > 1) {
                if (index & 1 == 1) tmp[p++] = level[index - 1];
                else if (index + 1 < n) tmp[p++] = level[index + 1];
                uint256 half = n >> 1;
                for (uint256 i; i < half; ++i) level[i] = nodeHash(level[2 * i], level[2 * i + 1]);
                if (n & 1 == 1) level[half] = level[n - 1];
                index >>= 1;
                n = (n + 1) >> 1;
            }
        }
        out = new bytes32[](p);
        for (uint256 i; i < p; ++i) out[i] = tmp[i];
    }

    /// @dev True iff `item` sits at `index` of a tree of `count` items with `root_`.
    function verify(bytes32 root_, uint256 count, uint256 index, bytes32 item, bytes32[] memory siblings)
        internal
        pure
        returns (bool)
    {
        if (index >= count) return false;
        bytes32 h = leafHash(item);
        uint256 p;
        uint256 len = siblings.length;
        unchecked {
            while (count > 1) {
                if (index & 1 == 1) {
                    if (p >= len) return false;
                    h = nodeHash(siblings[p++], h);
                } else if (index + 1 < count) {
                    if (p >= len) return false;
                    h = nodeHash(h, siblings[p++]);
                }
                index >>= 1;
                count = (count + 1) >> 1;
            }
        }
        return h == root_ && p == len;
    }
}
