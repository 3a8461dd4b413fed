// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice A mini-block header (EIP-712 struct `Header`, see docs/protocol.md).
struct Header {
    bytes32 streamId;
    uint64 number;
    bytes32 prevHash;
    bytes32 eventsRoot;
    uint32 eventCount;
    uint64 epoch;
    uint32 attempt;
    address leader;
    bytes32 randaoReveal;
    bytes32 stateRoot;
}

/// @notice A client event (EIP-712 struct `Event`, see docs/protocol.md).
struct Event {
    bytes32 streamId;
    address author;
    uint64 nonce;
    uint8 kind;
    bytes payload;
}

/// @title MiniblockTypes
/// @notice EIP-712 type hashes and struct hashes (`hashStruct`) of the protocol objects.
library MiniblockTypes {
    bytes32 internal constant EVENT_TYPEHASH =
        keccak256("Event(bytes32 streamId,address author,uint64 nonce,uint8 kind,bytes payload)");

    bytes32 internal constant HEADER_TYPEHASH = keccak256(
        "Header(bytes32 streamId,uint64 number,bytes32 prevHash,bytes32 eventsRoot,uint32 eventCount,uint64 epoch,uint32 attempt,address leader,bytes32 randaoReveal,bytes32 stateRoot)"
    );

    /// @dev hashStruct(Event).
    function hashEvent(Event memory e) internal pure returns (bytes32) {
        return keccak256(abi.encode(EVENT_TYPEHASH, e.streamId, e.author, e.nonce, e.kind, keccak256(e.payload)));
    }

    /// @dev hashStruct(Header) of a memory header (all ten fields are static words).
    function hashHeader(Header memory h) internal pure returns (bytes32 r) {
        bytes32 th = HEADER_TYPEHASH;
        assembly ("memory-safe") {
            let p := sub(h, 0x20)
            let saved := mload(p)
            mstore(p, th)
            r := keccak256(p, 0x160)
            mstore(p, saved)
        }
    }

    /// @dev hashStruct(Header) of a calldata header, hashed straight from calldata into scratch
    ///      memory past the free pointer (not allocated). The caller reads every narrow field of an
    ///      accepted header through Solidity, which reverts on dirty (non-canonical) encodings.
    function hashHeaderCalldata(Header calldata h) internal pure returns (bytes32 r) {
        bytes32 th = HEADER_TYPEHASH;
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore(p, th)
            calldatacopy(add(p, 0x20), h, 0x140)
            r := keccak256(p, 0x160)
        }
    }

    /// @dev The genesis header (block 0) of a stream created in `epoch`.
    function genesisHash(bytes32 streamId, uint64 epoch) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(HEADER_TYPEHASH, streamId, uint64(0), bytes32(0), bytes32(0), uint32(0), epoch, uint32(0), address(0), bytes32(0), bytes32(0))
        );
    }
}
