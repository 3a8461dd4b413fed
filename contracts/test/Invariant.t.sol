// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm, TestBase} from "./utils/Vm.sol";
import {RegistryFixture} from "./utils/Fixture.sol";
import {MiniblockRegistry} from "../src/MiniblockRegistry.sol";
import {Header} from "../src/lib/MiniblockTypes.sol";

/// @dev Drives the registry with valid and broken headers and keeps ghost state: the heads and header
///      hashes it saw committed, and whether each committed header had an elected, active leader and a
///      majority of distinct replica signatures (computed here from the spec's formula, not the contract).
contract RegistryHandler is RegistryFixture {
    uint256 internal constant STREAMS = 3;

    bytes32[] public streams;
    mapping(bytes32 => uint64) public ghostHead;
    mapping(bytes32 => mapping(uint64 => bytes32)) public ghostHash;

    uint256 public commitsSeen;
    uint256 public rejectionsSeen;
    uint256 public unexpectedCommits; // committed although the ghost model says it must be rejected
    uint256 public missedCommits; // rejected although the ghost model says it is valid
    uint256 public nonSequential; // a commit whose number was not the previous head + 1
    uint256 public overwrites; // a commit at a (stream, number) the ghost had already seen

    constructor() {
        _activeRegistry(5);
        for (uint256 i; i < STREAMS; ++i) {
            bytes32 sid = _sid(i);
            reg.createStream(sid);
            streams.push(sid);
            (, bytes32 gh,) = reg.streamHead(sid);
            ghostHash[sid][0] = gh;
        }
    }

    function registry() external view returns (MiniblockRegistry) {
        return reg;
    }

    function streamCount() external pure returns (uint256) {
        return STREAMS;
    }

    uint256 public badReplacements; // replaceReplica succeeded on an active replica that was not dead
    uint256 public replacements;

    /// @dev Anyone tries to replace a replica: it must succeed only for an inactive or dead one.
    function replace(uint256 streamSeed, uint256 index) external {
        bytes32 sid = streams[bound(streamSeed, 0, STREAMS - 1)];
        address[] memory reps = reg.replicasOf(sid);
        index = bound(index, 0, reps.length - 1);
        (,, bool dead) = reg.livenessOf(reps[index]);
        bool active = uint8(reg.getNode(reps[index]).status) == uint8(MiniblockRegistry.NodeStatus.Active)
            || uint8(reg.getNode(reps[index]).status) == uint8(MiniblockRegistry.NodeStatus.Leaving);
        try reg.replaceReplica(sid, index) {
            ++replacements;
            if (active && !dead) ++badReplacements;
        } catch {}
    }

    function nodeList() external view returns (address[] memory) {
        return nodes;
    }

    /// @dev Moves chain time forward (across attempts and epochs).
    function warp(uint256 dt) external {
        vm.warp(block.timestamp + bound(dt, 0, 2 * EPOCH));
    }

    /// @dev Commits one or two headers built from the fuzzed choices.
    function commit(uint256 streamSeed, uint256 attemptSeed, uint256 mutate, uint256 signerBits, bool twoHeaders)
        external
    {
        uint256 count = twoHeaders ? 2 : 1;
        Header[] memory hs = new Header[](count);
        bytes[][] memory ss = new bytes[][](count);
        bool[] memory expected = new bool[](count);
        for (uint256 k; k < count; ++k) {
            bytes32 sid = streams[(streamSeed % STREAMS + k) % STREAMS];
            (hs[k], ss[k]) = _build(sid, uint32(attemptSeed % 3), mutate >> (8 * k), signerBits >> (8 * k));
        }
        // the ghost verdict is taken before the call, one header at a time (headers of a batch go to
        // distinct streams and, when sharing a leader, the second's reveal is judged after the first)
        for (uint256 k; k < count; ++k) expected[k] = _ghostAccepts(hs[k], ss[k], k == 1 && expected[0] && hs[0].leader == hs[1].leader ? hs[0].randaoReveal : bytes32(0));
        vm.recordLogs();
        reg.commitMiniblocks(hs, ss);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            bytes32 t0 = logs[i].topics[0];
            if (t0 == MiniblockRegistry.MiniblockCommitted.selector) {
                bytes32 sid = logs[i].topics[1];
                uint64 number = uint64(uint256(logs[i].topics[2]));
                (bytes32 hh,,,) = abi.decode(logs[i].data, (bytes32, bytes32, bytes32, uint32));
                uint256 k = sid == hs[0].streamId ? 0 : 1;
                if (!expected[k]) ++unexpectedCommits;
                if (number != ghostHead[sid] + 1) ++nonSequential;
                if (ghostHash[sid][number] != bytes32(0)) ++overwrites;
                ghostHead[sid] = number;
                ghostHash[sid][number] = hh;
                _noteAccepted(hs[k]);
                ++commitsSeen;
            } else if (t0 == MiniblockRegistry.MiniblockRejected.selector) {
                bytes32 sid = logs[i].topics[1];
                uint256 k = sid == hs[0].streamId ? 0 : 1;
                if (expected[k]) ++missedCommits;
                ++rejectionsSeen;
            }
        }
    }

    function _build(bytes32 sid, uint32 attempt, uint256 mutate, uint256 signerBits)
        internal
        view
        returns (Header memory h, bytes[] memory sigs)
    {
        h = _headerAt(sid, attempt);
        address[] memory reps = reg.replicasOf(sid);
        uint256 m = mutate % 16; // 0 and 8..15: no mutation
        if (m == 1) {
            h.leader = reps[(signerBits >> 4) % reps.length]; // maybe not the elected one
            h.randaoReveal = _layer(h.leader, layerOf[h.leader] - 1);
        } else if (m == 2) {
            h.prevHash = keccak256(abi.encode(h.prevHash));
        } else if (m == 3) {
            h.number += 1;
        } else if (m == 4) {
            h.randaoReveal = keccak256(abi.encode(h.randaoReveal));
        } else if (m == 5) {
            h.epoch += 1;
        }
        // signers: the leader, then the replicas picked by signerBits (maybe a duplicate)
        uint256 n = 1;
        address[] memory who = new address[](reps.length + 2);
        who[0] = h.leader;
        for (uint256 i; i < reps.length; ++i) {
            if (reps[i] != h.leader && (signerBits >> i) & 1 == 1) who[n++] = reps[i];
        }
        if (m == 6 && n > 1) who[n++] = who[n - 1]; // duplicate attestation
        if (m == 7) who[n++] = nodes[(signerBits >> 5) % nodes.length]; // maybe a non-replica
        sigs = new bytes[](n);
        for (uint256 i; i < n; ++i) sigs[i] = _signH(who[i], h);
    }

    /// @dev The spec's acceptance rule, computed from first principles.
    function _ghostAccepts(Header memory h, bytes[] memory sigs, bytes32 priorReveal) internal view returns (bool) {
        (uint64 num, bytes32 hh, uint64 ts) = reg.streamHead(h.streamId);
        if (h.number != num + 1 || h.prevHash != hh) return false;
        uint256 e = (block.timestamp - reg.genesisTime()) / EPOCH;
        if (h.epoch != e) return false;
        if (block.timestamp < uint256(ts) + uint256(h.attempt) * TIMEOUT) return false;
        address[] memory reps = reg.replicasOf(h.streamId);
        uint256 r = reps.length;
        uint256 base = uint256(keccak256(abi.encode(reg.currentSeed(), h.streamId, h.number))) % r;
        if (h.leader != reps[(base + h.attempt) % r]) return false;
        // signatures are all well-formed here; count distinct replica signers, leader first
        bytes32 digest = reg.headerDigest(h);
        address[] memory seen = new address[](sigs.length);
        for (uint256 i; i < sigs.length; ++i) {
            address s = _recover(digest, sigs[i]);
            if (i == 0 && s != h.leader) return false;
            bool isRep;
            for (uint256 j; j < r; ++j) if (reps[j] == s) isRep = true;
            if (!isRep) return false;
            for (uint256 j; j < i; ++j) if (seen[j] == s) return false;
            seen[i] = s;
        }
        if (sigs.length < r / 2 + 1) return false;
        bytes32 commit_ = priorReveal != bytes32(0) ? priorReveal : reg.randaoCommitOf(h.leader);
        bytes32 x = h.randaoReveal;
        for (uint256 d = 1; d <= 8; ++d) {
            x = keccak256(abi.encode(x));
            if (x == commit_) return true;
        }
        return false;
    }

    function _recover(bytes32 digest, bytes memory sig) internal pure returns (address) {
        bytes32 r;
        bytes32 s;
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
        }
        return ecrecover(digest, uint8(sig[64]), r, s);
    }
}

