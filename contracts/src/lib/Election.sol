// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Election
/// @notice Leader election and replica selection rules of docs/protocol.md.
library Election {
    /// @dev base = uint256(keccak256(abi.encode(seed, streamId, number))) % r; position = (base + attempt) % r.
    function leaderPosition(bytes32 seed, bytes32 streamId, uint64 blockNumber, uint32 attempt, uint256 r)
        internal
        pure
        returns (uint256 pos)
    {
        bytes32 h;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, seed)
            mstore(add(p, 0x20), streamId)
            mstore(add(p, 0x40), blockNumber)
            h := keccak256(p, 0x60)
        }
        unchecked {
            pos = (uint256(h) % r + attempt) % r;
        }
    }

    /// @dev Seeded partial Fisher-Yates shuffle: picks `k` of `list` in place into list[0..k).
    ///      rnd = keccak256(abi.encode(seed, streamId)); for i < k:
    ///      j = i + uint256(keccak256(abi.encode(rnd, i))) % (n - i); swap(list[i], list[j]).
    function pick(uint256[] memory list, uint256 k, bytes32 seed, bytes32 streamId) internal pure {
        uint256 n = list.length;
        bytes32 rnd = keccak256(abi.encode(seed, streamId));
        unchecked {
            for (uint256 i; i < k; ++i) {
                uint256 j = i + uint256(keccak256(abi.encode(rnd, i))) % (n - i);
                (list[i], list[j]) = (list[j], list[i]);
            }
        }
    }
}
