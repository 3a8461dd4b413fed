// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Vm.sol";
import {RegistryV2Fixture} from "./utils/FixtureV2.sol";
import {MiniblockRegistryV2} from "../src/MiniblockRegistryV2.sol";

/// @dev Registry v2 membership (docs/protocol.md "Version 2", "Membership" and "Dead replicas"):
///      owner eviction, re-registration, the live-node cap and slot reuse, onion renewal, dead-replica
///      replacement and its griefing guards, and a stream whose majority died committing again.
contract MembershipV2Test is RegistryV2Fixture {
    uint256 internal constant STREAMS = 24;
    bytes32 internal S;

    function setUp() public {
        _activeRegistry(6, 3);
        for (uint256 i; i < STREAMS; ++i) _createStream(_sid(i));
        S = _sid(0);
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
        revert("not a replica");
    }

    /// @dev Signs with the leader and the first other replica not in `avoid` (2 of 3).
    function _signAvoiding(Rec memory r, address[] memory avoid) internal view {
        address[] memory reps = reg.replicasOf(r.h.streamId);
        bytes32 d = reg.headerDigest(r.h);
        r.sigs = new bytes[](2);
        r.sigs[0] = _compact(pkOf[r.h.leader], d);
        for (uint256 k; k < reps.length; ++k) {
            if (k == r.leaderPos || _in(reps[k], avoid)) continue;
            r.attesters = uint16(1 << k);
            r.sigs[1] = _compact(pkOf[reps[k]], d);
            return;
        }
        revert("no live attester");
    }

    /// @dev Commits the next block of `sid` at `attempt` (waiting for its window), led by the elected
    ///      leader and one live attester; returns the logs (asserts acceptance).
    function _commitAt(bytes32 sid, uint32 attempt, address[] memory avoid) internal returns (Vm.Log[] memory logs) {
        (uint64 num,, uint64 ts) = reg.streamHead(sid);
        uint256 opens = uint256(ts) + uint256(attempt) * TIMEOUT;
        if (block.timestamp < opens) vm.warp(opens);
        Rec[] memory rs = _one(_rec(sid, num + 1, fullHead[sid], attempt));
        bytes32[] memory reveals = _assignReveals(rs);
        _signAvoiding(rs[0], avoid);
        vm.recordLogs();
        reg.commitMiniblocks(_encode(rs, reveals));
        logs = vm.getRecordedLogs();
        assertEq(_reasons(logs).length, 0, "accepted");
        _noteHistory(rs, logs);
        _noteAccepted(rs);
    }

    /// @dev Commits blocks of `sid` until `dead` has `misses` misses: attempt 0 when a live replica
    ///      is elected, else the first attempt whose leader is live.
    function _chargeMisses(bytes32 sid, address[] memory dead, uint256 misses) internal {
        for (uint256 guard; guard < 64; ++guard) {
            bool done = true;
            for (uint256 i; i < dead.length; ++i) {
                (uint256 m,,) = reg.livenessOf(dead[i]);
                if (m < misses && _in(dead[i], reg.replicasOf(sid))) done = false;
            }
            if (done) return;
            (uint64 num,,) = reg.streamHead(sid);
            uint32 a;
            while (_in(reg.electedLeader(sid, num + 1, a), dead)) ++a;
            _commitAt(sid, a, dead);
        }
        revert("misses not reached");
    }

    /// @dev A stream naming `a` and not `b`.
    function _streamWithout(address a, address b) internal view returns (bytes32) {
        for (uint256 i; i < STREAMS; ++i) {
            address[] memory reps = reg.replicasOf(_sid(i));
            if (_in(a, reps) && !_in(b, reps)) return _sid(i);
        }
        revert("no such stream");
    }

    function _pair(address a, address b) internal pure returns (address[] memory xs) {
        xs = new address[](2);
        xs[0] = a;
        xs[1] = b;
    }

    function _single(address a) internal pure returns (address[] memory xs) {
        xs = new address[](1);
        xs[0] = a;
    }

    // ------------------------------------------------------------ owner eviction

    function test_evictNode_atNextEpoch_thenReplaced() public {
        address x = reg.replicasOf(S)[0];
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSignature("OwnableUnauthorizedAccount(address)", operator));
        reg.evictNode(x);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.NodeNotRegistered.selector, address(0xdead)));
        reg.evictNode(address(0xdead));
        uint64 e = reg.currentEpoch();
        uint256 live = reg.liveNodeCount();
        vm.expectEmit(true, false, false, true, address(reg));
        emit MiniblockRegistryV2.NodeEvicted(x, e + 1);
        reg.evictNode(x);
        assertEq(reg.liveNodeCount(), live - 1, "evicted node no longer counts");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.NodeAlreadyLeaving.selector, x));
        reg.evictNode(x);
        // still active (and not replaceable) until the boundary
        assertEq(uint256(reg.getNode(x).status), uint256(MiniblockRegistryV2.NodeStatus.Leaving), "leaving");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.ReplicaNotDead.selector, x, 0, 1));
        reg.replaceReplica(S, 0);
        _nextEpoch();
        assertEq(uint256(reg.getNode(x).status), uint256(MiniblockRegistryV2.NodeStatus.Left), "left");
        vm.recordLogs();
        reg.replaceReplica(S, 0);
        (uint256 idx, address oldN, address newN, uint8 cause) = _replaced(vm.getRecordedLogs());
        assertEq(idx, 0, "position");
        assertEq(oldN, x, "old");
        assertEq(cause, 1, "cause: not active");
        assertTrue(newN != x && reg.replicasOf(S)[0] == newN, "replaced");
        _commitAt(S, 0, new address[](0));
    }

    function _replaced(Vm.Log[] memory logs) internal pure returns (uint256, address, address, uint8) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistryV2.ReplicaReplaced.selector) {
                return abi.decode(logs[i].data, (uint256, address, address, uint8));
            }
        }
        revert("no ReplicaReplaced");
    }

    // ------------------------------------------------------------ leave and register again

    function test_leave_thenRegisterAgain_sameAddressSameSlot() public {
        address x = reg.replicasOf(S)[1];
        uint256 idx = reg.nodeIndex(x);
        uint256 refs = reg.streamRefsOf(x);
        assertTrue(refs > 0, "x replicates streams");
        vm.prank(x);
        reg.requestLeave(x);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.NodeAlreadyRegistered.selector, x));
        reg.registerNode(x, "http://again", _layer(x, ONION));
        _nextEpoch();
        uint256 live = reg.liveNodeCount();
        uint64 e = reg.currentEpoch();
        vm.expectEmit(true, true, false, true, address(reg));
        emit MiniblockRegistryV2.NodeRegistered(x, operator, "http://again", e + 1);
        vm.prank(operator);
        reg.registerNode(x, "http://again", _layer(x, 200));
        layerOf[x] = 200;
        assertEq(reg.liveNodeCount(), live + 1, "live again");
        assertEq(reg.nodeIndex(x), idx, "its own slot");
        assertEq(reg.streamRefsOf(x), refs, "its streams still name it");
        assertEq(uint256(reg.getNode(x).status), uint256(MiniblockRegistryV2.NodeStatus.Pending), "pending");
        assertEq(reg.randaoCommitOf(x), _top192(_layer(x, 200)), "new onion");
        _nextEpoch();
        assertEq(uint256(reg.getNode(x).status), uint256(MiniblockRegistryV2.NodeStatus.Active), "active");
        // back in its streams: it signs (lead or attest) a header of S again
        address[] memory others = reg.replicasOf(S);
        _commitAt(S, 0, _single(others[0] == x ? others[1] : others[0]));
    }

    // ------------------------------------------------------------ live cap and slot reuse

    function test_maxNodes_countsLiveNodes_slotsReused() public {
        uint256 max = reg.MAX_NODES();
        vm.startPrank(operator);
        for (uint256 i = reg.nodeCount(); i < max; ++i) {
            reg.registerNode(address(uint160(0x100000 + i)), "u", bytes32(i));
        }
        assertEq(reg.liveNodeCount(), max, "full");
        vm.expectRevert(MiniblockRegistryV2.TooManyNodes.selector);
        reg.registerNode(address(0xBEEF), "u", bytes32(0));
        vm.stopPrank();
        // one replica of S and one node no stream names leave: the cap counts live nodes only
        address x = reg.replicasOf(S)[2];
        address y = address(uint160(0x100000 + max - 1));
        vm.prank(operator);
        reg.requestLeave(y);
        vm.prank(x);
        reg.requestLeave(x);
        assertEq(reg.liveNodeCount(), max - 2, "leaves free the cap");
        // ... but their slots are held until they have left
        vm.prank(operator);
        vm.expectRevert(MiniblockRegistryV2.NoFreeSlot.selector);
        reg.registerNode(address(0xBEEF), "u", bytes32(0));
        _nextEpoch();
        // y's slot (no stream names it) is reclaimed; x's is still named by its streams
        uint256 yIdx = reg.nodeIndex(y);
        vm.prank(operator);
        vm.expectEmit(true, true, false, false, address(reg));
        emit MiniblockRegistryV2.NodeSlotReclaimed(yIdx, y);
        reg.registerNode(address(0xBEEF), "u", bytes32(0));
        assertEq(reg.nodeIndex(address(0xBEEF)), yIdx, "slot reused");
        assertEq(uint256(reg.getNode(y).status), uint256(MiniblockRegistryV2.NodeStatus.None), "y forgotten");
        vm.prank(operator);
        vm.expectRevert(MiniblockRegistryV2.NoFreeSlot.selector);
        reg.registerNode(address(0xBEEE), "u", bytes32(0));
        // once no stream names x, its slot goes too
        for (uint256 i; i < STREAMS; ++i) {
            address[] memory reps = reg.replicasOf(_sid(i));
            for (uint256 k; k < reps.length; ++k) if (reps[k] == x) reg.replaceReplica(_sid(i), k);
        }
        assertEq(reg.streamRefsOf(x), 0, "no stream names x");
        uint256 xIdx = reg.nodeIndex(x);
        vm.prank(operator);
        reg.registerNode(address(0xBEEE), "u", bytes32(0));
        assertEq(reg.nodeIndex(address(0xBEEE)), xIdx, "x's slot reused");
        // x can register again, into a free slot (none left now)
        vm.prank(operator);
        vm.expectRevert(MiniblockRegistryV2.TooManyNodes.selector);
        reg.registerNode(x, "u", bytes32(0));
    }

    // ------------------------------------------------------------ onion renewal

    function test_renewOnion_usableFromNextEpoch() public {
        (uint64 num,,) = reg.streamHead(S);
        address l = reg.electedLeader(S, num + 1, 0);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.NotNodeOperator.selector, address(this), l));
        reg.renewOnion(l, bytes32(0));
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.NodeNotRegistered.selector, address(0xdead)));
        reg.renewOnion(address(0xdead), bytes32(0));
        bytes32 top = _layer(l, 1000);
        uint64 e = reg.currentEpoch();
        vm.expectEmit(true, false, false, true, address(reg));
        emit MiniblockRegistryV2.OnionRenewed(l, _top192(top), e + 1);
        vm.prank(operator);
        reg.renewOnion(l, top);
        assertEq(reg.randaoCommitOf(l), _top192(top), "renewed");
        // this epoch: neither the old onion nor the new one opens it (13)
        Rec memory r = _next(S);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs); // the old onion's next layer
        _signRec(rs[0], 2);
        bytes memory b = _encode(rs, reveals);
        vm.recordLogs();
        reg.commitMiniblocks(b);
        uint8[] memory rr = _reasons(vm.getRecordedLogs());
        assertTrue(rr.length == 1 && rr[0] == 13, "old onion: 13");
        layerOf[l] = 1000;
        rs = _one(_next(S));
        reveals = _assignReveals(rs);
        _signRec(rs[0], 2);
        vm.recordLogs();
        reg.commitMiniblocks(_encode(rs, reveals));
        rr = _reasons(vm.getRecordedLogs());
        assertTrue(rr.length == 1 && rr[0] == 13, "new onion before its epoch: 13");
        // next epoch: the new onion opens it
        _nextEpoch();
        (num,,) = reg.streamHead(S);
        uint32 a;
        while (reg.electedLeader(S, num + 1, a) != l) ++a;
        _commitAt(S, a, new address[](0));
        (, uint64 led,) = reg.livenessOf(l);
        assertEq(led, reg.currentEpoch(), "led this epoch");
        // a node that has left cannot renew
        vm.prank(operator);
        reg.requestLeave(l);
        _nextEpoch();
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.NodeHasLeft.selector, l));
        reg.renewOnion(l, top);
    }

    // ------------------------------------------------------------ dead replicas

    function test_missedSlots_chargedToSkippedLeaders_resetByLeading() public {
        (uint64 num,,) = reg.streamHead(S);
        address[] memory reps = reg.replicasOf(S);
        address l0 = reg.electedLeader(S, num + 1, 0);
        address l1 = reg.electedLeader(S, num + 1, 1);
        address l2 = reg.electedLeader(S, num + 1, 2);
        // a node that is no replica of S
        address z;
        for (uint256 i; i < nodes.length; ++i) if (!_in(nodes[i], reps)) z = nodes[i];
        Vm.Log[] memory logs = _commitAt(S, 2, new address[](0));
        assertEq(_misses(l0), 1, "attempt 0's leader missed");
        assertEq(_misses(l1), 1, "attempt 1's leader missed");
        assertEq(_misses(l2), 0, "the leader did not");
        assertEq(_misses(z), 0, "a non-replica is never charged");
        assertEq(_missedBits(logs, num + 1), (1 << _pos(S, l0)) | (1 << _pos(S, l1)), "positions charged");
        // attempt 0: nothing charged
        (num,,) = reg.streamHead(S);
        logs = _commitAt(S, 0, new address[](0));
        assertEq(_count(logs, MiniblockRegistryV2.SlotsMissed.selector), 0, "no miss at attempt 0");
        // leading resets the counter
        for (uint256 g; g < 32; ++g) {
            (num,,) = reg.streamHead(S);
            if (reg.electedLeader(S, num + 1, 0) == l0) break;
            _commitAt(S, 0, new address[](0));
        }
        if (_misses(l0) > 0) _commitAt(S, 0, new address[](0));
        assertEq(_misses(l0), 0, "reset by leading");
    }

    function _misses(address n) internal view returns (uint256 m) {
        (m,,) = reg.livenessOf(n);
    }

    function _missedBits(Vm.Log[] memory logs, uint256 number) internal view returns (uint256 bits) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistryV2.SlotsMissed.selector) {
                assertEq(logs[i].topics[1], S, "stream");
                assertEq(uint256(logs[i].topics[2]), number, "number");
                bits = abi.decode(logs[i].data, (uint256));
            }
        }
    }

    /// @dev An honest replica that was never skipped is not replaceable however long it was idle; one
    ///      with enough misses is not until DEAD_EPOCHS have passed since it last led.
    function test_deadRule_griefingGuards() public {
        address x = reg.replicasOf(S)[0];
        for (uint256 i; i < 5; ++i) _nextEpoch();
        (uint256 m, uint64 led, bool dead) = reg.livenessOf(x);
        assertEq(m, 0, "never skipped");
        assertFalse(dead, "idle is not dead");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.ReplicaNotDead.selector, x, 0, led));
        reg.replaceReplica(S, 0);
        // x leads once, then misses DEAD_MISSES slots on a stream it replicates with a live majority
        bytes32 t = _streamWithout(x, address(0));
        {
            (uint64 num,,) = reg.streamHead(t);
            uint32 a;
            while (reg.electedLeader(t, num + 1, a) != x) ++a;
            _commitAt(t, a, new address[](0));
        }
        _chargeMisses(t, _single(x), reg.DEAD_MISSES());
        (m, led, dead) = reg.livenessOf(x);
        assertGe(m, reg.DEAD_MISSES(), "misses");
        // dead only DEAD_EPOCHS after its last lead
        assertLt(reg.currentEpoch(), led + reg.DEAD_EPOCHS(), "led recently");
        assertFalse(dead, "led recently: not dead");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.ReplicaNotDead.selector, x, m, led));
        reg.replaceReplica(S, 0);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.InvalidReplicaIndex.selector, 3));
        reg.replaceReplica(S, 3);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistryV2.UnknownStream.selector, bytes32(uint256(7))));
        reg.replaceReplica(bytes32(uint256(7)), 0);
        for (uint256 i; i < reg.DEAD_EPOCHS(); ++i) _nextEpoch();
        (,, dead) = reg.livenessOf(x);
        assertTrue(dead, "dead");
        vm.recordLogs();
        reg.replaceReplica(S, 0);
        (,,, uint8 cause) = _replaced(vm.getRecordedLogs());
        assertEq(cause, 2, "cause: dead");
        assertFalse(_in(x, reg.replicasOf(S)), "replaced");
    }

    /// @dev 2 of 3 replicas of S stop for good: S cannot commit (no quorum); their misses on streams
    ///      with a live majority make them dead after DEAD_EPOCHS; anyone replaces both (never with a
    ///      dead node); S commits again with the new replicas.
    function test_majorityDead_streamRecovers() public {
        address[] memory reps = reg.replicasOf(S);
        address x = reps[0];
        address y = reps[1];
        address[] memory dead = _pair(x, y);
        // S is stuck: the live replica alone has no quorum
        (uint64 num,,) = reg.streamHead(S);
        uint32 a;
        while (_in(reg.electedLeader(S, num + 1, a), dead)) ++a;
        (,, uint64 ts) = reg.streamHead(S);
        vm.warp(uint256(ts) + uint256(a) * TIMEOUT);
        Rec memory r = _rec(S, num + 1, fullHead[S], a);
        Rec[] memory rs = _one(r);
        bytes32[] memory reveals = _assignReveals(rs);
        _signRec(rs[0], 1);
        vm.recordLogs();
        reg.commitMiniblocks(_encode(rs, reveals));
        uint8[] memory rr = _reasons(vm.getRecordedLogs());
        assertTrue(rr.length == 1 && rr[0] == 12, "no quorum");
        // the dead pair is skipped on the streams where each is alone among live replicas
        _chargeMisses(_streamWithout(x, y), dead, reg.DEAD_MISSES());
        _chargeMisses(_streamWithout(y, x), dead, reg.DEAD_MISSES());
        for (uint256 i; i < reg.DEAD_EPOCHS(); ++i) _nextEpoch();
        (,, bool dx) = reg.livenessOf(x);
        (,, bool dy) = reg.livenessOf(y);
        assertTrue(dx && dy, "both dead");
        vm.prank(address(0xA11));
        reg.replaceReplica(S, 0);
        vm.prank(address(0xB22));
        reg.replaceReplica(S, 1);
        address[] memory now_ = reg.replicasOf(S);
        assertFalse(_in(x, now_) || _in(y, now_), "dead replicas gone");
        assertTrue(now_[2] == reps[2], "the live one stays");
        _commitAt(S, 0, dead);
        (uint64 num2,,) = reg.streamHead(S);
        assertEq(num2, num + 1, "S commits again");
    }

    /// @dev No live candidate: the dead replica stays (NoReplacementCandidate).
    function test_replace_noCandidate() public {
        vm.warp(1_000_000);
        _deploy(3);
        delete nodes;
        for (uint256 i; i < 3; ++i) _addNode();
        _nextEpoch();
        _createStream(S);
        address x = reg.replicasOf(S)[0];
        vm.prank(operator);
        reg.requestLeave(x);
        _nextEpoch();
        vm.expectRevert(MiniblockRegistryV2.NoReplacementCandidate.selector);
        reg.replaceReplica(S, 0);
    }
}
