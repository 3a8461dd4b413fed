// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Vm.sol";
import {RegistryV2Fixture} from "./utils/FixtureV2.sol";
import {MiniblockRegistryV2} from "../src/MiniblockRegistryV2.sol";

/// @dev Fuzz of the packed decoding: truncated, extended, byte-flipped batches and reordered or
///      duplicated signatures revert with a custom error or are rejected with a reason, never accepted.
contract PackedDecodingFuzzTest is RegistryV2Fixture {
    bytes32 internal S;
    Rec[] internal recs;
    bytes internal good;

    function setUp() public {
        _activeRegistry(5, 3);
        S = _sid(1);
        _createStream(S);
        _createStream(_sid(2));
        vm.warp(block.timestamp + 1);
    }

    function _goodBatch(uint256 total) internal view returns (Rec[] memory rs, bytes memory b) {
        rs = new Rec[](2);
        rs[0] = _next(S);
        rs[1] = _next(_sid(2));
        b = _build(rs, total);
    }

    /// @dev Either reverts, or commits nothing (every header rejected with a reason).
    function _neverAccepted(bytes memory b) internal {
        vm.recordLogs();
        (bool ok,) = address(reg).call(abi.encodeCall(MiniblockRegistryV2.commitMiniblocks, (b)));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        if (!ok) return;
        assertEq(_count(logs, MiniblockRegistryV2.MiniblocksCommitted.selector), 0, "accepted a broken batch");
        assertEq(_count(logs, MiniblockRegistryV2.MiniblockRejected.selector), 2, "each header rejected with a reason");
    }

    function testFuzz_truncated(uint256 cut) public {
        (, bytes memory b) = _goodBatch(2);
        uint256 len = bound(cut, 0, b.length - 1);
        bytes memory t = new bytes(len);
        for (uint256 i; i < len; ++i) t[i] = b[i];
        (bool ok, bytes memory err) = address(reg).call(abi.encodeCall(MiniblockRegistryV2.commitMiniblocks, (t)));
        assertFalse(ok, "truncated batch reverts");
        bytes4 sel = bytes4(err);
        assertTrue(
            sel == MiniblockRegistryV2.TruncatedBatch.selector || sel == MiniblockRegistryV2.BadBatchSize.selector,
            "with a decoding error"
        );
    }

    function testFuzz_extended(bytes memory extra) public {
        vm.assume(extra.length > 0 && extra.length < 400);
        (, bytes memory b) = _goodBatch(2);
        (bool ok, bytes memory err) =
            address(reg).call(abi.encodeCall(MiniblockRegistryV2.commitMiniblocks, (bytes.concat(b, extra))));
        assertFalse(ok, "extended batch reverts");
        assertTrue(bytes4(err) == MiniblockRegistryV2.TrailingBytes.selector, "TrailingBytes");
    }

    function testFuzz_flippedByte(uint256 at, uint8 x) public {
        vm.assume(x != 0);
        (, bytes memory b) = _goodBatch(2);
        uint256 i = bound(at, 0, b.length - 1);
        // the reveal table: a flipped, still-valid-looking reveal is rejected (13) or changes the hash (7)
        b[i] = bytes1(uint8(b[i]) ^ x);
        _neverAcceptedOrPartly(b, i);
    }

    /// @dev A flip inside one record can only break that record; a flip in the prefix, all.
    function _neverAcceptedOrPartly(bytes memory b, uint256 i) internal {
        vm.recordLogs();
        (bool ok,) = address(reg).call(abi.encodeCall(MiniblockRegistryV2.commitMiniblocks, (b)));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        if (!ok) return;
        uint256 rejected = _count(logs, MiniblockRegistryV2.MiniblockRejected.selector);
        assertGe(rejected, 1, "a flipped byte never goes unnoticed");
        i;
    }

    function testFuzz_reorderedOrDuplicatedSignatures(uint256 mode) public {
        Rec[] memory rs = new Rec[](2);
        rs[0] = _next(S);
        rs[1] = _next(_sid(2));
        bytes32[] memory reveals = _assignReveals(rs);
        for (uint256 k; k < 2; ++k) _signRec(rs[k], 3);
        uint256 m = mode % 4;
        for (uint256 k; k < 2; ++k) {
            bytes[] memory s = rs[k].sigs;
            if (m == 0) (s[0], s[1]) = (s[1], s[0]); // leader's and an attester's swapped
            else if (m == 1) (s[1], s[2]) = (s[2], s[1]); // attesters out of position order
            else if (m == 2) s[2] = s[1]; // an attestation duplicated
            else s[1] = s[0]; // the leader's signature reused as an attestation
        }
        _neverAccepted(_encode(rs, reveals));
    }

    /// @dev Any attester bitmap: accepted iff its bits are replicas other than the leader and with
    ///      the leader a majority; otherwise rejected with NotReplica, DuplicateAttester or NoQuorum.
    function testFuzz_attesterBitmap(uint16 bits) public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        address[] memory reps = reg.replicasOf(S);
        bytes32 d = reg.headerDigest(r.h);
        uint256 n;
        for (uint256 i; i < 16; ++i) if ((bits >> i) & 1 == 1) ++n;
        r.attesters = bits;
        r.sigs = new bytes[](1 + n);
        r.sigs[0] = _compact(pkOf[r.h.leader], d);
        uint256 c = 1;
        for (uint256 i; i < 16; ++i) {
            if ((bits >> i) & 1 == 0) continue;
            r.sigs[c++] = _compact(i < reps.length ? pkOf[reps[i]] : 0xBAD + i, d);
        }
        vm.recordLogs();
        reg.commitMiniblocks(_encode(rs, reveals));
        uint8[] memory rr = _reasons(vm.getRecordedLogs());
        uint8 want;
        if (bits >> reps.length != 0) want = 9;
        else if ((bits >> r.leaderPos) & 1 == 1) want = 10;
        else if (1 + n < reps.length / 2 + 1) want = 12;
        if (want == 0) {
            assertEq(rr.length, 0, "valid bitmap accepted");
        } else {
            assertEq(rr.length, 1, "rejected");
            assertEq(rr[0], want, "reason");
        }
    }

    function testFuzz_validBatchAccepted(uint256 total) public {
        total = bound(total, 2, 3);
        (Rec[] memory rs, bytes memory b) = _goodBatch(total);
        _commitOk(rs, b);
    }
}
