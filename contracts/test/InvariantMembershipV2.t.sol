// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "./utils/Vm.sol";
import {RegistryV2Fixture} from "./utils/FixtureV2.sol";
import {MiniblockRegistryV2} from "../src/MiniblockRegistryV2.sol";

/// @dev Random membership changes (register, re-register, leave, evict, renew, replace, create,
///      epochs) on registry v2; the invariants tie the slot bookkeeping to the streams.
contract MembershipV2Handler is RegistryV2Fixture {
    bytes32[] public streams;
    address[] public everRegistered;
    uint256 public fresh;

    constructor() {
        _activeRegistry(5, 3);
        for (uint256 i; i < 5; ++i) everRegistered.push(nodes[i]);
        for (uint256 i; i < 3; ++i) _create(i);
    }

    function registry() external view returns (MiniblockRegistryV2) {
        return reg;
    }

    function streamCount() external view returns (uint256) {
        return streams.length;
    }

    function everCount() external view returns (uint256) {
        return everRegistered.length;
    }

    function _create(uint256 i) internal {
        bytes32 sid = _sid(1000 + i);
        try reg.createStream(sid) {
            streams.push(sid);
        } catch {}
    }

    function create(uint256) external {
        _create(streams.length);
    }

    function register(uint256 seed) external {
        address n;
        if (seed % 2 == 0 || everRegistered.length == 0) {
            n = address(uint160(0x5000 + fresh++));
            everRegistered.push(n);
        } else {
            n = everRegistered[seed % everRegistered.length];
        }
        vm.prank(operator);
        try reg.registerNode(n, "u", keccak256(abi.encode(n, seed))) {} catch {}
    }

    function leave(uint256 seed, bool evict) external {
        address n = everRegistered[seed % everRegistered.length];
        if (evict) {
            try reg.evictNode(n) {} catch {}
        } else {
            vm.prank(n);
            try reg.requestLeave(n) {} catch {}
        }
    }

    function renew(uint256 seed) external {
        address n = everRegistered[seed % everRegistered.length];
        vm.prank(operator);
        try reg.renewOnion(n, bytes32(seed)) {} catch {}
    }

    function replace(uint256 seed, uint256 index) external {
        if (streams.length == 0) return;
        try reg.replaceReplica(streams[seed % streams.length], index % 4) {} catch {}
    }

    function epoch() external {
        _nextEpoch();
    }
}

contract RegistryMembershipV2InvariantTest is TestBase {
    MembershipV2Handler internal handler;
    MiniblockRegistryV2 internal reg;

    function setUp() public {
        handler = new MembershipV2Handler();
        reg = handler.registry();
        targetContract(address(handler));
    }

    /// @dev Every slot's reference count is the number of (stream, position) pairs naming it, and a
    ///      stream's replicas are distinct nodes.
    function invariant_slotRefsMatchStreams() public view {
        uint256 n = reg.nodeCount();
        uint256[] memory refs = new uint256[](n);
        for (uint256 s; s < handler.streamCount(); ++s) {
            address[] memory reps = reg.replicasOf(handler.streams(s));
            for (uint256 k; k < reps.length; ++k) {
                refs[reg.nodeIndex(reps[k])]++;
                for (uint256 j; j < k; ++j) assertTrue(reps[j] != reps[k], "distinct replicas");
            }
        }
        MiniblockRegistryV2.NodeInfo[] memory all = reg.getNodes(0, n);
        for (uint256 i; i < n; ++i) {
            assertEq(reg.nodeIndex(all[i].node), i, "one slot per address");
            assertEq(reg.streamRefsOf(all[i].node), refs[i], "refs = positions naming the slot");
        }
    }

    /// @dev liveNodeCount = registered nodes with no leave scheduled, at most MAX_NODES; every
    ///      address known to the registry sits in the slot it names.
    function invariant_liveCount() public view {
        uint256 n = reg.nodeCount();
        MiniblockRegistryV2.NodeInfo[] memory all = reg.getNodes(0, n);
        uint256 live;
        for (uint256 i; i < n; ++i) if (all[i].leaveEpoch == type(uint64).max) ++live;
        assertEq(reg.liveNodeCount(), live, "live count");
        assertLe(live, reg.MAX_NODES(), "cap");
        for (uint256 i; i < handler.everCount(); ++i) {
            address a = handler.everRegistered(i);
            MiniblockRegistryV2.NodeInfo memory info = reg.getNode(a);
            if (info.status == MiniblockRegistryV2.NodeStatus.None) continue;
            assertEq(all[reg.nodeIndex(a)].node, a, "slot names the address");
        }
    }
}
