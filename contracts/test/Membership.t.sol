// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Vm.sol";
import {RegistryFixture} from "./utils/Fixture.sol";
import {MiniblockRegistry} from "../src/MiniblockRegistry.sol";
import {Header} from "../src/lib/MiniblockTypes.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @dev Registry v1 membership, the rules it shares with v2 (docs/protocol.md "Contract surface"):
///      missed slots and dead replicas, owner eviction, the live-node cap with slot reuse, leave and
///      register again, onion renewal, and a stream whose majority died committing again.
contract MembershipTest is RegistryFixture {
    uint256 internal constant STREAMS = 24;

    function setUp() public {
        _activeRegistry(6);
        for (uint256 i; i < STREAMS; ++i) reg.createStream(_sid(i));
        vm.warp(block.timestamp + 1);
    }

    // ------------------------------------------------------------ helpers

    function _in(address a, address[] memory xs) internal pure returns (bool) {
        for (uint256 i; i < xs.length; ++i) if (xs[i] == a) return true;
        return false;
    }

    function _pos(bytes32 sid, address a) internal view returns (uint256) {
        address[] memory reps = reg.replicasOf(sid);
        for (uint256 i; i < reps.length; ++i) if (reps[i] == a) return i;
        return type(uint256).max;
    }

    /// @dev Commits the next block of `sid` at `attempt` (waiting for its window), signed by the leader
    ///      and one replica not in `avoid`; returns the logs.
    function _commitAt(bytes32 sid, uint32 attempt, address[] memory avoid) internal returns (Vm.Log[] memory) {
        uint64 opens = reg.attemptOpensAt(sid, attempt);
        if (block.timestamp < opens) vm.warp(opens);
        Header memory h = _headerAt(sid, attempt);
        address[] memory reps = reg.replicasOf(sid);
        bytes[] memory sigs = new bytes[](2);
        sigs[0] = _signH(h.leader, h);
        for (uint256 k; k < reps.length; ++k) {
            if (reps[k] == h.leader || _in(reps[k], avoid)) continue;
            sigs[1] = _signH(reps[k], h);
            break;
        }
        vm.recordLogs();
        _commit1(h, sigs);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            assertTrue(logs[i].topics[0] != MiniblockRegistry.MiniblockRejected.selector, "rejected");
        }
        assertEq(reg.headerHashAt(h.streamId, h.number), reg.hashHeader(h), "stored hash");
        _noteAccepted(h);
        return logs;
    }

    function _one(address a) internal pure returns (address[] memory xs) {
        xs = new address[](1);
        xs[0] = a;
    }

    function _two(address a, address b) internal pure returns (address[] memory xs) {
        xs = new address[](2);
        xs[0] = a;
        xs[1] = b;
    }

    /// @dev Streams that replicate `x` where no node of `dead` other than the leader at its elected
    ///      attempt is needed: whenever `x` is elected at attempt 0, commit attempt 1 instead (x skipped).
    ///      Stops once x has `want` misses.
    function _skip(address x, address[] memory dead, uint256 want) internal {
        for (uint256 round; round < 50; ++round) {
            for (uint256 i; i < STREAMS; ++i) {
                (uint256 m,,) = reg.livenessOf(x);
                if (m >= want) return;
                bytes32 sid = _sid(i);
                address[] memory reps = reg.replicasOf(sid);
                if (!_in(x, reps)) continue;
                uint256 deadHere;
                for (uint256 k; k < reps.length; ++k) if (_in(reps[k], dead)) ++deadHere;
                if (deadHere > 1) continue; // no live majority without x
                (uint64 num,,) = reg.streamHead(sid);
                address l0 = reg.electedLeader(sid, num + 1, 0);
                if (_in(l0, dead) && l0 != x) continue;
                if (l0 == x) _commitAt(sid, 1, dead);
                else _commitAt(sid, 0, dead);
            }
        }
        revert("could not charge misses");
    }

    function _replacedCause(Vm.Log[] memory logs) internal pure returns (uint8 cause, address oldN, address newN) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistry.ReplicaReplaced.selector) {
                (, oldN, newN, cause) = abi.decode(logs[i].data, (uint256, address, address, uint8));
                return (cause, oldN, newN);
            }
        }
        revert("no ReplicaReplaced");
    }

    // ------------------------------------------------------------ rules

    function test_constructor_deadParams() public {
        vm.expectRevert(MiniblockRegistry.InvalidConfig.selector);
        new MiniblockRegistry(EPOCH, TIMEOUT, 3, 0, 2);
        vm.expectRevert(MiniblockRegistry.InvalidConfig.selector);
        new MiniblockRegistry(EPOCH, TIMEOUT, 3, 3, 0);
        vm.expectRevert(MiniblockRegistry.InvalidConfig.selector);
        new MiniblockRegistry(EPOCH, TIMEOUT, 3, 1 << 16, 2);
        assertEq(reg.deadMisses(), 3, "deadMisses");
        assertEq(reg.deadEpochs(), 2, "deadEpochs");
    }

    function test_missedSlots_chargedToSkippedLeader_resetByLeading() public {
        bytes32 sid = _sid(0);
        (uint64 num,,) = reg.streamHead(sid);
        address l0 = reg.electedLeader(sid, num + 1, 0);
        uint256 p0 = _pos(sid, l0);
        Vm.Log[] memory logs = _commitAt(sid, 1, _one(l0));
        bool seen;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistry.SlotsMissed.selector) {
                assertEq(uint256(logs[i].topics[2]), num + 1, "number");
                assertEq(abi.decode(logs[i].data, (uint256)), 1 << p0, "positions");
                seen = true;
            }
        }
        assertTrue(seen, "SlotsMissed");
        (uint256 m, uint64 led, bool dead) = reg.livenessOf(l0);
        assertEq(m, 1, "one miss");
        assertEq(led, reg.currentEpoch(), "joined this epoch: lastLed = joinEpoch");
        assertFalse(dead, "not dead");
        // an attempt-0 header charges nobody
        (num,,) = reg.streamHead(sid);
        address l1 = reg.electedLeader(sid, num + 1, 0);
        _commitAt(sid, 0, new address[](0));
        (uint256 m1,,) = reg.livenessOf(l1);
        if (l1 == l0) assertEq(m1, 0, "leading resets");
        // leading resets misses and lastLedEpoch
        _nextEpoch();
        _skip(l0, new address[](0), 1); // make sure it has a miss (new epoch)
        for (uint256 i; i < STREAMS; ++i) {
            bytes32 s = _sid(i);
            (uint64 n2,,) = reg.streamHead(s);
            if (reg.electedLeader(s, n2 + 1, 0) == l0) {
                _commitAt(s, 0, new address[](0));
                (m, led,) = reg.livenessOf(l0);
                assertEq(m, 0, "reset by leading");
                assertEq(led, reg.currentEpoch(), "lastLed = now");
                return;
            }
        }
        revert("l0 never elected");
    }

    function test_deadReplica_replacedByAnyone_cause2() public {
        address x = nodes[0];
        bytes32 sid;
        for (uint256 i; i < STREAMS; ++i) if (_pos(_sid(i), x) != type(uint256).max) sid = _sid(i);
        uint256 p = _pos(sid, x);
        _skip(x, _one(x), 3);
        (uint256 m, uint64 led,) = reg.livenessOf(x);
        assertGe(m, 3, "misses");
        // misses alone are not enough: it led (joined) within deadEpochs
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.ReplicaNotDead.selector, x, m, led));
        reg.replaceReplica(sid, p);
        _nextEpoch();
        _skip(x, _one(x), m); // epochs pass; x keeps its misses (it leads nothing)
        _nextEpoch();
        (, , bool dead) = reg.livenessOf(x);
        assertTrue(dead, "dead");
        vm.recordLogs();
        vm.prank(address(0xCAFE));
        reg.replaceReplica(sid, p);
        (uint8 cause, address oldN, address newN) = _replacedCause(vm.getRecordedLogs());
        assertEq(cause, 2, "cause dead");
        assertEq(oldN, x, "old");
        assertFalse(_in(x, reg.replicasOf(sid)), "replaced");
        assertTrue(newN != x, "new");
        assertTrue(reg.streamRefsOf(newN) > 0, "refs");
        // a dead node is never picked for a new stream
        for (uint256 i; i < 8; ++i) {
            bytes32 ns = keccak256(abi.encode("new", i));
            reg.createStream(ns);
            assertFalse(_in(x, reg.replicasOf(ns)), "dead not eligible");
        }
        _commitAt(sid, 0, new address[](0));
    }

    function test_honestIdleNode_neverDead() public {
        address x = nodes[1];
        for (uint256 i; i < 5; ++i) _nextEpoch();
        (uint256 m,, bool dead) = reg.livenessOf(x);
        assertEq(m, 0, "no misses while idle");
        assertFalse(dead, "idle is not dead");
        for (uint256 i; i < STREAMS; ++i) {
            uint256 p = _pos(_sid(i), x);
            if (p == type(uint256).max) continue;
            (, uint64 led,) = reg.livenessOf(x);
            vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.ReplicaNotDead.selector, x, 0, led));
            reg.replaceReplica(_sid(i), p);
            return;
        }
    }

    function test_majorityDead_streamRecovers() public {
        // S: a stream with replicas a, b (dead for good) and c (live); S cannot commit (no quorum)
        bytes32 sid = _sid(0);
        address[] memory reps = reg.replicasOf(sid);
        address[] memory dead = _two(reps[0], reps[1]);
        _skip(reps[0], dead, 3);
        _skip(reps[1], dead, 3);
        _nextEpoch();
        _nextEpoch();
        for (uint256 k; k < 2; ++k) {
            (, , bool d) = reg.livenessOf(reps[k]);
            assertTrue(d, "dead");
            vm.recordLogs();
            reg.replaceReplica(sid, k);
            (uint8 cause,,) = _replacedCause(vm.getRecordedLogs());
            assertEq(cause, 2, "cause");
        }
        address[] memory now_ = reg.replicasOf(sid);
        assertEq(now_[2], reps[2], "live replica kept");
        assertFalse(_in(reps[0], now_) || _in(reps[1], now_), "dead ones out");
        _commitAt(sid, 0, new address[](0));
        _commitAt(sid, 0, new address[](0));
    }

    function test_evictNode_atNextEpoch_thenReplaced() public {
        address x = nodes[2];
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, operator));
        reg.evictNode(x);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeNotRegistered.selector, address(0xDEAD)));
        reg.evictNode(address(0xDEAD));
        uint256 live = reg.liveNodeCount();
        uint64 e = reg.currentEpoch();
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.NodeEvicted(x, e + 1);
        reg.evictNode(x);
        assertEq(reg.liveNodeCount(), live - 1, "cap freed at once");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeAlreadyLeaving.selector, x));
        reg.evictNode(x);
        assertEq(uint8(reg.getNode(x).status), uint8(MiniblockRegistry.NodeStatus.Leaving), "active until boundary");
        _nextEpoch();
        assertEq(uint8(reg.getNode(x).status), uint8(MiniblockRegistry.NodeStatus.Left), "left");
        for (uint256 i; i < STREAMS; ++i) {
            uint256 p = _pos(_sid(i), x);
            if (p == type(uint256).max) continue;
            vm.recordLogs();
            reg.replaceReplica(_sid(i), p);
            (uint8 cause,,) = _replacedCause(vm.getRecordedLogs());
            assertEq(cause, 1, "cause inactive");
        }
        assertEq(reg.streamRefsOf(x), 0, "no stream names it");
    }

    function test_leave_thenRegisterAgain_sameSlot() public {
        address x = nodes[3];
        uint256 n = reg.nodeCount();
        vm.prank(operator);
        reg.requestLeave(x);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeAlreadyRegistered.selector, x));
        reg.registerNode(x, "http://again", _layer(x, ONION));
        _nextEpoch();
        vm.prank(operator);
        reg.registerNode(x, "http://again", _layer(x, ONION));
        layerOf[x] = ONION;
        assertEq(reg.nodeCount(), n, "same slot");
        MiniblockRegistry.NodeInfo memory info = reg.getNode(x);
        assertEq(uint8(info.status), uint8(MiniblockRegistry.NodeStatus.Pending), "pending");
        assertEq(info.url, "http://again", "url");
        assertEq(info.leaveEpoch, type(uint64).max, "no leave");
        _nextEpoch();
        assertEq(uint8(reg.getNode(x).status), uint8(MiniblockRegistry.NodeStatus.Active), "active again");
        // streams that still name it have it back: they commit with it
        for (uint256 i; i < STREAMS; ++i) {
            bytes32 sid = _sid(i);
            if (_pos(sid, x) == type(uint256).max) continue;
            _commitAt(sid, 0, new address[](0));
            return;
        }
    }

    function test_maxNodes_countsLiveNodes_slotsReused() public {
        vm.startPrank(operator);
        for (uint256 i = nodes.length; i < 256; ++i) reg.registerNode(address(uint160(0x10000 + i)), "", bytes32(i));
        assertEq(reg.liveNodeCount(), 256, "full");
        vm.expectRevert(MiniblockRegistry.TooManyNodes.selector);
        reg.registerNode(address(0xFFFFF), "", 0);
        address gone = address(uint160(0x10000 + 100));
        reg.requestLeave(gone);
        assertEq(reg.liveNodeCount(), 255, "leave frees the cap");
        // every slot is held (gone has not left yet)
        vm.expectRevert(MiniblockRegistry.NoFreeSlot.selector);
        reg.registerNode(address(0xFFFFF), "", 0);
        vm.stopPrank();
        _nextEpoch();
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.NodeSlotReclaimed(100, gone);
        vm.prank(operator);
        reg.registerNode(address(0xFFFFF), "u", bytes32(uint256(1)));
        assertEq(reg.nodeCount(), 256, "slots");
        assertEq(reg.getNodes(100, 1)[0].node, address(0xFFFFF), "slot 100 reused");
        assertEq(uint8(reg.getNode(gone).status), uint8(MiniblockRegistry.NodeStatus.None), "old record dropped");
        // a slot a stream names is never reused: the 6 setUp nodes hold streams
        for (uint256 i; i < 6; ++i) assertTrue(reg.streamRefsOf(nodes[i]) > 0, "refs");
    }

    function test_renewOnion_usableFromNextEpoch() public {
        address x = nodes[0];
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NotNodeOperator.selector, address(this), x));
        reg.renewOnion(x, bytes32(uint256(1)));
        vm.startPrank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeNotRegistered.selector, address(0xDEAD)));
        reg.renewOnion(address(0xDEAD), bytes32(uint256(1)));
        vm.expectRevert(MiniblockRegistry.InvalidConfig.selector);
        reg.renewOnion(x, 0);
        // the new onion: the same secret, a deeper top (ONION - 50), so the test's layers still apply
        bytes32 top = _layer(x, ONION - 50);
        uint64 e = reg.currentEpoch();
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.OnionRenewed(x, top, e + 1);
        reg.renewOnion(x, top);
        vm.stopPrank();
        assertEq(reg.randaoCommitOf(x), top, "pending commit shown");
        (, uint64 led,) = reg.livenessOf(x);
        assertEq(led, e + 1, "clock restarts, usable from next epoch");
        bytes32 sid = _findLedBy(x);
        // this epoch: neither the old onion nor the new one
        Header memory h = _headerAt(sid, 0);
        _expectRejected(h, _quorumSigs(h), 13);
        layerOf[x] = ONION - 50;
        h = _headerAt(sid, 0);
        _expectRejected(h, _quorumSigs(h), 13);
        _nextEpoch();
        sid = _findLedBy(x);
        h = _headerAt(sid, 0);
        _commitOk(h, _quorumSigs(h));
        assertEq(reg.randaoCommitOf(x), h.randaoReveal, "renewed onion in use");
        // left nodes cannot renew
        vm.prank(operator);
        reg.requestLeave(x);
        _nextEpoch();
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeHasLeft.selector, x));
        reg.renewOnion(x, top);
    }

    function _findLedBy(address x) internal returns (bytes32) {
        for (uint256 round; round < 20; ++round) {
            for (uint256 i; i < STREAMS; ++i) {
                bytes32 sid = _sid(i);
                (uint64 num,,) = reg.streamHead(sid);
                if (reg.electedLeader(sid, num + 1, 0) == x) return sid;
            }
            // move x's streams on (their next leaders are others): the election of the next block changes
            for (uint256 i; i < STREAMS; ++i) {
                bytes32 sid = _sid(i);
                if (_pos(sid, x) == type(uint256).max) continue;
                _commitAt(sid, 0, new address[](0));
            }
        }
        revert("x never elected");
    }
}
