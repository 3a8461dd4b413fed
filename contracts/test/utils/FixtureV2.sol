// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase, Vm} from "./Vm.sol";
import {MiniblockRegistryV2} from "../../src/MiniblockRegistryV2.sol";
import {Header} from "../../src/lib/MiniblockTypes.sol";
import {History, HistoryProof} from "../../src/lib/HistoryProof.sol";

/// @dev Deploys a v2 registry, registers nodes with hash-onion RANDAO commits, builds, signs
///      (EIP-2098 compact) and packs batches (docs/protocol.md, "Version 2").
abstract contract RegistryV2Fixture is TestBase {
    uint64 internal constant EPOCH = 100;
    uint64 internal constant TIMEOUT = 10;
    uint256 internal constant ONION = 300;
    uint256 internal constant PK0 = 0xA11CE;

    /// @dev One header of a batch with its packing fields.
    struct Rec {
        Header h;
        uint8 leaderPos;
        uint8 revealIdx;
        uint16 attesters;
        bytes[] sigs; // 64 bytes each: leader, then attesters by ascending position
    }

    MiniblockRegistryV2 internal reg;
    address internal operator = address(0x0BE0);
    address[] internal nodes;
    mapping(address => uint256) internal pkOf;
    mapping(address => uint256) internal layerOf; // onion index of the node's current on-chain commit

    function _deploy(uint8 rf) internal {
        reg = new MiniblockRegistryV2(EPOCH, TIMEOUT, rf);
        reg.allowOperator(operator);
    }

    function _secret(address n) internal pure returns (bytes32) {
        return keccak256(abi.encode("onion", n));
    }

    function _layer(address n, uint256 j) internal pure returns (bytes32 x) {
        x = _secret(n);
        assembly {
            for { let i := 0 } lt(i, j) { i := add(i, 1) } {
                mstore(0x00, x)
                x := keccak256(0x00, 0x20)
            }
        }
    }

    function _addNode() internal returns (address n) {
        uint256 pk = PK0 + nodes.length;
        n = vm.addr(pk);
        pkOf[n] = pk;
        nodes.push(n);
        layerOf[n] = ONION;
        vm.prank(operator);
        reg.registerNode(n, "http://node", _layer(n, ONION));
    }

    /// @dev A registry (replication `rf`) with `count` nodes registered and active.
    function _activeRegistry(uint256 count, uint8 rf) internal {
        vm.warp(1_000_000);
        _deploy(rf);
        for (uint256 i; i < count; ++i) _addNode();
        _nextEpoch();
    }

    function _nextEpoch() internal {
        uint256 e = reg.currentEpoch();
        vm.warp(uint256(reg.genesisTime()) + (e + 1) * EPOCH);
    }

    function _sid(uint256 i) internal pure returns (bytes32) {
        return keccak256(abi.encode("stream", i));
    }

    /// @dev The chain's full head hash, tracked by the tests (the contract keeps a prefix).
    mapping(bytes32 => bytes32) internal fullHead;

    function _createStream(bytes32 sid) internal {
        reg.createStream(sid);
        (,, uint64 ts) = reg.streamHead(sid);
        ts;
        Header memory g;
        g.streamId = sid;
        g.epoch = reg.currentEpoch();
        fullHead[sid] = reg.hashHeader(g);
    }

    /// @dev An unsigned record for block `number` of `sid` on parent `prev`, attempt `attempt`,
    ///      led by the elected leader; reveal and signatures still to come.
    function _rec(bytes32 sid, uint64 number, bytes32 prev, uint32 attempt) internal view returns (Rec memory r) {
        Header memory h;
        h.streamId = sid;
        h.number = number;
        h.prevHash = prev;
        h.eventsRoot = keccak256(abi.encode("events", sid, number));
        h.eventCount = 16;
        h.epoch = reg.currentEpoch();
        h.attempt = attempt;
        (uint256 pos, address leader) = reg.electedPosition(sid, number, attempt);
        h.leader = leader;
        h.stateRoot = keccak256(abi.encode("state", sid, number));
        r.h = h;
        r.leaderPos = uint8(pos);
    }

    /// @dev The next record of `sid` (on the tracked head).
    function _next(bytes32 sid) internal view returns (Rec memory) {
        (uint64 num,,) = reg.streamHead(sid);
        return _rec(sid, num + 1, fullHead[sid], 0);
    }

    /// @dev One reveal per distinct elected leader (its next onion layer), in the order those leaders
    ///      first appear (the contract's rule: entry j is the j-th distinct elected leader's); sets
    ///      revealIdx and randaoReveal (0 for a record whose leaderPos is not the elected position,
    ///      as the contract hashes it).
    function _assignReveals(Rec[] memory rs) internal view returns (bytes32[] memory reveals) {
        address[] memory ls = new address[](rs.length);
        uint256 k;
        for (uint256 i; i < rs.length; ++i) {
            if (!_elected(rs[i])) {
                rs[i].revealIdx = 0;
                continue;
            }
            address l = rs[i].h.leader;
            uint256 j;
            while (j < k && ls[j] != l) ++j;
            if (j == k) ls[k++] = l;
            rs[i].revealIdx = uint8(j);
        }
        reveals = new bytes32[](k);
        for (uint256 j; j < k; ++j) reveals[j] = _layer(ls[j], layerOf[ls[j]] - 1);
        for (uint256 i; i < rs.length; ++i) rs[i].h.randaoReveal = _elected(rs[i]) ? reveals[rs[i].revealIdx] : bytes32(0);
    }

    /// @dev Whether the record's leaderPos is the elected position of an existing stream.
    function _elected(Rec memory r) internal view returns (bool) {
        try reg.electedPosition(r.h.streamId, r.h.number, r.h.attempt) returns (uint256 pos, address) {
            return pos == r.leaderPos;
        } catch {
            return false;
        }
    }

    function _compact(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255)));
    }

    /// @dev Signs with the leader and the first `total - 1` other replicas by position.
    function _signRec(Rec memory r, uint256 total) internal view {
        address[] memory reps = reg.replicasOf(r.h.streamId);
        bytes32 d = reg.headerDigest(r.h);
        r.sigs = new bytes[](total);
        r.sigs[0] = _compact(pkOf[r.h.leader], d);
        uint256 n = 1;
        uint16 bits;
        for (uint256 k; k < reps.length && n < total; ++k) {
            if (k == r.leaderPos) continue;
            bits |= uint16(1 << k);
            r.sigs[n++] = _compact(pkOf[reps[k]], d);
        }
        require(n == total, "not enough replicas");
        r.attesters = bits;
    }

    /// @dev The record's 127 fixed bytes (its signatures go after all records).
    function _encodeRec(Rec memory r) internal pure returns (bytes memory out) {
        Header memory h = r.h;
        out = abi.encodePacked(h.streamId, h.eventsRoot, h.stateRoot);
        out = abi.encodePacked(
            out, uint32(h.number), uint32(h.epoch), uint16(h.eventCount), h.attempt, r.leaderPos, r.attesters
        );
        out = abi.encodePacked(out, bytes14(uint112(uint256(h.prevHash)))); // prevHash[18:32]
    }

    /// @dev The record's signatures: leader, then attesters by ascending position.
    function _encodeSigs(Rec memory r) internal pure returns (bytes memory out) {
        for (uint256 i; i < r.sigs.length; ++i) out = bytes.concat(out, r.sigs[i]);
    }

    /// @dev The batch: n ‖ k ‖ reveals ‖ records ‖ signatures. The reveal table must list each leader's
    ///      reveal in the order the leaders first appear (`_assignReveals` does).
    function _encode(Rec[] memory rs, bytes32[] memory reveals) internal pure returns (bytes memory out) {
        out = abi.encodePacked(uint16(rs.length), uint8(reveals.length));
        for (uint256 j; j < reveals.length; ++j) out = bytes.concat(out, reveals[j]);
        for (uint256 i; i < rs.length; ++i) out = bytes.concat(out, _encodeRec(rs[i]));
        for (uint256 i; i < rs.length; ++i) out = bytes.concat(out, _encodeSigs(rs[i]));
    }

    /// @dev Reveals, signs (`total` signatures each) and packs.
    function _build(Rec[] memory rs, uint256 total) internal view returns (bytes memory) {
        bytes32[] memory reveals = _assignReveals(rs);
        for (uint256 i; i < rs.length; ++i) _signRec(rs[i], total);
        return _encode(rs, reveals);
    }

    /// @dev What the registry keeps of a RANDAO commitment: its top 192 bits.
    function _top192(bytes32 x) internal pure returns (bytes32) {
        return bytes32(bytes24(x));
    }

    function _one(Rec memory r) internal pure returns (Rec[] memory rs) {
        rs = new Rec[](1);
        rs[0] = r;
    }

    /// @dev After a commit whose headers were all accepted: track heads and onion layers.
    function _noteAccepted(Rec[] memory rs) internal {
        for (uint256 i; i < rs.length; ++i) {
            fullHead[rs[i].h.streamId] = reg.hashHeader(rs[i].h);
            address l = rs[i].h.leader;
            uint256 cur = layerOf[l];
            for (uint256 d = 1; d <= 8 && d <= cur; ++d) {
                if (_layer(l, cur - d) == rs[i].h.randaoReveal) {
                    layerOf[l] = cur - d;
                    break;
                }
            }
        }
    }

    function _count(Vm.Log[] memory logs, bytes32 topic) internal pure returns (uint256 c) {
        for (uint256 i; i < logs.length; ++i) if (logs[i].topics[0] == topic) ++c;
    }

    /// @dev The accepted header hashes and the history root of each commit so far.
    bytes32[][] internal commitHashes;
    bytes32[] internal commitRoots;

    /// @dev The packed data of MiniblocksCommitted: uint256 accepted ‖ m × bytes32 headerHash.
    function _decodeCommitted(bytes memory d) internal pure returns (uint256 bits, bytes32[] memory hhs) {
        require(d.length >= 32 && d.length % 32 == 0, "packed commit log");
        hhs = new bytes32[](d.length / 32 - 1);
        assembly {
            bits := mload(add(d, 0x20))
        }
        for (uint256 j; j < hhs.length; ++j) {
            bytes32 h;
            assembly {
                h := mload(add(d, add(0x40, shl(5, j))))
            }
            hhs[j] = h;
        }
    }

    /// @dev Notes the MiniblocksCommitted log of `logs` (if any) against the batch's records `rs`.
    function _noteHistory(Rec[] memory rs, Vm.Log[] memory logs) internal {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] != MiniblockRegistryV2.MiniblocksCommitted.selector) continue;
            (uint256 bits, bytes32[] memory hhs) = _decodeCommitted(logs[i].data);
            bytes32 root = keccak256(abi.encodePacked(hhs));
            assertEq(uint256(logs[i].topics[1]), commitRoots.length, "commit index");
            uint256 m;
            for (uint256 j; j < rs.length; ++j) {
                if (bits >> j & 1 == 0) continue;
                assertEq(hhs[m], reg.hashHeader(rs[j].h), "logged header hash");
                ++m;
            }
            assertEq(m, hhs.length, "one hash per accepted bit");
            assertEq(bits >> rs.length, 0, "no bit past the batch");
            commitHashes.push(hhs);
            commitRoots.push(root);
            bytes32 a;
            for (uint256 c; c < commitRoots.length; ++c) a = History.step(a, commitRoots[c]);
            assertEq(reg.historyAcc(), a, "stored accumulator");
        }
    }

    /// @dev The history proof of the header at `position` of commit `ci`: to the window's checkpoint
    ///      if that window is closed, else to the latest commit.
    function _historyProof(uint256 ci, uint256 position) internal view returns (HistoryProof memory hp) {
        uint256 w = reg.HISTORY_WINDOW();
        uint256 last = (ci / w + 1) * w - 1;
        if (last >= commitRoots.length) last = commitRoots.length - 1;
        bytes32 a;
        for (uint256 c; c < ci; ++c) a = History.step(a, commitRoots[c]);
        bytes32[] memory later = new bytes32[](last - ci);
        for (uint256 c = ci + 1; c <= last; ++c) later[c - ci - 1] = commitRoots[c];
        hp = HistoryProof({
            commitIndex: uint64(ci), position: uint32(position), headerHashes: commitHashes[ci], prevAcc: a, laterRoots: later
        });
    }

    /// @dev Commits and asserts every header of `rs` is accepted.
    function _commitOk(Rec[] memory rs, bytes memory batch) internal {
        vm.recordLogs();
        reg.commitMiniblocks(batch);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistryV2.MiniblockRejected.selector) {
                (, uint8 reason) = abi.decode(logs[i].data, (bytes32, uint8));
                revert(string.concat("unexpected rejection, reason ", _u(reason)));
            }
        }
        assertEq(_count(logs, MiniblockRegistryV2.MiniblocksCommitted.selector), 1, "one commit log");
        _noteHistory(rs, logs);
        _noteAccepted(rs);
    }

    /// @dev The reasons of the MiniblockRejected logs, in order.
    function _reasons(Vm.Log[] memory logs) internal pure returns (uint8[] memory out) {
        out = new uint8[](_count(logs, MiniblockRegistryV2.MiniblockRejected.selector));
        uint256 n;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistryV2.MiniblockRejected.selector) {
                (, uint8 reason) = abi.decode(logs[i].data, (bytes32, uint8));
                out[n++] = reason;
            }
        }
    }
}
