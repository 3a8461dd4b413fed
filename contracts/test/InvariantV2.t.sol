// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm, TestBase} from "./utils/Vm.sol";
import {RegistryV2Fixture} from "./utils/FixtureV2.sol";
import {MiniblockRegistryV2} from "../src/MiniblockRegistryV2.sol";
import {Header} from "../src/lib/MiniblockTypes.sol";
import {HistoryProof} from "../src/lib/HistoryProof.sol";

/// @dev Drives registry v2 with valid and broken packed batches and keeps ghost state: the heads and
///      full header hashes it saw committed, and whether each committed header had an elected, active
///      leader, its signature and a majority of distinct replica signatures, the right parent, epoch,
///      attempt window and reveal (computed here from the spec's formulas, not from the contract).
contract RegistryV2Handler is RegistryV2Fixture {
    uint256 internal constant STREAMS = 3;

    bytes32[] public streams;
    mapping(bytes32 => uint64) public ghostHead;
    mapping(bytes32 => mapping(uint64 => bytes32)) public ghostHash;

    /// @dev Every committed header with where it was committed (commit index, position).
    Header[] internal committed;
    uint256[] internal committedAt;
    /// @dev Some rejected (never committed) headers.
    Header[] internal rejected;

    uint256 public commitsSeen;
    uint256 public rejectionsSeen;
    uint256 public unexpectedCommits; // committed although the ghost model says it must be rejected
    uint256 public missedCommits; // rejected although the ghost model says it is valid
    uint256 public nonSequential; // a commit whose number was not the previous head + 1
    uint256 public overwrites; // a commit at a (stream, number) the ghost had already seen

    constructor() {
        _activeRegistry(5, 3);
        for (uint256 i; i < STREAMS; ++i) {
            bytes32 sid = _sid(i);
            _createStream(sid);
            streams.push(sid);
            ghostHash[sid][0] = fullHead[sid];
        }
    }

    function registry() external view returns (MiniblockRegistryV2) {
        return reg;
    }

    function streamCount() external pure returns (uint256) {
        return STREAMS;
    }

    function committedCount() external view returns (uint256) {
        return committed.length;
    }

    function rejectedCount() external view returns (uint256) {
        return rejected.length;
    }

    /// @dev Committed header i and its history proof (now).
    function committedProof(uint256 i) external view returns (Header memory h, HistoryProof memory hp) {
        h = committed[i];
        hp = _historyProof(committedAt[i] >> 32, committedAt[i] & 0xffffffff);
    }

    /// @dev Rejected header i with the proof of committed header j (same commit slot reused).
    function rejectedWithProof(uint256 i, uint256 j) external view returns (Header memory h, HistoryProof memory hp) {
        h = rejected[i];
        hp = _historyProof(committedAt[j] >> 32, committedAt[j] & 0xffffffff);
    }

    /// @dev Moves chain time forward (across attempts and epochs).
    function warp(uint256 dt) external {
        vm.warp(block.timestamp + bound(dt, 0, 2 * EPOCH));
    }

    /// @dev Commits one or two records built from the fuzzed choices.
    function commit(uint256 streamSeed, uint256 attemptSeed, uint256 mutate, uint256 signerBits, bool twoHeaders)
        external
    {
        uint256 count = twoHeaders ? 2 : 1;
        Rec[] memory rs = new Rec[](count);
        for (uint256 k; k < count; ++k) {
            bytes32 sid = streams[(streamSeed % STREAMS + k) % STREAMS];
            (uint64 num,,) = reg.streamHead(sid);
            rs[k] = _rec(sid, num + 1, fullHead[sid], uint32(attemptSeed % 3));
            if ((mutate >> (8 * k)) % 16 == 1) {
                // maybe not the elected leader (before the reveals: only elected leaders get one)
                address[] memory reps = reg.replicasOf(sid);
                rs[k].leaderPos = uint8((signerBits >> (8 * k + 4)) % reps.length);
                rs[k].h.leader = reps[rs[k].leaderPos];
            } else if ((mutate >> (8 * k)) % 16 == 4) {
                rs[k].h.number += 1; // the contract elects by the sent number
            }
        }
        bytes32[] memory reveals = _assignReveals(rs);
        uint8[] memory mut = new uint8[](count);
        for (uint256 k; k < count; ++k) mut[k] = _mutateAndSign(rs[k], mutate >> (8 * k), signerBits >> (8 * k));
        bytes memory batch = _encodeWith(rs, reveals, mut);
        // the ghost verdict is taken before the call, one record at a time
        bool[] memory expected = new bool[](count);
        for (uint256 k; k < count; ++k) {
            bytes32 prior;
            if (k == 1 && expected[0] && rs[0].h.leader == rs[1].h.leader) prior = rs[0].h.randaoReveal;
            expected[k] = _ghostAccepts(rs[k], mut[k], prior);
        }
        vm.recordLogs();
        reg.commitMiniblocks(batch);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        _noteHistory(rs, logs);
        uint256 bits;
        bool any;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistryV2.MiniblocksCommitted.selector) {
                (bits,) = _decodeCommitted(logs[i].data);
                any = true;
            }
        }
        uint256 pos;
        for (uint256 k; k < count; ++k) {
            bool accepted = any && (bits >> k) & 1 == 1;
            if (accepted) {
                Header memory h = rs[k].h;
                if (!expected[k]) ++unexpectedCommits;
                if (h.number != ghostHead[h.streamId] + 1) ++nonSequential;
                if (ghostHash[h.streamId][h.number] != bytes32(0)) ++overwrites;
                ghostHead[h.streamId] = h.number;
                ghostHash[h.streamId][h.number] = reg.hashHeader(h);
                committed.push(h);
                committedAt.push(((commitRoots.length - 1) << 32) | pos++);
                ++commitsSeen;
            } else {
                if (expected[k]) ++missedCommits;
                if (rejected.length < 32) rejected.push(rs[k].h);
                ++rejectionsSeen;
            }
        }
        for (uint256 k; k < count; ++k) {
            if (any && (bits >> k) & 1 == 1) _noteAccepted(_one(rs[k]));
        }
    }

    /// @dev Applies mutation `mutate % 16` (0 and 9..15: none; 1 and 4, which change the election, are
    ///      applied before the reveals are assigned) and signs: the leader, then the replicas picked by
    ///      `signerBits`. Returns the mutation.
    function _mutateAndSign(Rec memory r, uint256 mutate, uint256 signerBits) internal view returns (uint8 m) {
        m = uint8(mutate % 16);
        address[] memory reps = reg.replicasOf(r.h.streamId);
        if (m == 2) {
            r.h.prevHash = keccak256(abi.encode(r.h.prevHash)); // another parent, bytes 18..19 differ
        } else if (m == 3) {
            r.h.prevHash ^= bytes32(uint256(1) << 200); // another parent differing in a bit the slot keeps
        } else if (m == 5) {
            r.h.epoch += 1;
        } else if (m == 6) {
            r.h.randaoReveal = keccak256(abi.encode(r.h.randaoReveal)); // signed, but not the table's
        }
        bytes32 d = reg.headerDigest(r.h);
        uint16 bits;
        uint256 n;
        for (uint256 i; i < reps.length; ++i) {
            if (i != r.leaderPos && (signerBits >> i) & 1 == 1) {
                bits |= uint16(1 << i);
                ++n;
            }
        }
        r.attesters = bits;
        r.sigs = new bytes[](1 + n);
        r.sigs[0] = _compact(pkOf[r.h.leader], d);
        uint256 c = 1;
        for (uint256 i; i < reps.length; ++i) if ((bits >> i) & 1 == 1) r.sigs[c++] = _compact(pkOf[reps[i]], d);
        if (m == 7 && n > 0) r.sigs[n] = r.sigs[n == 1 ? 0 : 1]; // a duplicated signature
        if (m == 8 && n > 0) r.sigs[1] = _compact(pkOf[_nonReplica(r.h.streamId)], d); // a non-replica's
    }

    /// @dev Packs; the randaoReveal of mutation 6 is not in the table (the table's entry is sent).
    function _encodeWith(Rec[] memory rs, bytes32[] memory reveals, uint8[] memory) internal pure returns (bytes memory) {
        return _encode(rs, reveals);
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

    /// @dev The spec's acceptance rule, computed from first principles (the mutations that make a
    ///      signature not match what the contract hashes are judged by that rule too).
    function _ghostAccepts(Rec memory r, uint8 m, bytes32 priorReveal) internal view returns (bool) {
        Header memory h = r.h;
        bytes32 sid = h.streamId;
        (uint64 num,, uint64 ts) = reg.streamHead(sid);
        // the parent rule: prevHash's top 160 bits are the head's (its low 96 bits are bound by the
        // signatures only; docs/protocol.md "Version 2", soundness notes)
        if (h.number != num + 1 || bytes20(h.prevHash) != bytes20(fullHead[sid])) return false;
        uint256 e = (block.timestamp - reg.genesisTime()) / EPOCH;
        if (h.epoch != e) return false;
        if (block.timestamp < uint256(ts) + uint256(h.attempt) * TIMEOUT) return false;
        address[] memory reps = reg.replicasOf(sid);
        uint256 rr = reps.length;
        uint256 pos = (uint256(keccak256(abi.encode(reg.currentSeed(), sid, h.number))) % rr + h.attempt) % rr;
        if (r.leaderPos != pos || h.leader != reps[pos]) return false;
        if (m == 6 || m == 7 || m == 8) return false; // reveal not the table's / duplicate / non-replica signature
        if (1 + _popcount(r.attesters) < rr / 2 + 1) return false;
        bytes32 commit_ = priorReveal != bytes32(0) ? priorReveal : reg.randaoCommitOf(h.leader);
        if (priorReveal != bytes32(0)) return h.randaoReveal == priorReveal;
        bytes32 x = h.randaoReveal;
        for (uint256 d = 1; d <= 8; ++d) {
            x = keccak256(abi.encode(x));
            if (bytes24(x) == bytes24(commit_)) return true; // the registry keeps the top 192 bits
        }
        return false;
    }

    function _popcount(uint256 x) internal pure returns (uint256 c) {
        for (; x != 0; x &= x - 1) ++c;
    }
}