contract RegistryInvariantTest is TestBase {
    RegistryHandler internal handler;
    MiniblockRegistry internal reg;

    function setUp() public {
        handler = new RegistryHandler();
        reg = handler.registry();
        targetContract(address(handler));
    }

    /// @dev The handler's valid path commits, and its broken paths are rejected (sanity of the harness).
    function test_handlerCommitsAndRejects() public {
        handler.commit(0, 0, 0, type(uint256).max, false); // valid, all replicas sign
        assertEq(handler.commitsSeen(), 1, "valid header committed");
        handler.commit(0, 0, 2, type(uint256).max, false); // bad parent
        handler.commit(0, 0, 0, 0, false); // leader alone: no quorum
        assertEq(handler.rejectionsSeen(), 2, "broken headers rejected");
        handler.commit(1, 0, 0, type(uint256).max, true); // two streams in one batch
        assertEq(handler.commitsSeen(), 3, "batch of two committed");
        assertEq(handler.unexpectedCommits() + handler.missedCommits(), 0, "ghost agrees");
    }

    /// @dev A stream's head only grows by one per commit, and equals what the ghost saw committed.
    function invariant_headGrowsByOne() public view {
        assertEq(handler.nonSequential(), 0, "non-sequential commit");
        for (uint256 i; i < handler.streamCount(); ++i) {
            bytes32 sid = handler.streams(i);
            (uint64 num,,) = reg.streamHead(sid);
            assertEq(num, handler.ghostHead(sid), "head = ghost head");
        }
    }

    /// @dev At most one header hash per (stream, number), never changed once set, none past the head.
    function invariant_headerHashesImmutable() public view {
        assertEq(handler.overwrites(), 0, "second commit at a number");
        for (uint256 i; i < handler.streamCount(); ++i) {
            bytes32 sid = handler.streams(i);
            (uint64 num, bytes32 head,) = reg.streamHead(sid);
            for (uint64 n; n <= num; ++n) {
                bytes32 h = reg.headerHashAt(sid, n);
                assertTrue(h != bytes32(0), "hash set");
                assertEq(h, handler.ghostHash(sid, n), "hash unchanged");
            }
            assertEq(head, handler.ghostHash(sid, num), "head hash");
            assertEq(reg.headerHashAt(sid, num + 1), bytes32(0), "nothing past the head");
        }
    }

    /// @dev A node's `refs` equals the (stream, position) pairs naming it, and the live count the
    ///      registered nodes with no leave scheduled (what MAX_NODES bounds; slot reuse relies on refs).
    function invariant_refsAndLiveCount() public view {
        address[] memory ns = handler.nodeList();
        uint256 live;
        for (uint256 j; j < ns.length; ++j) {
            uint256 refs;
            for (uint256 i; i < handler.streamCount(); ++i) {
                address[] memory reps = reg.replicasOf(handler.streams(i));
                for (uint256 k; k < reps.length; ++k) if (reps[k] == ns[j]) ++refs;
            }
            assertEq(reg.streamRefsOf(ns[j]), refs, "refs");
            if (reg.getNode(ns[j]).leaveEpoch == type(uint64).max) ++live;
        }
        assertEq(reg.liveNodeCount(), live, "live count");
    }

    /// @dev replaceReplica only ever replaced an inactive or dead replica.
    function invariant_onlyDeadOrInactiveReplaced() public view {
        assertEq(handler.badReplacements(), 0, "live replica replaced");
    }

    /// @dev Only an elected leader with a majority of distinct replicas commits; valid headers commit.
    function invariant_onlyElectedLeaderWithMajority() public view {
        assertEq(handler.unexpectedCommits(), 0, "commit the spec forbids");
        assertEq(handler.missedCommits(), 0, "valid header rejected");
    }
}
