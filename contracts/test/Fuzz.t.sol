// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryFixture} from "./utils/Fixture.sol";
import {TestBase} from "./utils/Vm.sol";
import {Merkle} from "../src/lib/Merkle.sol";
import {Election} from "../src/lib/Election.sol";
import {Header} from "../src/lib/MiniblockTypes.sol";

/// @dev Fuzz tests of the Merkle tree (against an independent recursive definition) and the election.
contract MerkleFuzzTest is TestBase {
    function _leaves(uint256 n, uint256 seed) internal pure returns (bytes32[] memory e) {
        e = new bytes32[](n);
        for (uint256 i; i < n; ++i) e[i] = keccak256(abi.encode(seed, i));
    }

    /// @dev Bottom-up pairing with the odd node promoted equals splitting at the largest power of two < n.
    function _refRoot(bytes32[] memory e, uint256 lo, uint256 n) internal pure returns (bytes32) {
        if (n == 1) return keccak256(abi.encodePacked(bytes1(0x00), e[lo]));
        uint256 k = 1;
        while (k * 2 < n) k *= 2;
        return keccak256(abi.encodePacked(bytes1(0x01), _refRoot(e, lo, k), _refRoot(e, lo + k, n - k)));
    }

    function testFuzz_merkle_rootMatchesReference(uint256 n, uint256 seed) public pure {
        n = bound(n, 0, 300);
        bytes32[] memory e = _leaves(n, seed);
        bytes32 root = Merkle.root(e);
        if (n == 0) assertEq(root, bytes32(0), "empty root");
        else assertEq(root, _refRoot(e, 0, n), "reference root");
    }

    function testFuzz_merkle_proofRoundTrip(uint256 n, uint256 seed, uint256 idx) public pure {
        n = bound(n, 0, 300);
        bytes32[] memory e = _leaves(n, seed);
        bytes32 root = Merkle.root(e);
        if (n == 0) {
            assertFalse(Merkle.verify(root, 0, 0, bytes32(0), new bytes32[](0)), "nothing in an empty tree");
            return;
        }
        uint256 i = idx % n;
        bytes32[] memory p = Merkle.proof(e, i);
        assertLe(p.length, 9, "proof length");
        assertTrue(Merkle.verify(root, n, i, e[i], p), "round trip");
    }

    function testFuzz_merkle_tamperedProofFails(uint256 n, uint256 seed, uint256 idx, uint256 which, uint256 bit)
        public
        pure
    {
        n = bound(n, 1, 300);
        bytes32[] memory e = _leaves(n, seed);
        bytes32 root = Merkle.root(e);
        uint256 i = idx % n;
        bytes32[] memory p = Merkle.proof(e, i);
        // wrong event
        assertFalse(Merkle.verify(root, n, i, e[i] ^ bytes32(uint256(1) << (bit % 256)), p), "wrong leaf");
        // wrong index
        if (n > 1) assertFalse(Merkle.verify(root, n, (i + 1 + which % (n - 1)) % n, e[i], p), "wrong index");
        assertFalse(Merkle.verify(root, n, n + which % 10, e[i], p), "index out of range");
        // a flipped sibling
        if (p.length > 0) {
            bytes32[] memory q = _copy(p, p.length);
            uint256 k = which % q.length;
            q[k] = q[k] ^ bytes32(uint256(1) << (bit % 256));
            assertFalse(Merkle.verify(root, n, i, e[i], q), "flipped sibling");
            // a dropped sibling
            assertFalse(Merkle.verify(root, n, i, e[i], _copy(p, p.length - 1)), "dropped sibling");
        }
        // an extra sibling
        bytes32[] memory x = new bytes32[](p.length + 1);
        for (uint256 k; k < p.length; ++k) x[k] = p[k];
        x[p.length] = bytes32(which);
        assertFalse(Merkle.verify(root, n, i, e[i], x), "extra sibling");
        // a wrong root
        assertFalse(Merkle.verify(root ^ bytes32(uint256(1)), n, i, e[i], p), "wrong root");
    }

    function _copy(bytes32[] memory p, uint256 len) internal pure returns (bytes32[] memory q) {
        q = new bytes32[](len);
        for (uint256 k; k < len; ++k) q[k] = p[k];
    }

    function testFuzz_election_positionRotates(bytes32 seed, bytes32 sid, uint64 number, uint256 r) public pure {
        r = bound(r, 1, 16);
        uint256 base = uint256(keccak256(abi.encode(seed, sid, number))) % r;
        uint256 seen;
        for (uint32 a; a < r; ++a) {
            uint256 p = Election.leaderPosition(seed, sid, number, a, r);
            assertLt(p, r, "in range");
            assertEq(p, (base + a) % r, "formula");
            assertEq(seen & (1 << p), 0, "each replica once per round");
            seen |= 1 << p;
            assertEq(Election.leaderPosition(seed, sid, number, a + uint32(r), r), p, "period r");
        }
        assertEq(seen, (1 << r) - 1, "all replicas");
    }

    function testFuzz_election_pickDistinct(bytes32 seed, bytes32 sid, uint256 n, uint256 k) public pure {
        n = bound(n, 1, 256);
        k = bound(k, 1, n < 16 ? n : 16);
        uint256[] memory list = new uint256[](n);
        for (uint256 i; i < n; ++i) list[i] = i;
        Election.pick(list, k, seed, sid);
        uint256[8] memory bits;
        for (uint256 i; i < n; ++i) {
            uint256 v = list[i];
            assertLt(v, n, "in range");
            assertEq(bits[v >> 5] & (1 << (v & 31)), 0, "still a permutation");
            bits[v >> 5] |= 1 << (v & 31);
        }
    }
}

/// @dev Fuzz of the deployed registry's election view and Merkle views.
contract RegistryFuzzTest is RegistryFixture {
    bytes32 internal S;

    function setUp() public {
        _activeRegistry(5);
        S = _sid(1);
        reg.createStream(S);
    }

    function testFuzz_electedLeader_isReplicaByFormula(uint64 number, uint32 attempt) public view {
        address[] memory reps = reg.replicasOf(S);
        uint256 base = uint256(keccak256(abi.encode(reg.currentSeed(), S, number))) % reps.length;
        assertEq(reg.electedLeader(S, number, attempt), reps[(base + uint256(attempt)) % reps.length], "leader");
    }

    function testFuzz_merkleViews(uint256 n, uint256 seed, uint256 idx) public view {
        n = bound(n, 1, 64);
        bytes32[] memory e = new bytes32[](n);
        for (uint256 i; i < n; ++i) e[i] = keccak256(abi.encode(seed, i));
        bytes32 root = reg.merkleRoot(e);
        assertEq(root, Merkle.root(e), "view root");
        uint256 i = idx % n;
        assertTrue(reg.verifyMerkleProof(root, n, i, e[i], Merkle.proof(e, i)), "view verify");
    }

    function testFuzz_commitRejectsForeignSigner(uint256 pk) public {
        pk = bound(pk, 1, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140);
        address signer = vm.addr(pk);
        address[] memory reps = reg.replicasOf(S);
        vm.assume(signer != reps[0] && signer != reps[1] && signer != reps[2]);
        Header memory h = _header(S);
        bytes[] memory sigs = _quorumSigs(h);
        sigs[1] = _sign(pk, reg.headerDigest(h));
        _expectRejected(h, sigs, 9); // a non-node or a non-replica node alike
    }
}