contract RegistryV2InvariantTest is TestBase {
    RegistryV2Handler internal handler;
    MiniblockRegistryV2 internal reg;

    function setUp() public {
        handler = new RegistryV2Handler();
        reg = handler.registry();
        targetContract(address(handler));
    }

    /// @dev The handler's valid path commits, and its broken paths are rejected (sanity of the harness).
    function test_handlerCommitsAndRejects() public {
        handler.commit(0, 0, 0, type(uint256).max, false); // valid, all replicas sign
        assertEq(handler.commitsSeen(), 1, "valid header committed");
        for (uint256 m = 1; m <= 8; ++m) {
            if (m == 1) continue; // may pick the elected leader
            handler.commit(0, 0, m, type(uint256).max, false);
        }
        handler.commit(0, 0, 0, 0, false); // leader alone: no quorum
        assertEq(handler.rejectionsSeen(), 8, "broken headers rejected");
        handler.commit(1, 0, 0, type(uint256).max, true); // two streams in one batch
        assertEq(handler.commitsSeen(), 3, "batch of two committed");
        assertEq(handler.unexpectedCommits() + handler.missedCommits(), 0, "ghost agrees");
    }

    /// @dev A stream's head only grows by one per commit, and equals what the ghost saw committed.
    function invariant_headGrowsByOne() public view {
        assertEq(handler.nonSequential(), 0, "non-sequential commit");
        for (uint256 i; i < handler.streamCount(); ++i) {
            bytes32 sid = handler.streams(i);
            (uint64 num, bytes20 prefix,) = reg.streamHead(sid);
            assertEq(num, handler.ghostHead(sid), "head = ghost head");
            assertTrue(prefix == bytes20(handler.ghostHash(sid, num)), "head prefix = ghost hash");
        }
    }

    /// @dev One header per (stream, number), never changed: every committed header stays provable
    ///      from the chain, and no rejected header is provable with any committed header's proof.
    function invariant_headerHashesImmutable() public view {
        assertEq(handler.overwrites(), 0, "second commit at a number");
        uint256 c = handler.committedCount();
        for (uint256 i; i < c; ++i) {
            (Header memory h, HistoryProof memory hp) = handler.committedProof(i);
            assertTrue(reg.verifyHeaderCommitted(h, hp), "committed header provable");
            assertEq(reg.hashHeader(h), handler.ghostHash(h.streamId, h.number), "hash unchanged");
        }
        uint256 rj = handler.rejectedCount();
        for (uint256 i; i < rj && c > 0; ++i) {
            (Header memory h, HistoryProof memory hp) = handler.rejectedWithProof(i, i % c);
            // a header rejected once (say, attempt not open yet) may have been committed later
            if (reg.hashHeader(h) == handler.ghostHash(h.streamId, h.number)) continue;
            assertFalse(reg.verifyHeaderCommitted(h, hp), "rejected header not provable");
        }
    }

    /// @dev Only an elected leader with a majority of distinct replicas commits; valid headers commit.
    function invariant_onlyElectedLeaderWithMajority() public view {
        assertEq(handler.unexpectedCommits(), 0, "commit the spec forbids");
        assertEq(handler.missedCommits(), 0, "valid header rejected");
    }
}
