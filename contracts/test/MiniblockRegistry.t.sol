// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Vm.sol";
import {RegistryFixture} from "./utils/Fixture.sol";
import {MiniblockRegistry} from "../src/MiniblockRegistry.sol";
import {Header, Event, MiniblockTypes} from "../src/lib/MiniblockTypes.sol";
import {Merkle} from "../src/lib/Merkle.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

contract MiniblockRegistryTest is RegistryFixture {
    bytes32 internal S;
    uint256 internal constant SECP_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    function setUp() public {
        _activeRegistry(5);
        S = _sid(1);
        reg.createStream(S);
    }

    // ------------------------------------------------------------ deployment

    function test_constructor_config() public view {
        assertEq(reg.epochLength(), EPOCH, "epochLength");
        assertEq(reg.leaderTimeout(), TIMEOUT, "leaderTimeout");
        assertEq(reg.replicationFactor(), 3, "rf");
        assertEq(reg.genesisTime(), 1_000_000, "genesisTime");
        assertEq(reg.owner(), address(this), "owner");
        assertEq(reg.MAX_NODES(), 256, "MAX_NODES");
        assertEq(reg.MAX_REPLICATION(), 16, "MAX_REPLICATION");
        assertEq(reg.MAX_BATCH(), 256, "MAX_BATCH");
        assertEq(reg.MAX_EVENTS_PER_BLOCK(), 15000, "MAX_EVENTS");
        assertEq(reg.MAX_REVEAL_SKIP(), 8, "MAX_REVEAL_SKIP");
    }

    function test_constructor_rejectsBadConfig() public {
        vm.expectRevert(MiniblockRegistry.InvalidConfig.selector);
        new MiniblockRegistry(0, 10, 3, 3, 2);
        vm.expectRevert(MiniblockRegistry.InvalidConfig.selector);
        new MiniblockRegistry(100, 0, 3, 3, 2);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.InvalidReplicationFactor.selector, uint8(0)));
        new MiniblockRegistry(100, 10, 0, 3, 2);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.InvalidReplicationFactor.selector, uint8(17)));
        new MiniblockRegistry(100, 10, 17, 3, 2);
    }

    function test_genesisSeed() public {
        vm.prevrandao(bytes32(uint256(0xC0FFEE)));
        MiniblockRegistry r2 = new MiniblockRegistry(EPOCH, TIMEOUT, 3, 3, 2);
        bytes32 expect = keccak256(abi.encode(block.chainid, address(r2), uint256(0xC0FFEE)));
        assertEq(r2.currentSeed(), expect, "genesis seed");
        assertEq(r2.randaoMix(), expect, "genesis mix");
        assertEq(r2.currentEpoch(), 0, "epoch 0");
    }

    function test_eip712Domain() public view {
        (bytes1 fields, string memory name, string memory version, uint256 chainId, address vc,,) = reg.eip712Domain();
        assertEq(uint8(fields), 0x0f, "fields");
        assertEq(name, "MiniblockRegistry", "name");
        assertEq(version, "1", "version");
        assertEq(chainId, block.chainid, "chainId");
        assertEq(vc, address(reg), "verifyingContract");
    }

    // -------------------------------------------------------------- ownership

    function test_ownership_twoStep() public {
        address newOwner = address(0xB0B);
        reg.transferOwnership(newOwner);
        assertEq(reg.owner(), address(this), "owner unchanged until accepted");
        assertEq(reg.pendingOwner(), newOwner, "pending");
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(0xBAD)));
        reg.acceptOwnership();
        vm.prank(newOwner);
        reg.acceptOwnership();
        assertEq(reg.owner(), newOwner, "new owner");
        assertEq(reg.pendingOwner(), address(0), "pending cleared");
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(this)));
        reg.allowOperator(address(0x1234));
        vm.prank(newOwner);
        reg.allowOperator(address(0x1234));
        assertTrue(reg.isOperator(address(0x1234)), "new owner governs");
    }

    function test_onlyOwner_governance() public {
        vm.startPrank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(0xBAD)));
        reg.allowOperator(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(0xBAD)));
        reg.revokeOperator(operator);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(0xBAD)));
        reg.setReplicationFactor(5);
        vm.stopPrank();
    }

    // -------------------------------------------------------------- operators

    function test_operators_allowRevoke() public {
        address op2 = address(0x0B2);
        assertFalse(reg.isOperator(op2), "not yet");
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.OperatorAllowed(op2);
        reg.allowOperator(op2);
        assertTrue(reg.isOperator(op2), "allowed");
        vm.prank(op2);
        reg.registerNode(address(0x9001), "u", bytes32(uint256(1)));
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.OperatorRevoked(op2);
        reg.revokeOperator(op2);
        assertFalse(reg.isOperator(op2), "revoked");
        vm.prank(op2);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NotOperator.selector, op2));
        reg.registerNode(address(0x9002), "u", bytes32(uint256(1)));
        // its node stays, and the revoked operator can still retire it
        assertEq(uint8(reg.getNode(address(0x9001)).status), uint8(MiniblockRegistry.NodeStatus.Pending), "node stays");
        vm.prank(op2);
        reg.requestLeave(address(0x9001));
    }

    function test_allowOperator_zero() public {
        vm.expectRevert(MiniblockRegistry.ZeroAddress.selector);
        reg.allowOperator(address(0));
    }

    function test_setReplicationFactor() public {
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.ReplicationFactorSet(5);
        reg.setReplicationFactor(5);
        assertEq(reg.replicationFactor(), 5, "rf");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.InvalidReplicationFactor.selector, uint8(0)));
        reg.setReplicationFactor(0);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.InvalidReplicationFactor.selector, uint8(17)));
        reg.setReplicationFactor(17);
        reg.createStream(_sid(77));
        assertEq(reg.replicasOf(_sid(77)).length, 5, "capped by active nodes");
        assertEq(reg.replicasOf(S).length, 3, "old stream unchanged");
    }

    // ------------------------------------------------------------- membership

    function test_registerNode_pendingThenActive() public {
        address n = address(0x7777);
        uint64 e = reg.currentEpoch();
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.NodeRegistered(n, operator, "http://x", e + 1);
        vm.prank(operator);
        reg.registerNode(n, "http://x", bytes32(uint256(42)));
        MiniblockRegistry.NodeInfo memory info = reg.getNode(n);
        assertEq(info.node, n, "node");
        assertEq(info.operator, operator, "operator");
        assertEq(info.url, "http://x", "url");
        assertEq(uint8(info.status), uint8(MiniblockRegistry.NodeStatus.Pending), "pending");
        assertEq(info.joinEpoch, e + 1, "joinEpoch");
        assertEq(info.leaveEpoch, type(uint64).max, "leaveEpoch");
        assertEq(info.randaoCommit, bytes32(uint256(42)), "commit");
        assertEq(reg.randaoCommitOf(n), bytes32(uint256(42)), "commitOf");
        assertEq(reg.nodeCount(), 6, "count");
        // not picked while pending
        reg.setReplicationFactor(16);
        reg.createStream(_sid(2));
        address[] memory reps = reg.replicasOf(_sid(2));
        assertEq(reps.length, 5, "only active nodes");
        for (uint256 i; i < reps.length; ++i) assertTrue(reps[i] != n, "pending node picked");
        _nextEpoch();
        assertEq(uint8(reg.getNode(n).status), uint8(MiniblockRegistry.NodeStatus.Active), "active");
        reg.createStream(_sid(3));
        assertEq(reg.replicasOf(_sid(3)).length, 6, "now picked");
    }

    function test_registerNode_reverts() public {
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NotOperator.selector, address(0xBAD)));
        reg.registerNode(address(0x1), "u", 0);
        vm.startPrank(operator);
        vm.expectRevert(MiniblockRegistry.ZeroAddress.selector);
        reg.registerNode(address(0), "u", 0);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeAlreadyRegistered.selector, nodes[0]));
        reg.registerNode(nodes[0], "u", 0);
        vm.stopPrank();
    }

    function test_registerNode_maxNodes() public {
        vm.startPrank(operator);
        for (uint256 i = nodes.length; i < 256; ++i) reg.registerNode(address(uint160(0x10000 + i)), "", 0);
        assertEq(reg.nodeCount(), 256, "full");
        vm.expectRevert(MiniblockRegistry.TooManyNodes.selector);
        reg.registerNode(address(0xFFFFF), "", 0);
        vm.stopPrank();
    }

    function test_setNodeUrl() public {
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.NodeUrlChanged(nodes[0], "http://new");
        vm.prank(operator);
        reg.setNodeUrl(nodes[0], "http://new");
        assertEq(reg.getNode(nodes[0]).url, "http://new", "url");
        vm.prank(nodes[0]);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NotNodeOperator.selector, nodes[0], nodes[0]));
        reg.setNodeUrl(nodes[0], "x");
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeNotRegistered.selector, address(0x55)));
        reg.setNodeUrl(address(0x55), "x");
    }

    function test_requestLeave_atBoundary() public {
        address n = nodes[0];
        uint64 e = reg.currentEpoch();
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.NodeLeaveRequested(n, e + 1);
        vm.prank(n);
        reg.requestLeave(n);
        assertEq(uint8(reg.getNode(n).status), uint8(MiniblockRegistry.NodeStatus.Leaving), "leaving");
        // still active for the rest of this epoch
        reg.setReplicationFactor(16);
        reg.createStream(_sid(2));
        assertEq(reg.replicasOf(_sid(2)).length, 5, "still picked");
        _nextEpoch();
        assertEq(uint8(reg.getNode(n).status), uint8(MiniblockRegistry.NodeStatus.Left), "left");
        reg.createStream(_sid(3));
        address[] memory reps = reg.replicasOf(_sid(3));
        assertEq(reps.length, 4, "not picked");
        for (uint256 i; i < reps.length; ++i) assertTrue(reps[i] != n, "left node picked");
    }

    function test_requestLeave_byOperator_andReverts() public {
        vm.prank(operator);
        reg.requestLeave(nodes[1]);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeAlreadyLeaving.selector, nodes[1]));
        reg.requestLeave(nodes[1]);
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NotNodeOrOperator.selector, address(0xBAD), nodes[2]));
        reg.requestLeave(nodes[2]);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.NodeNotRegistered.selector, address(0x55)));
        reg.requestLeave(address(0x55));
    }

    function test_requestLeave_whilePending_neverActive() public {
        address n = address(0x7777);
        vm.prank(operator);
        reg.registerNode(n, "", 0);
        vm.prank(n);
        reg.requestLeave(n);
        assertEq(uint8(reg.getNode(n).status), uint8(MiniblockRegistry.NodeStatus.Pending), "pending");
        _nextEpoch();
        assertEq(uint8(reg.getNode(n).status), uint8(MiniblockRegistry.NodeStatus.Left), "left at join");
    }

    function test_getNodes_paging() public view {
        MiniblockRegistry.NodeInfo[] memory a = reg.getNodes(0, 2);
        assertEq(a.length, 2, "page 1");
        assertEq(a[0].node, nodes[0], "n0");
        assertEq(a[1].node, nodes[1], "n1");
        a = reg.getNodes(3, 10);
        assertEq(a.length, 2, "tail");
        assertEq(a[1].node, nodes[4], "n4");
        assertEq(reg.getNodes(5, 10).length, 0, "past end");
        assertEq(reg.getNodes(0, 0).length, 0, "zero limit");
        assertEq(uint8(reg.getNode(address(0x55)).status), uint8(MiniblockRegistry.NodeStatus.None), "none");
        assertEq(uint8(reg.getNode(nodes[0]).status), uint8(MiniblockRegistry.NodeStatus.Active), "active");
    }

    // ----------------------------------------------------------------- epochs

    function test_epoch_viewsAnswerAsIfAdvanced() public {
        assertEq(reg.currentEpoch(), 1, "epoch 1");
        _advanceStream(S); // changes mix
        bytes32 mix = reg.randaoMix();
        assertTrue(mix != reg.currentSeed(), "mix moved");
        _nextEpoch();
        assertEq(reg.currentEpoch(), 2, "view epoch");
        assertEq(reg.currentSeed(), mix, "view seed = mix at boundary");
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.EpochAdvanced(2, mix);
        reg.advanceEpoch();
        assertEq(reg.currentSeed(), mix, "stored seed");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.EpochNotOver.selector, uint64(2)));
        reg.advanceEpoch();
    }

    function test_epoch_seedIsMixAtBoundary_lazy() public {
        _advanceStream(S);
        bytes32 mixAtBoundary = reg.randaoMix();
        _nextEpoch();
        // the first commit of the new epoch advances first: its election uses mixAtBoundary
        Header memory h = _header(S);
        assertEq(h.epoch, 2, "header epoch");
        _commitOk(h, _quorumSigs(h));
        assertEq(reg.currentSeed(), mixAtBoundary, "seed of epoch 2");
        assertTrue(reg.randaoMix() != mixAtBoundary, "mix moved on");
    }

    function test_epoch_skipped() public {
        bytes32 mix = reg.randaoMix();
        vm.warp(block.timestamp + 5 * EPOCH);
        assertEq(reg.currentEpoch(), 6, "epoch 6");
        reg.advanceEpoch();
        assertEq(reg.currentEpoch(), 6, "stored 6");
        assertEq(reg.currentSeed(), mix, "seed");
    }

    function test_epoch_lazyAdvanceOnMembershipCalls() public {
        vm.warp(block.timestamp + 3 * EPOCH); // nothing ran for three epochs
        address n = address(0x7777);
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.EpochAdvanced(4, reg.randaoMix());
        vm.prank(operator);
        reg.registerNode(n, "", 0);
        assertEq(reg.getNode(n).joinEpoch, 5, "joins after the real current epoch");
        vm.prank(nodes[0]);
        reg.requestLeave(nodes[0]);
        assertEq(reg.getNode(nodes[0]).leaveEpoch, 5, "leaves after the real current epoch");
    }

    function test_epoch_advanceEpochNotOver() public {
        // setUp's createStream advanced to epoch 1 already
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.EpochNotOver.selector, uint64(1)));
        reg.advanceEpoch();
    }

    // ---------------------------------------------------------------- streams

    function test_createStream_genesisAndEvents() public {
        bytes32 sid = _sid(9);
        vm.recordLogs();
        reg.createStream(sid);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        Header memory g;
        g.streamId = sid;
        g.epoch = 1;
        bytes32 gh = reg.hashHeader(g);
        (uint64 num, bytes32 hh, uint64 ts) = reg.streamHead(sid);
        assertEq(num, 0, "genesis number");
        assertEq(hh, gh, "genesis hash");
        assertEq(ts, block.timestamp, "created at");
        assertEq(reg.headerHashAt(sid, 0), gh, "hash at 0");
        assertTrue(reg.streamExists(sid), "exists");
        assertEq(reg.streamCount(), 2, "count");
        assertEq(reg.streamIdAt(1), sid, "id at 1");
        bool found;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistry.StreamCreated.selector) {
                assertEq(logs[i].topics[1], sid, "indexed id");
                (address creator, uint64 e, address[] memory reps, bytes32 gh2) =
                    abi.decode(logs[i].data, (address, uint64, address[], bytes32));
                assertEq(creator, address(this), "creator");
                assertEq(e, 1, "epoch");
                assertEq(reps.length, 3, "replicas");
                assertEq(gh2, gh, "genesis in event");
                found = true;
            }
        }
        assertTrue(found, "StreamCreated");
    }

    function test_createStream_reverts() public {
        vm.expectRevert(MiniblockRegistry.InvalidStreamId.selector);
        reg.createStream(bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.StreamAlreadyExists.selector, S));
        reg.createStream(S);
        MiniblockRegistry r2 = new MiniblockRegistry(EPOCH, TIMEOUT, 3, 3, 2);
        vm.expectRevert(MiniblockRegistry.NoActiveNodes.selector);
        r2.createStream(S);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.IndexOutOfRange.selector, uint256(1)));
        reg.streamIdAt(1);
    }

    function test_createStream_replicaChoiceMatchesSpec() public {
        for (uint256 k = 10; k < 30; ++k) {
            bytes32 sid = _sid(k);
            reg.createStream(sid);
            address[] memory reps = reg.replicasOf(sid);
            address[] memory expect = _referencePick(sid, 3);
            assertEq(reps.length, expect.length, "len");
            for (uint256 i; i < reps.length; ++i) {
                assertEq(reps[i], expect[i], "pick");
                for (uint256 j; j < i; ++j) assertTrue(reps[i] != reps[j], "distinct");
            }
        }
    }

    /// @dev docs/protocol.md: seeded partial Fisher-Yates over the active node list.
    function _referencePick(bytes32 sid, uint256 rf) internal view returns (address[] memory out) {
        uint256[] memory act = new uint256[](nodes.length);
        uint256 m;
        for (uint256 i; i < nodes.length; ++i) {
            if (reg.getNode(nodes[i]).status == MiniblockRegistry.NodeStatus.Active
                || reg.getNode(nodes[i]).status == MiniblockRegistry.NodeStatus.Leaving) act[m++] = i;
        }
        uint256 k = rf < m ? rf : m;
        bytes32 rnd = keccak256(abi.encode(reg.currentSeed(), sid));
        for (uint256 i; i < k; ++i) {
            uint256 j = i + uint256(keccak256(abi.encode(rnd, i))) % (m - i);
            (act[i], act[j]) = (act[j], act[i]);
        }
        out = new address[](k);
        for (uint256 i; i < k; ++i) out[i] = nodes[act[i]];
    }

    function test_electedLeader_formula() public view {
        address[] memory reps = reg.replicasOf(S);
        bytes32 seed = reg.currentSeed();
        for (uint64 n = 1; n < 20; ++n) {
            for (uint32 a; a < 4; ++a) {
                uint256 base = uint256(keccak256(abi.encode(seed, S, n))) % reps.length;
                assertEq(reg.electedLeader(S, n, a), reps[(base + a) % reps.length], "leader");
            }
        }
    }

    function test_views_unknownStream() public {
        // streamHead/replicasOf answer zero/empty; electedLeader/attemptOpensAt revert
        bytes32 x = _sid(404);
        assertFalse(reg.streamExists(x), "exists");
        assertEq(reg.headerHashAt(x, 0), bytes32(0), "no hash");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.UnknownStream.selector, x));
        reg.electedLeader(x, 1, 0);
        (uint64 num, bytes32 hh, uint64 ts) = reg.streamHead(x);
        assertEq(num, 0, "zero number");
        assertEq(hh, bytes32(0), "zero hash");
        assertEq(ts, 0, "zero time");
        assertEq(reg.replicasOf(x).length, 0, "no replicas");
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.UnknownStream.selector, x));
        reg.attemptOpensAt(x, 1);
    }

    function test_attemptOpensAt() public {
        (,, uint64 ts) = reg.streamHead(S);
        assertEq(reg.attemptOpensAt(S, 0), ts, "a0");
        assertEq(reg.attemptOpensAt(S, 3), ts + 3 * TIMEOUT, "a3");
        vm.warp(block.timestamp + 7);
        _advanceStream(S);
        assertEq(reg.attemptOpensAt(S, 1), block.timestamp + TIMEOUT, "after commit");
    }

    // ---------------------------------------------------------- replaceReplica

    function test_replaceReplica() public {
        address[] memory reps = reg.replicasOf(S);
        uint256 idx = 1;
        address gone = reps[idx];
        (uint256 misses, uint64 led,) = reg.livenessOf(gone);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.ReplicaNotDead.selector, gone, misses, led));
        reg.replaceReplica(S, idx);
        vm.prank(gone);
        reg.requestLeave(gone);
        _nextEpoch();
        // expected pick: active non-replicas in node-list order
        address[] memory cand = new address[](nodes.length);
        uint256 m;
        for (uint256 i; i < nodes.length; ++i) {
            bool isRep = nodes[i] == reps[0] || nodes[i] == reps[1] || nodes[i] == reps[2];
            if (!isRep) cand[m++] = nodes[i];
        }
        address expectNew = cand[uint256(keccak256(abi.encode(reg.currentSeed(), S, idx))) % m];
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.ReplicaReplaced(S, idx, gone, expectNew, 1);
        reg.replaceReplica(S, idx);
        address[] memory after_ = reg.replicasOf(S);
        assertEq(after_.length, 3, "len");
        assertEq(after_[0], reps[0], "r0 kept");
        assertEq(after_[1], expectNew, "r1 replaced");
        assertEq(after_[2], reps[2], "r2 kept");
        // the stream keeps going with the new set
        _advanceStream(S);
        _advanceStream(S);
    }

    function test_replaceReplica_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.UnknownStream.selector, _sid(404)));
        reg.replaceReplica(_sid(404), 0);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.InvalidReplicaIndex.selector, uint256(3)));
        reg.replaceReplica(S, 3);
    }

    function test_replaceReplica_noCandidate() public {
        MiniblockRegistry r2 = new MiniblockRegistry(EPOCH, TIMEOUT, 3, 3, 2);
        r2.allowOperator(operator);
        vm.startPrank(operator);
        for (uint256 i; i < 3; ++i) r2.registerNode(address(uint160(0x100 + i)), "", 0);
        vm.stopPrank();
        vm.warp(block.timestamp + EPOCH);
        r2.createStream(S);
        address gone = r2.replicasOf(S)[0];
        vm.prank(gone);
        r2.requestLeave(gone);
        vm.warp(block.timestamp + EPOCH);
        vm.expectRevert(MiniblockRegistry.NoReplacementCandidate.selector);
        r2.replaceReplica(S, 0);
    }

    // ------------------------------------------------------------ commit: ok

    function test_commit_accepted() public {
        Header memory h = _header(S);
        bytes32 hh = reg.hashHeader(h);
        bytes32 mix = reg.randaoMix();
        vm.expectEmit(true, true, true, true, address(reg));
        emit MiniblockRegistry.MiniblockCommitted(S, 1, hh, h.prevHash, h.eventsRoot, h.eventCount, h.leader);
        _commit1(h, _quorumSigs(h));
        (uint64 num, bytes32 head, uint64 ts) = reg.streamHead(S);
        assertEq(num, 1, "number");
        assertEq(head, hh, "hash");
        assertEq(ts, block.timestamp, "time");
        assertEq(reg.headerHashAt(S, 1), hh, "stored");
        assertEq(reg.randaoCommitOf(h.leader), h.randaoReveal, "commit := reveal");
        assertEq(reg.randaoMix(), keccak256(abi.encode(mix, h.randaoReveal)), "mix");
    }

    function test_commit_allReplicasAttest() public {
        Header memory h = _header(S);
        _commitOk(h, _sigs(h, 3));
    }

    function test_commit_chainInOneBatch() public {
        Header memory h1 = _header(S);
        Header memory h2;
        h2.streamId = S;
        h2.number = 2;
        h2.prevHash = reg.hashHeader(h1);
        h2.epoch = h1.epoch;
        h2.leader = reg.electedLeader(S, 2, 0);
        uint256 l = layerOf[h2.leader] - (h2.leader == h1.leader ? 2 : 1);
        h2.randaoReveal = _layer(h2.leader, l);
        Header[] memory hs = new Header[](2);
        hs[0] = h1;
        hs[1] = h2;
        bytes[][] memory ss = new bytes[][](2);
        ss[0] = _quorumSigs(h1);
        ss[1] = _quorumSigs(h2);
        reg.commitMiniblocks(hs, ss);
        (uint64 num, bytes32 head,) = reg.streamHead(S);
        assertEq(num, 2, "two blocks");
        assertEq(head, reg.hashHeader(h2), "head");
        assertEq(reg.headerHashAt(S, 1), reg.hashHeader(h1), "block 1");
    }

    function test_commit_badHeaderDoesNotUndoOthers_andRevealSkip() public {
        // three streams whose block 1 is led by the same node
        address L = reg.replicasOf(S)[0];
        bytes32[3] memory ids;
        uint256 found;
        for (uint256 k = 100; found < 3; ++k) {
            bytes32 sid = _sid(k);
            reg.createStream(sid);
            if (reg.electedLeader(sid, 1, 0) == L) ids[found++] = sid;
        }
        uint256 l = layerOf[L];
        Header[] memory hs = new Header[](3);
        bytes[][] memory ss = new bytes[][](3);
        for (uint256 i; i < 3; ++i) {
            hs[i] = _header(ids[i]);
            hs[i].randaoReveal = _layer(L, l - 1 - i);
            ss[i] = _quorumSigs(hs[i]);
        }
        ss[1] = _sigs(hs[1], 1); // no quorum
        vm.recordLogs();
        reg.commitMiniblocks(hs, ss);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        uint256 committed;
        uint256 rejected;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistry.MiniblockCommitted.selector) ++committed;
            if (logs[i].topics[0] == MiniblockRegistry.MiniblockRejected.selector) {
                ++rejected;
                assertEq(logs[i].topics[1], ids[1], "rejected the middle one");
            }
        }
        assertEq(committed, 2, "two committed");
        assertEq(rejected, 1, "one rejected");
        (uint64 n0,,) = reg.streamHead(ids[0]);
        (uint64 n1,,) = reg.streamHead(ids[1]);
        (uint64 n2,,) = reg.streamHead(ids[2]);
        assertEq(n0 + n1 + n2, 2, "heads");
        assertEq(reg.randaoCommitOf(L), _layer(L, l - 3), "skip of 2 accepted");
    }

    function test_commit_revealSkipLimits() public {
        Header memory h = _header(S);
        h.randaoReveal = _layer(h.leader, layerOf[h.leader] - 9);
        _expectRejected(h, _quorumSigs(h), 13);
        h.randaoReveal = _layer(h.leader, layerOf[h.leader] - 8);
        _commitOk(h, _quorumSigs(h));
    }

    function test_commit_maxEventsAccepted() public {
        Header memory h = _header(S);
        h.eventCount = 15000;
        _commitOk(h, _quorumSigs(h));
    }

    function test_commit_nextAttemptAfterTimeout() public {
        Header memory h = _headerAt(S, 1);
        vm.warp(block.timestamp + TIMEOUT - 1);
        _expectRejected(h, _quorumSigs(h), 5);
        vm.warp(block.timestamp + 1);
        assertTrue(h.leader != reg.electedLeader(S, 1, 0), "other leader");
        _commitOk(h, _quorumSigs(h));
    }

    // ------------------------------------------------------ commit: reverts

    function test_commit_revertsOnMalformedBatch() public {
        Header[] memory hs = new Header[](0);
        bytes[][] memory ss = new bytes[][](0);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.BadBatchSize.selector, uint256(0)));
        reg.commitMiniblocks(hs, ss);
        hs = new Header[](257);
        ss = new bytes[][](257);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.BadBatchSize.selector, uint256(257)));
        reg.commitMiniblocks(hs, ss);
        hs = new Header[](2);
        ss = new bytes[][](1);
        vm.expectRevert(abi.encodeWithSelector(MiniblockRegistry.LengthMismatch.selector, uint256(2), uint256(1)));
        reg.commitMiniblocks(hs, ss);
    }

    function test_commit_revertsOnDirtyEncoding() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        Header[] memory hs = new Header[](1);
        hs[0] = h;
        bytes[][] memory ss = new bytes[][](1);
        ss[0] = sigs;
        bytes memory cd = abi.encodeCall(MiniblockRegistry.commitMiniblocks, (hs, ss));
        // layout: selector, two offsets, headers length, then the first header's words; number is word 1
        uint256 numberAt = 4 + 32 * 3 + 32;
        cd[numberAt] = 0x01; // a high bit in a uint64 field
        (bool ok,) = address(reg).call(cd);
        assertFalse(ok, "dirty uint64 accepted");
        (uint64 num,,) = reg.streamHead(S);
        assertEq(num, 0, "nothing committed");
        _commitOk(h, sigs); // the canonical encoding goes through
    }

    // --------------------------------------------------- commit: rejections

    function test_reject_1_unknownStream() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        h.streamId = _sid(404);
        _expectRejected(h, sigs, 1);
    }

    function test_reject_2_futureNumber() public {
        Header memory h = _header(S);
        h.number = 2;
        _expectRejected(h, _quorumSigs(h), 2);
    }

    function test_reject_2_duplicateNumber() public {
        Header memory h = _advanceStream(S);
        h.eventsRoot = bytes32(uint256(1)); // another block 1
        _expectRejected(h, _quorumSigs(h), 2);
        assertTrue(reg.headerHashAt(S, 1) != reg.hashHeader(h), "first one stays");
    }

    function test_reject_3_staleParent() public {
        Header memory g = _header(S);
        _advanceStream(S);
        Header memory h = _header(S);
        h.prevHash = g.prevHash; // genesis, not block 1
        _expectRejected(h, _quorumSigs(h), 3);
        h.prevHash = bytes32(uint256(123));
        _expectRejected(h, _quorumSigs(h), 3);
    }

    function test_reject_4_wrongEpoch() public {
        Header memory h = _header(S);
        h.epoch = 0;
        _expectRejected(h, _quorumSigs(h), 4);
        h.epoch = 2;
        _expectRejected(h, _quorumSigs(h), 4);
        h = _header(S);
        _nextEpoch();
        _expectRejected(h, _quorumSigs(h), 4); // built in epoch 1, sent in epoch 2
    }

    function test_reject_5_attemptNotOpen() public {
        Header memory h = _headerAt(S, 2);
        vm.warp(block.timestamp + 2 * TIMEOUT - 1);
        _expectRejected(h, _quorumSigs(h), 5);
    }

    function test_reject_6_notElectedLeader() public {
        Header memory h = _header(S);
        address other = _replicaOtherThan(S, h.leader);
        h.leader = other;
        h.randaoReveal = _layer(other, layerOf[other] - 1);
        _expectRejected(h, _quorumSigs(h), 6);
        // a non-replica and an unregistered address as leader
        h.leader = _nonReplica(S);
        _expectRejected(h, _quorumSigs(h), 6);
    }

    function test_reject_6_unregisteredLeader() public {
        Header memory h = _header(S);
        uint256 pk = 0xDEAD;
        h.leader = vm.addr(pk);
        bytes[] memory sigs = new bytes[](1);
        sigs[0] = _sign(pk, reg.headerDigest(h));
        _expectRejected(h, sigs, 6);
    }

    function test_reject_7_badLeaderSignature() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        sigs[0] = _signH(_replicaOtherThan(S, h.leader), h); // signed by someone else
        _expectRejected(h, sigs, 7);
        sigs[0] = hex"1234"; // malformed
        _expectRejected(h, sigs, 7);
        _expectRejected(h, new bytes[](0), 7); // none
        sigs = _quorumSigs(h);
        sigs[0] = _highS(sigs[0]);
        _expectRejected(h, sigs, 7);
    }

    function test_reject_8_badAttestation_short() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        bytes memory s = sigs[1];
        bytes memory short = new bytes(64);
        for (uint256 i; i < 64; ++i) short[i] = s[i];
        sigs[1] = short;
        _expectRejected(h, sigs, 8);
        sigs[1] = abi.encodePacked(s, bytes1(0));
        _expectRejected(h, sigs, 8);
        sigs[1] = "";
        _expectRejected(h, sigs, 8);
    }

    function test_reject_8_badAttestation_highS() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        sigs[1] = _highS(sigs[1]);
        _expectRejected(h, sigs, 8);
    }

    function test_reject_8_badAttestation_badV() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        bytes memory s = sigs[1];
        s[64] = bytes1(uint8(29));
        _expectRejected(h, sigs, 8);
        s[64] = bytes1(uint8(0));
        _expectRejected(h, sigs, 8);
        sigs[1] = abi.encodePacked(bytes32(0), bytes32(uint256(1)), uint8(27)); // r = 0: no signer
        _expectRejected(h, sigs, 8);
    }

    function _highS(bytes memory sig) internal pure returns (bytes memory) {
        bytes32 r;
        bytes32 s;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
        }
        uint8 v = uint8(sig[64]);
        return abi.encodePacked(r, bytes32(SECP_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
    }

    function test_reject_9_notReplica() public {
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        sigs[1] = _signH(_nonReplica(S), h); // active node, not a replica of S
        _expectRejected(h, sigs, 9);
        sigs[1] = _sign(0xDEAD, reg.headerDigest(h)); // not a node at all
        _expectRejected(h, sigs, 9);
    }

    function test_reject_9_otherChainId() public {
        Header memory h = _header(S);
        bytes32 ds = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("MiniblockRegistry"),
                keccak256("1"),
                block.chainid + 1,
                address(reg)
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", ds, reg.hashHeader(h)));
        bytes[] memory sigs = _quorumSigs(h);
        address att = _replicaOtherThan(S, h.leader);
        sigs[1] = _sign(pkOf[att], digest);
        _expectRejected(h, sigs, 9);
        sigs[1] = _signH(att, h);
        sigs[0] = _sign(pkOf[h.leader], digest);
        _expectRejected(h, sigs, 7);
        // sanity: the same construction with the real chain id is the contract's digest
        bytes32 ds2 = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("MiniblockRegistry"),
                keccak256("1"),
                block.chainid,
                address(reg)
            )
        );
        assertEq(keccak256(abi.encodePacked("\x19\x01", ds2, reg.hashHeader(h))), reg.headerDigest(h), "digest");
    }

    function test_reject_9_otherVerifyingContract() public {
        MiniblockRegistry other = new MiniblockRegistry(EPOCH, TIMEOUT, 3, 3, 2);
        Header memory h = _header(S);
        bytes32 digest = other.headerDigest(h);
        bytes[] memory sigs = _quorumSigs(h);
        sigs[1] = _sign(pkOf[_replicaOtherThan(S, h.leader)], digest);
        _expectRejected(h, sigs, 9);
        sigs = _quorumSigs(h);
        sigs[0] = _sign(pkOf[h.leader], digest);
        _expectRejected(h, sigs, 7);
    }

    function test_reject_10_duplicateAttester() public {
        Header memory h = _header(S);
        bytes[] memory sigs = new bytes[](3);
        address other = _replicaOtherThan(S, h.leader);
        sigs[0] = _signH(h.leader, h);
        sigs[1] = _signH(other, h);
        sigs[2] = _signH(other, h);
        _expectRejected(h, sigs, 10);
        sigs[1] = _signH(h.leader, h); // the leader attesting again
        _expectRejected(h, sigs, 10);
    }

    function test_reject_11_inactiveAttester() public {
        address[] memory reps = reg.replicasOf(S);
        address gone = reps[2];
        vm.prank(gone);
        reg.requestLeave(gone);
        _nextEpoch();
        uint32 a;
        while (reg.electedLeader(S, 1, a) == gone) ++a;
        vm.warp(block.timestamp + uint256(a) * TIMEOUT);
        Header memory h = _headerAt(S, a);
        bytes[] memory sigs = new bytes[](2);
        sigs[0] = _signH(h.leader, h);
        sigs[1] = _signH(gone, h);
        _expectRejected(h, sigs, 11);
        // the two active replicas still make a quorum of 3
        _commitOk(h, _activePair(h, gone));
    }

    function _activePair(Header memory h, address gone) internal view returns (bytes[] memory sigs) {
        address[] memory reps = reg.replicasOf(h.streamId);
        sigs = new bytes[](2);
        sigs[0] = _signH(h.leader, h);
        for (uint256 i; i < reps.length; ++i) {
            if (reps[i] != gone && reps[i] != h.leader) sigs[1] = _signH(reps[i], h);
        }
    }

    function test_reject_11_inactiveLeader() public {
        address[] memory reps = reg.replicasOf(S);
        address gone = reps[0];
        vm.prank(gone);
        reg.requestLeave(gone);
        _nextEpoch();
        uint32 a;
        while (reg.electedLeader(S, 1, a) != gone) ++a;
        vm.warp(block.timestamp + uint256(a) * TIMEOUT);
        Header memory h = _headerAt(S, a);
        _expectRejected(h, _sigs(h, 3), 11);
    }

    function test_reject_12_noQuorum() public {
        Header memory h = _header(S);
        _expectRejected(h, _sigs(h, 1), 12);
    }

    function test_reject_13_badReveal() public {
        Header memory h = _header(S);
        h.randaoReveal = reg.randaoCommitOf(h.leader); // depth 0
        _expectRejected(h, _quorumSigs(h), 13);
        h.randaoReveal = bytes32(uint256(0xBEEF));
        _expectRejected(h, _quorumSigs(h), 13);
        // another node's onion layer
        address other = _replicaOtherThan(S, h.leader);
        h.randaoReveal = _layer(other, layerOf[other] - 1);
        _expectRejected(h, _quorumSigs(h), 13);
    }

    function test_reject_14_tooManyEvents() public {
        Header memory h = _header(S);
        h.eventCount = 15001;
        _expectRejected(h, _quorumSigs(h), 14);
    }

    function test_reject_checkOrder() public {
        // wrong epoch and no quorum: the earlier check (epoch) wins
        Header memory h = _header(S);
        h.epoch = 7;
        _expectRejected(h, _sigs(h, 1), 4);
        // bad parent and bad reveal: parent wins
        h = _header(S);
        h.prevHash = bytes32(uint256(5));
        h.randaoReveal = bytes32(0);
        _expectRejected(h, _quorumSigs(h), 3);
    }

    // ------------------------------------------------------ replication > 7

    function test_wideStream_16Replicas() public {
        vm.warp(2_000_000);
        _deploy(16);
        delete nodes;
        for (uint256 i; i < 20; ++i) {
            uint256 pk = 0xF00D + i;
            address n = vm.addr(pk);
            pkOf[n] = pk;
            nodes.push(n);
            layerOf[n] = ONION;
            vm.prank(operator);
            reg.registerNode(n, "", _layer(n, ONION));
        }
        _nextEpoch();
        bytes32 sid = _sid(5);
        reg.createStream(sid);
        address[] memory reps = reg.replicasOf(sid);
        assertEq(reps.length, 16, "16 replicas");
        Header memory h = _header(sid);
        _expectRejected(h, _sigs(h, 8), 12);
        _commitOk(h, _sigs(h, 9));
        h = _header(sid);
        _commitOk(h, _sigs(h, 16));
        // a high-position replica leaves and is replaced
        address gone = reps[12];
        vm.prank(gone);
        reg.requestLeave(gone);
        _nextEpoch();
        reg.replaceReplica(sid, 12);
        address[] memory after_ = reg.replicasOf(sid);
        assertTrue(after_[12] != gone, "replaced");
        for (uint256 i; i < 16; ++i) if (i != 12) assertEq(after_[i], reps[i], "others kept");
        h = _header(sid);
        _commitOk(h, _sigs(h, 16));
    }

    // ---------------------------------------------------- hashing & Merkle

    function test_hashEvent_andDigest() public view {
        Event memory e = Event({streamId: S, author: address(0xA), nonce: 7, kind: 1, payload: "hello"});
        bytes32 th = keccak256("Event(bytes32 streamId,address author,uint64 nonce,uint8 kind,bytes payload)");
        bytes32 expect = keccak256(abi.encode(th, S, address(0xA), uint64(7), uint8(1), keccak256("hello")));
        assertEq(reg.hashEvent(e), expect, "hashEvent");
        bytes32 ds = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("MiniblockRegistry"),
                keccak256("1"),
                block.chainid,
                address(reg)
            )
        );
        assertEq(reg.eventDigest(e), keccak256(abi.encodePacked("\x19\x01", ds, expect)), "eventDigest");
    }

    function test_hashHeader_manual() public view {
        Header memory h = _header(S);
        bytes32 th = keccak256(
            "Header(bytes32 streamId,uint64 number,bytes32 prevHash,bytes32 eventsRoot,uint32 eventCount,uint64 epoch,uint32 attempt,address leader,bytes32 randaoReveal,bytes32 stateRoot)"
        );
        bytes memory enc = abi.encode(th, h.streamId, h.number, h.prevHash, h.eventsRoot, h.eventCount, h.epoch);
        enc = abi.encodePacked(enc, abi.encode(h.attempt, h.leader, h.randaoReveal, h.stateRoot));
        assertEq(reg.hashHeader(h), keccak256(enc), "hashHeader");
    }

    function test_merkle_knownShapes() public view {
        bytes32[] memory e = new bytes32[](5);
        for (uint256 i; i < 5; ++i) e[i] = keccak256(abi.encode(i));
        bytes32[] memory l = new bytes32[](5);
        for (uint256 i; i < 5; ++i) l[i] = keccak256(abi.encodePacked(bytes1(0x00), e[i]));
        bytes32 n01 = keccak256(abi.encodePacked(bytes1(0x01), l[0], l[1]));
        bytes32 n23 = keccak256(abi.encodePacked(bytes1(0x01), l[2], l[3]));
        bytes32 n0123 = keccak256(abi.encodePacked(bytes1(0x01), n01, n23));
        bytes32 root5 = keccak256(abi.encodePacked(bytes1(0x01), n0123, l[4]));
        assertEq(reg.merkleRoot(e), root5, "root of 5");
        bytes32[] memory three = new bytes32[](3);
        three[0] = e[0];
        three[1] = e[1];
        three[2] = e[2];
        assertEq(reg.merkleRoot(three), keccak256(abi.encodePacked(bytes1(0x01), n01, l[2])), "root of 3");
        bytes32[] memory one = new bytes32[](1);
        one[0] = e[0];
        assertEq(reg.merkleRoot(one), l[0], "root of 1");
        assertEq(reg.merkleRoot(new bytes32[](0)), bytes32(0), "root of 0");
        // proof of index 4 of 5: promoted twice, one sibling
        bytes32[] memory p = new bytes32[](1);
        p[0] = n0123;
        assertTrue(reg.verifyMerkleProof(root5, 5, 4, e[4], p), "proof 4/5");
        p = new bytes32[](3);
        p[0] = l[3];
        p[1] = n01;
        p[2] = l[4];
        assertTrue(reg.verifyMerkleProof(root5, 5, 2, e[2], p), "proof 2/5");
        assertFalse(reg.verifyMerkleProof(root5, 5, 3, e[2], p), "wrong index");
        assertFalse(reg.verifyMerkleProof(root5, 5, 5, e[2], p), "index out of range");
        assertFalse(reg.verifyMerkleProof(root5, 4, 2, e[2], p), "wrong count");
        assertFalse(reg.verifyMerkleProof(root5, 5, 2, e[2], new bytes32[](0)), "short proof");
    }

    function test_verifyInclusion() public {
        bytes32[] memory e = new bytes32[](7);
        for (uint256 i; i < 7; ++i) e[i] = keccak256(abi.encode("ev", i));
        Header memory h = _header(S);
        h.eventsRoot = reg.merkleRoot(e);
        h.eventCount = 7;
        bytes32[] memory p3 = Merkle.proof(e, 3);
        assertFalse(reg.verifyInclusion(h, p3, 3, e[3]), "not committed yet");
        _commitOk(h, _quorumSigs(h));
        for (uint256 i; i < 7; ++i) {
            assertTrue(reg.verifyInclusion(h, Merkle.proof(e, i), i, e[i]), "included");
        }
        assertFalse(reg.verifyInclusion(h, p3, 3, e[4]), "other event");
        assertFalse(reg.verifyInclusion(h, p3, 4, e[3]), "other index");
        assertFalse(reg.verifyInclusion(h, p3, 7, e[3]), "index >= eventCount");
        Header memory forged = h;
        forged.stateRoot = bytes32(uint256(1));
        assertFalse(reg.verifyInclusion(forged, p3, 3, e[3]), "uncommitted header");
        // genesis has no events
        Header memory g;
        g.streamId = S;
        g.epoch = 1;
        assertFalse(reg.verifyInclusion(g, new bytes32[](0), 0, bytes32(0)), "genesis");
    }
}
