// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase, Vm} from "./Vm.sol";
import {MiniblockRegistry} from "../../src/MiniblockRegistry.sol";
import {Header, Event} from "../../src/lib/MiniblockTypes.sol";

/// @dev Deploys a registry, registers nodes with hash-onion RANDAO commits, builds and signs headers.
abstract contract RegistryFixture is TestBase {
    uint64 internal constant EPOCH = 100;
    uint64 internal constant TIMEOUT = 10;
    uint256 internal constant ONION = 300;
    uint256 internal constant PK0 = 0xA11CE;

    MiniblockRegistry internal reg;
    address internal operator = address(0x0BE0);
    address[] internal nodes;
    mapping(address => uint256) internal pkOf;
    mapping(address => uint256) internal layerOf; // onion index of the node's current on-chain commit

    function _deploy(uint8 rf) internal {
        reg = new MiniblockRegistry(EPOCH, TIMEOUT, rf, 3, 2);
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

    function _addNodes(uint256 k) internal {
        for (uint256 i; i < k; ++i) _addNode();
    }

    /// @dev A registry (replication 3) with `nodes` nodes registered and active (next epoch reached).
    function _activeRegistry(uint256 nodes) internal {
        vm.warp(1_000_000);
        _deploy(3);
        _addNodes(nodes);
        _nextEpoch();
    }

    function _nextEpoch() internal {
        uint256 e = reg.currentEpoch();
        vm.warp(uint256(reg.genesisTime()) + (e + 1) * EPOCH);
    }

    function _sid(uint256 i) internal pure returns (bytes32) {
        return keccak256(abi.encode("stream", i));
    }

    /// @dev The next valid header of a stream, attempt 0, revealing one layer.
    function _header(bytes32 sid) internal view returns (Header memory h) {
        return _headerAt(sid, 0);
    }

    function _headerAt(bytes32 sid, uint32 attempt) internal view returns (Header memory h) {
        (uint64 num, bytes32 hh,) = reg.streamHead(sid);
        h.streamId = sid;
        h.number = num + 1;
        h.prevHash = hh;
        h.eventsRoot = keccak256(abi.encode("events", sid, num + 1));
        h.eventCount = 1;
        h.epoch = reg.currentEpoch();
        h.attempt = attempt;
        h.leader = reg.electedLeader(sid, num + 1, attempt);
        h.randaoReveal = _layer(h.leader, layerOf[h.leader] - 1);
        h.stateRoot = keccak256(abi.encode("state", sid, num + 1));
    }

    function _sign(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signH(address signer, Header memory h) internal view returns (bytes memory) {
        return _sign(pkOf[signer], reg.headerDigest(h));
    }

    /// @dev Leader signature plus attestations of the other replicas, `total` signatures in all.
    function _sigs(Header memory h, uint256 total) internal view returns (bytes[] memory sigs) {
        address[] memory reps = reg.replicasOf(h.streamId);
        sigs = new bytes[](total);
        sigs[0] = _signH(h.leader, h);
        uint256 k = 1;
        for (uint256 i; i < reps.length && k < total; ++i) {
            if (reps[i] == h.leader) continue;
            sigs[k++] = _signH(reps[i], h);
        }
        require(k == total, "not enough replicas");
    }

    function _quorumSigs(Header memory h) internal view returns (bytes[] memory) {
        uint256 r = reg.replicasOf(h.streamId).length;
        return _sigs(h, r / 2 + 1);
    }

    function _commit1(Header memory h, bytes[] memory sigs) internal {
        Header[] memory hs = new Header[](1);
        hs[0] = h;
        bytes[][] memory ss = new bytes[][](1);
        ss[0] = sigs;
        reg.commitMiniblocks(hs, ss);
    }

    /// @dev After an accepted header, move the leader's onion index to the revealed layer.
    function _noteAccepted(Header memory h) internal {
        uint256 l = layerOf[h.leader];
        for (uint256 d = 1; d <= 8 && d <= l; ++d) {
            if (_layer(h.leader, l - d) == h.randaoReveal) {
                layerOf[h.leader] = l - d;
                return;
            }
        }
        revert("reveal not from onion");
    }

    function _commitOk(Header memory h, bytes[] memory sigs) internal {
        vm.recordLogs();
        _commit1(h, sigs);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        bool seen;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == MiniblockRegistry.MiniblockRejected.selector) {
                (, uint8 reason) = abi.decode(logs[i].data, (bytes32, uint8));
                revert(string.concat("unexpected rejection, reason ", _u(reason)));
            }
            if (logs[i].topics[0] == MiniblockRegistry.MiniblockCommitted.selector) seen = true;
        }
        assertTrue(seen, "no MiniblockCommitted");
        assertEq(reg.headerHashAt(h.streamId, h.number), reg.hashHeader(h), "stored hash");
        _noteAccepted(h);
    }

    /// @dev Commits the next header of `sid` with a quorum.
    function _advanceStream(bytes32 sid) internal returns (Header memory h) {
        h = _header(sid);
        _commitOk(h, _quorumSigs(h));
    }

    struct Snap {
        bool exists;
        uint64 num;
        bytes32 hh;
        uint64 ts;
        bytes32 mix;
        bytes32 commitL;
        bytes32 atNum;
    }

    function _snap(Header memory h) internal view returns (Snap memory s) {
        s.exists = reg.streamExists(h.streamId);
        if (s.exists) (s.num, s.hh, s.ts) = reg.streamHead(h.streamId);
        s.mix = reg.randaoMix();
        s.commitL = reg.randaoCommitOf(h.leader);
        s.atNum = reg.headerHashAt(h.streamId, h.number);
    }

    /// @dev Asserts the single-header batch is rejected with `reason` and changes nothing.
    function _expectRejected(Header memory h, bytes[] memory sigs, uint8 reason) internal {
        Snap memory before = _snap(h);
        vm.recordLogs();
        _commit1(h, sigs);
        _checkRejectedLogs(h, vm.getRecordedLogs(), reason);
        Snap memory after_ = _snap(h);
        assertEq(keccak256(abi.encode(after_)), keccak256(abi.encode(before)), "rejected header changed state");
    }

    function _checkRejectedLogs(Header memory h, Vm.Log[] memory logs, uint8 reason) internal view {
        uint256 rejected;
        bytes32 hh = reg.hashHeader(h);
        for (uint256 i; i < logs.length; ++i) {
            bytes32 t0 = logs[i].topics[0];
            assertTrue(t0 != MiniblockRegistry.MiniblockCommitted.selector, "committed");
            if (t0 == MiniblockRegistry.MiniblockRejected.selector) {
                ++rejected;
                assertEq(logs[i].topics[1], h.streamId, "rejected streamId");
                assertEq(uint256(logs[i].topics[2]), h.number, "rejected number");
                (bytes32 rh, uint8 got) = abi.decode(logs[i].data, (bytes32, uint8));
                assertEq(rh, hh, "rejected headerHash");
                assertEq(got, reason, "reason");
            }
        }
        assertEq(rejected, 1, "one rejection");
    }

    function _replicaOtherThan(bytes32 sid, address a) internal view returns (address) {
        address[] memory reps = reg.replicasOf(sid);
        for (uint256 i; i < reps.length; ++i) if (reps[i] != a) return reps[i];
        revert("no other replica");
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
