// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Vm.sol";
import {RegistryV2Fixture} from "./utils/FixtureV2.sol";
import {MiniblockRegistryV2} from "../src/MiniblockRegistryV2.sol";
import {Header} from "../src/lib/MiniblockTypes.sol";
import {Merkle} from "../src/lib/Merkle.sol";
import {History, HistoryProof} from "../src/lib/HistoryProof.sol";

/// @dev Registry v2: acceptance, every rejection reason, malformed batches, history proofs.
contract MiniblockRegistryV2Test is RegistryV2Fixture {
    bytes32 internal S;

    function setUp() public {
        _activeRegistry(5, 3);
        S = _sid(1);
        _createStream(S);
        _createStream(_sid(2));
        vm.warp(block.timestamp + 1);
    }

    /// @dev Commits one record (signed with `total` signatures unless pre-signed) and returns the logs.
    function _try(Rec memory r, bytes memory batch) internal returns (Vm.Log[] memory logs) {
        r;
        vm.recordLogs();
        reg.commitMiniblocks(batch);
        logs = vm.getRecordedLogs();
    }

    function _expectReason(Rec memory r, bytes memory batch, uint8 reason) internal {
        (uint64 n0, bytes20 p0, uint64 t0) = reg.streamHead(r.h.streamId);
        bytes32 mix0 = reg.randaoMix();
        uint64 c0 = reg.commitCount();
        Vm.Log[] memory logs = _try(r, batch);
        uint8[] memory rr = _reasons(logs);
        assertEq(rr.length, 1, "one rejection");
        assertEq(rr[0], reason, "reason");
        assertEq(_count(logs, MiniblockRegistryV2.MiniblocksCommitted.selector), 0, "nothing committed");
        (uint64 n1, bytes20 p1, uint64 t1) = reg.streamHead(r.h.streamId);
        assertTrue(n0 == n1 && p0 == p1 && t0 == t1, "head unchanged");
        assertEq(reg.randaoMix(), mix0, "mix unchanged");
        assertEq(reg.commitCount(), c0, "no history entry");
    }

    function _signed(Rec memory r, uint256 total) internal view returns (bytes memory) {
        Rec[] memory rs = _one(r);
        return _build(rs, total);
    }

    function test_commit_accepted_historyProof_andInclusion() public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes memory b = _build(rs, 2);
        _commitOk(rs, b);
        bytes32 hh = reg.hashHeader(rs[0].h);
        (uint64 num, bytes20 prefix,) = reg.streamHead(S);
        assertEq(num, 1, "head number");
        assertTrue(prefix == bytes20(hh), "head prefix");
        assertTrue(reg.isHead(S, 1, hh), "isHead");
        assertEq(reg.randaoCommitOf(rs[0].h.leader), _top192(rs[0].h.randaoReveal), "reveal stored");
        assertEq(reg.commitCount(), 1, "one commit");
        HistoryProof memory hp = _historyProof(0, 0);
        Header memory h = rs[0].h;
        assertTrue(reg.verifyHeaderCommitted(h, hp), "committed");
        h.number = 2;
        assertFalse(reg.verifyHeaderCommitted(h, hp), "wrong number");
        h.number = 1;
        h.streamId = _sid(2);
        assertFalse(reg.verifyHeaderCommitted(h, hp), "wrong stream");
        h.streamId = S;
        h.stateRoot = keccak256("x");
        assertFalse(reg.verifyHeaderCommitted(h, hp), "other header");
        h.stateRoot = rs[0].h.stateRoot;
        hp.commitIndex = 1;
        assertFalse(reg.verifyHeaderCommitted(h, hp), "no such commit");
        hp.commitIndex = 0;
        hp.position = 1;
        assertFalse(reg.verifyHeaderCommitted(h, hp), "no such position");
        hp.position = 0;
        hp.prevAcc = keccak256("other");
        assertFalse(reg.verifyHeaderCommitted(h, hp), "wrong prevAcc");
        hp.prevAcc = 0;
        // a forged hash list with the same first hash does not fold to the accumulator
        bytes32[] memory forged = new bytes32[](2);
        forged[0] = hh;
        forged[1] = keccak256("forged");
        hp.headerHashes = forged;
        assertFalse(reg.verifyHeaderCommitted(h, hp), "forged list");
    }

    function test_commit_batchOfTwoStreams_andChain_historyProofs() public {
        Rec[] memory rs = new Rec[](3);
        rs[0] = _next(S);
        rs[1] = _next(_sid(2));
        rs[2] = _rec(S, 2, bytes32(0), 0);
        // the reveals must be set before hashing the parent
        bytes32[] memory reveals = _assignReveals(rs);
        rs[2].h.prevHash = reg.hashHeader(rs[0].h);
        for (uint256 i; i < 3; ++i) _signRec(rs[i], 3);
        bytes memory b = _encode(rs, reveals);
        _commitOk(rs, b);
        (uint64 num,,) = reg.streamHead(S);
        assertEq(num, 2, "two blocks of S");
        for (uint256 i; i < 3; ++i) {
            HistoryProof memory hp = _historyProof(0, i);
            assertTrue(reg.verifyHeaderCommitted(rs[i].h, hp), "proof");
        }
    }

    /// @dev Proofs stay valid across windows: to the latest commit while the window is open, to the
    ///      window's checkpoint once it closes.
    function test_historyProofs_acrossWindows() public {
        uint256 w = reg.HISTORY_WINDOW();
        Header[] memory hs = new Header[](2 * w + 3);
        for (uint256 c; c < hs.length; ++c) {
            Rec[] memory rs = _one(_next(c % 2 == 0 ? S : _sid(2)));
            _commitOk(rs, _build(rs, 2));
            hs[c] = rs[0].h;
            // the newest commit is provable at once, against historyAcc
            assertTrue(reg.verifyHeaderCommitted(hs[c], _historyProof(c, 0)), "latest");
        }
        assertEq(reg.commitCount(), hs.length, "commit count");
        for (uint256 c; c < hs.length; ++c) {
            HistoryProof memory hp = _historyProof(c, 0);
            assertTrue(reg.verifyHeaderCommitted(hs[c], hp), "old commit");
            if (hp.laterRoots.length > 0) {
                // one later root short: ends neither at a checkpoint nor at the latest commit
                bytes32[] memory shorter = new bytes32[](hp.laterRoots.length - 1);
                for (uint256 i; i < shorter.length; ++i) shorter[i] = hp.laterRoots[i];
                hp.laterRoots = shorter;
                if ((c + shorter.length) % w != w - 1) assertFalse(reg.verifyHeaderCommitted(hs[c], hp), "short");
            }
        }
        assertTrue(reg.historyCheckpoint(0) != 0 && reg.historyCheckpoint(1) != 0, "two checkpoints");
        assertEq(reg.historyCheckpoint(2), 0, "third window open");
    }

    function test_verifyInclusion() public {
        bytes32[] memory evs = new bytes32[](5);
        for (uint256 i; i < 5; ++i) evs[i] = keccak256(abi.encode("ev", i));
        Rec memory r = _next(S);
        r.h.eventsRoot = Merkle.root(evs);
        r.h.eventCount = 5;
        Rec[] memory rs = _one(r);
        _commitOk(rs, _build(rs, 2));
        HistoryProof memory hp = _historyProof(0, 0);
        for (uint256 i; i < 5; ++i) {
            assertTrue(reg.verifyInclusion(rs[0].h, hp, Merkle.proof(evs, i), i, evs[i]), "included");
        }
        assertFalse(reg.verifyInclusion(rs[0].h, hp, Merkle.proof(evs, 1), 1, evs[2]), "wrong event");
        assertFalse(reg.verifyInclusion(rs[0].h, hp, Merkle.proof(evs, 1), 5, evs[1]), "index past eventCount");
        Header memory other = rs[0].h;
        other.stateRoot = keccak256("other");
        assertFalse(reg.verifyInclusion(other, hp, Merkle.proof(evs, 1), 1, evs[1]), "uncommitted header");
    }

    function test_reject_1_unknownStream() public {
        Rec memory r = _next(S);
        r.h.streamId = keccak256("nope");
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        rs[0].sigs = new bytes[](2);
        rs[0].sigs[0] = _compact(pkOf[r.h.leader], reg.headerDigest(r.h));
        rs[0].sigs[1] = rs[0].sigs[0];
        rs[0].attesters = 1;
        bytes memory b = _encode(rs, reveals);
        Vm.Log[] memory logs = _try(r, b);
        assertEq(_reasons(logs)[0], 1, "unknown stream");
    }

    function test_reject_2_badNumber() public {
        Rec memory r = _next(S);
        r.h.number = 2;
        _expectReason(r, _signed(r, 2), 2);
    }

    function test_reject_3_badParent() public {
        Rec memory r = _next(S);
        r.h.prevHash = keccak256("stale");
        _expectReason(r, _signed(r, 2), 3);
    }

    /// @dev The parent rule of v2: prevHash[0:18] is taken from the head slot, prevHash[18:32] is
    ///      sent and its bytes 18..19 must equal the slot's (reason 3); so the top 160 bits are
    ///      checked, and the low 96 are bound by the signatures only (docs/protocol.md, soundness).
    function test_parent_prefixRule() public {
        Rec memory r = _next(S);
        bytes32 good = r.h.prevHash;
        // bytes 18..19 differ: BadParent
        r.h.prevHash = good ^ bytes32(uint256(1) << 96);
        _expectReason(r, _signed(r, 2), 3);
        // a bit of bytes 0..17 differs: the contract hashes the stored prefix, the signatures do not match
        r.h.prevHash = good ^ bytes32(uint256(1) << 255);
        _expectReason(r, _signed(r, 2), 7);
        // only the low 96 bits differ: signed by the leader and a majority, accepted
        r.h.prevHash = good ^ bytes32(uint256(1));
        Rec[] memory rs = _one(r);
        bytes memory b = _build(rs, 2);
        vm.recordLogs();
        reg.commitMiniblocks(b);
        assertEq(_reasons(vm.getRecordedLogs()).length, 0, "low 96 bits: bound by the signatures only");
    }

    /// @dev The event topics and error selectors the assembly uses are the declared ones.
    function test_topicsAndSelectors() public {
        Rec[] memory rs = _one(_next(S));
        bytes memory b = _build(rs, 2);
        vm.recordLogs();
        reg.commitMiniblocks(b);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one log");
        _noteHistory(rs, logs);
        _noteAccepted(rs);
        assertEq(logs[0].topics[0], MiniblockRegistryV2.MiniblocksCommitted.selector, "commit topic");
        Rec memory bad = _next(S);
        bad.h.epoch += 1;
        vm.recordLogs();
        reg.commitMiniblocks(_signed(bad, 2));
        logs = vm.getRecordedLogs();
        assertEq(logs[0].topics[0], MiniblockRegistryV2.MiniblockRejected.selector, "reject topic");
        assertEq(logs[0].topics[1], bad.h.streamId, "stream topic");
        assertEq(uint256(logs[0].topics[2]), bad.h.number, "number topic");
        (bytes32 hh, uint8 reason) = abi.decode(logs[0].data, (bytes32, uint8));
        bad.h.epoch -= 1; // the contract hashes the current epoch (a record's epoch must be it)
        assertEq(hh, reg.hashHeader(bad.h), "rejected header's hash, as the contract hashed it");
        assertEq(reason, 4, "reason");
    }

    function test_reject_4_wrongEpoch() public {
        Rec memory r = _next(S);
        r.h.epoch += 1;
        _expectReason(r, _signed(r, 2), 4);
    }

    function test_reject_5_attemptNotOpen() public {
        (uint64 num,,) = reg.streamHead(S);
        Rec memory r = _rec(S, num + 1, fullHead[S], 1);
        _expectReason(r, _signed(r, 2), 5);
    }

    /// @dev Check 5 is left out of the fast path (it holds at attempt 0); an attempt >= 1 of a leader
    ///      whose reveal an earlier record of the transaction already checked is still held to it.
    function test_reject_5_attemptNotOpen_leaderVerifiedEarlierInBatch() public {
        Rec memory first;
        Rec memory late;
        bool found;
        for (uint256 i = 100; i < 140 && !found; ++i) {
            _createStream(_sid(i));
            Rec memory a = _next(_sid(i));
            for (uint256 j = 100; j < i && !found; ++j) {
                (uint64 num,,) = reg.streamHead(_sid(j));
                Rec memory b = _rec(_sid(j), num + 1, fullHead[_sid(j)], 1);
                if (b.h.leader == a.h.leader) (first, late, found) = (a, b, true);
            }
        }
        assertTrue(found, "two streams with one leader at attempts 0 and 1");
        Rec[] memory rs = new Rec[](2);
        rs[0] = first;
        rs[1] = late;
        vm.recordLogs();
        reg.commitMiniblocks(_build(rs, 2));
        uint8[] memory reasons = _reasons(vm.getRecordedLogs());
        assertEq(reasons.length, 1, "only the early attempt is rejected");
        assertEq(reasons[0], 5, "attempt not open");
        (uint64 n0,,) = reg.streamHead(first.h.streamId);
        assertEq(n0, first.h.number, "the attempt-0 header is accepted");
    }

    function test_commit_nextAttemptAfterTimeout() public {
        vm.warp(block.timestamp + TIMEOUT);
        (uint64 num,,) = reg.streamHead(S);
        Rec memory r = _rec(S, num + 1, fullHead[S], 1);
        Rec[] memory rs = _one(r);
        _commitOk(rs, _build(rs, 2));
    }

    function test_reject_6_notElectedLeader() public {
        Rec memory r = _next(S);
        address[] memory reps = reg.replicasOf(S);
        r.leaderPos = uint8((r.leaderPos + 1) % 3);
        r.h.leader = reps[r.leaderPos];
        _expectReason(r, _signed(r, 2), 6);
        r.leaderPos = 7; // past the replica list
        _expectReason(r, _signed(r, 2), 6);
    }

    function test_reject_7_badLeaderSignature() public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        _signRec(rs[0], 2);
        rs[0].sigs[0] = _compact(pkOf[_nonReplica(S)], reg.headerDigest(rs[0].h));
        _expectReason(rs[0], _encode(rs, reveals), 7);
    }

    function test_reject_8_badAttestation() public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        _signRec(rs[0], 2);
        rs[0].sigs[1] = _compact(pkOf[_nonReplica(S)], reg.headerDigest(rs[0].h)); // a non-replica's
        _expectReason(rs[0], _encode(rs, reveals), 8);
        // high s
        _signRec(rs[0], 2);
        bytes memory sg = rs[0].sigs[1];
        uint256 s;
        assembly {
            s := mload(add(sg, 0x40))
        }
        uint256 N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        uint256 sHigh = N - (s & ((1 << 255) - 1));
        bytes32 r0;
        assembly {
            r0 := mload(add(sg, 0x20))
        }
        rs[0].sigs[1] = abi.encodePacked(r0, bytes32(sHigh)); // parity bit dropped too: never valid
        _expectReason(rs[0], _encode(rs, reveals), 8);
    }

    function test_reject_9_notReplica() public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        _signRec(rs[0], 2);
        rs[0].attesters |= uint16(1 << 5); // position past r
        bytes[] memory sigs = new bytes[](3);
        sigs[0] = rs[0].sigs[0];
        sigs[1] = rs[0].sigs[1];
        sigs[2] = rs[0].sigs[1];
        rs[0].sigs = sigs;
        _expectReason(rs[0], _encode(rs, reveals), 9);
    }

    function test_reject_10_duplicateAttester_leaderBit() public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        _signRec(rs[0], 2);
        rs[0].attesters = uint16(1 << rs[0].leaderPos);
        rs[0].sigs[1] = rs[0].sigs[0];
        _expectReason(rs[0], _encode(rs, reveals), 10);
    }

    function test_reject_11_inactiveAttester() public {
        Rec memory r = _next(S);
        address[] memory reps = reg.replicasOf(S);
        address att = reps[(r.leaderPos + 1) % 3];
        vm.prank(operator);
        reg.requestLeave(att);
        _nextEpoch();
        r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        // sign with the leaving replica explicitly
        rs[0].sigs = new bytes[](2);
        bytes32 d = reg.headerDigest(rs[0].h);
        rs[0].sigs[0] = _compact(pkOf[rs[0].h.leader], d);
        if (att == rs[0].h.leader) {
            // the leader itself left: its own signature counts first
            rs[0].attesters = uint16(1 << ((rs[0].leaderPos + 1) % 3));
            rs[0].sigs[1] = _compact(pkOf[reps[(rs[0].leaderPos + 1) % 3]], d);
        } else {
            uint256 pos;
            while (reps[pos] != att) ++pos;
            rs[0].attesters = uint16(1 << pos);
            rs[0].sigs[1] = _compact(pkOf[att], d);
        }
        _expectReason(rs[0], _encode(rs, reveals), 11);
    }

    function test_reject_12_noQuorum() public {
        Rec memory r = _next(S);
        _expectReason(r, _signed(r, 1), 12);
    }

    function test_reject_13_badReveal() public {
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        reveals[0] = keccak256(abi.encode(reveals[0])); // the current commit itself: d = 0
        rs[0].h.randaoReveal = reveals[0];
        _signRec(rs[0], 2);
        _expectReason(rs[0], _encode(rs, reveals), 13);
        // no table entry left for the leader (an empty table): it reveals 0
        rs[0].h.randaoReveal = bytes32(0);
        _signRec(rs[0], 2);
        _expectReason(rs[0], _encode(rs, new bytes32[](0)), 13);
    }

    /// @dev Reveal j belongs to the j-th distinct elected leader: a leader's later headers in the same
    ///      transaction use its entry (one commitment write), an extra entry is ignored, and a table in
    ///      another order makes the headers hash another reveal (7).
    function test_reveals_oneEntryPerLeader_inOrderOfFirstAppearance() public {
        Rec[] memory rs = new Rec[](2);
        rs[0] = _next(S);
        for (uint256 k = 3; ; ++k) {
            bytes32 other = _sid(k);
            _createStream(other);
            Rec memory t = _next(other);
            if (t.h.leader == rs[0].h.leader) {
                rs[1] = t;
                break;
            }
        }
        address L = rs[0].h.leader;
        bytes32[] memory reveals = _assignReveals(rs);
        assertEq(reveals.length, 1, "one entry for the leader of both");
        for (uint256 i; i < 2; ++i) _signRec(rs[i], 2);
        bytes32[] memory extra = new bytes32[](2);
        extra[0] = reveals[0];
        extra[1] = keccak256("unused");
        _commitOk(rs, _encode(rs, extra));
        assertEq(reg.randaoCommitOf(L), _top192(reveals[0]), "the reveal stored once");
        // two leaders, table in the wrong order: both headers hash the other's reveal
        Rec[] memory two = new Rec[](2);
        two[0] = _next(S);
        for (uint256 k = 3; ; ++k) {
            bytes32 other = _sid(k);
            if (!reg.streamExists(other)) _createStream(other);
            Rec memory t = _next(other);
            if (t.h.leader != two[0].h.leader) {
                two[1] = t;
                break;
            }
        }
        bytes32[] memory rv = _assignReveals(two);
        for (uint256 i; i < 2; ++i) _signRec(two[i], 2);
        (rv[0], rv[1]) = (rv[1], rv[0]);
        vm.recordLogs();
        reg.commitMiniblocks(_encode(two, rv));
        uint8[] memory rr = _reasons(vm.getRecordedLogs());
        assertEq(rr.length, 2, "both rejected");
        assertEq(rr[0], 7, "hashed another reveal");
        assertEq(rr[1], 7, "hashed another reveal");
    }

    function test_reject_14_tooManyEvents() public {
        Rec memory r = _next(S);
        r.h.eventCount = 15001;
        _expectReason(r, _signed(r, 2), 14);
    }

    /// @dev TruncatedBatch(needed) / TrailingBytes(needed): `needed` = the bytes the batch's header,
    ///      reveal table, records and signatures take (3 while shorter than the 3-byte header).
    function test_commit_revertsOnMalformedBatch() public {
        Rec memory r = _next(S);
        bytes memory b = _signed(r, 2);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.TruncatedBatch.selector, 3));
        reg.commitMiniblocks(hex"0001");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.BadBatchSize.selector, 0));
        reg.commitMiniblocks(hex"000000");
        bytes memory cut = new bytes(b.length - 1);
        for (uint256 i; i < cut.length; ++i) cut[i] = b[i];
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.TruncatedBatch.selector, b.length));
        reg.commitMiniblocks(cut);
        // a cut inside the fixed records: needed = header + table + records
        bytes memory cut2 = new bytes(3 + 32 + 100);
        for (uint256 i; i < cut2.length; ++i) cut2[i] = b[i];
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.TruncatedBatch.selector, 3 + 32 + 127));
        reg.commitMiniblocks(cut2);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.TrailingBytes.selector, b.length));
        reg.commitMiniblocks(bytes.concat(b, hex"00"));
        // header count larger than the records (the second "record" is signature bytes)
        bytes memory two = bytes.concat(b);
        two[1] = 0x02;
        uint256 att1 = uint16(bytes2(abi.encodePacked(two[3 + 32 + 127 + 111], two[3 + 32 + 127 + 112])));
        uint256 need = 3 + 32 + 2 * 127 + 64 * (2 + 1 + _popcount(att1));
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.TruncatedBatch.selector, need));
        reg.commitMiniblocks(two);
        // reveal table longer than the batch
        bytes memory k9 = bytes.concat(b);
        k9[2] = 0xff;
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.TruncatedBatch.selector, 3 + 32 * 255 + 127));
        reg.commitMiniblocks(k9);
    }

    function _popcount(uint256 x) internal pure returns (uint256 c) {
        for (; x != 0; x &= x - 1) ++c;
    }

    function test_eip712Domain_version2() public view {
        (, string memory name, string memory version, uint256 chainId, address vc,,) = reg.eip712Domain();
        assertEq(name, "MiniblockRegistry", "name");
        assertEq(version, "2", "version");
        assertEq(chainId, block.chainid, "chain");
        assertEq(vc, address(reg), "verifying contract");
    }

    function _nonReplica(bytes32 sid) internal view returns (address) {
        address[] memory reps = reg.replicasOf(sid);
        for (uint256 j; j < nodes.length; ++j) {
            bool isRep;
            for (uint256 i; i < reps.length; ++i) if (reps[i] == nodes[j]) isRep = true;
            if (!isRep) return nodes[j];
        }
        revert("all nodes are replicas");
    }
}
