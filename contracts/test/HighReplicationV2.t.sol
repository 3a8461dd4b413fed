// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Vm} from "./utils/Vm.sol";
import {RegistryV2Fixture} from "./utils/FixtureV2.sol";
import {MiniblockRegistryV2} from "../src/MiniblockRegistryV2.sol";

/// @dev Replication 16 (every attester bit position 0..15, replicas 3..15 from the second slot): the
///      commit loop's lowest-set-bit attester walk (shift table by 2^i mod 19) and its slow path.
contract HighReplicationV2Test is RegistryV2Fixture {
    function setUp() public {
        _activeRegistry(16, 16);
        for (uint256 k; k < 4; ++k) _createStream(_sid(k));
        vm.warp(block.timestamp + 1);
    }

    /// @dev All 16 signatures (leader + 15 attesters, bits up to 15) and the minimal majority (9) accepted.
    function test_r16_allAndMajority_accepted() public {
        assertEq(reg.replicasOf(_sid(0)).length, 16, "r = 16");
        Rec[] memory rs = new Rec[](2);
        rs[0] = _next(_sid(0));
        rs[1] = _next(_sid(1));
        bytes32[] memory reveals = _assignReveals(rs);
        _signRec(rs[0], 16);
        _signRec(rs[1], 9);
        _commitOk(rs, _encode(rs, reveals));
    }

    /// @dev A bad signature at each attester position is rejected with BadAttestation (8), one
    ///      fewer than a majority with NoQuorum (12).
    function test_r16_badAttesterAtEveryPosition_rejected() public {
        for (uint256 bad = 1; bad < 16; ++bad) {
            Rec[] memory rs = _one(_next(_sid(2)));
            bytes32[] memory reveals = _assignReveals(rs);
            _signRec(rs[0], 16);
            // the bad-th signature replaced by another attester's (recovers to the wrong replica)
            rs[0].sigs[bad] = rs[0].sigs[(bad % 15) + 1];
            vm.recordLogs();
            reg.commitMiniblocks(_encode(rs, reveals));
            uint8[] memory reasons = _reasons(vm.getRecordedLogs());
            assertEq(reasons.length, 1, "rejected");
            assertEq(reasons[0], 8, "BadAttestation");
        }
        Rec[] memory q = _one(_next(_sid(3)));
        bytes32[] memory rv = _assignReveals(q);
        _signRec(q[0], 8);
        vm.recordLogs();
        reg.commitMiniblocks(_encode(q, rv));
        uint8[] memory rr = _reasons(vm.getRecordedLogs());
        assertEq(rr.length, 1, "rejected");
        assertEq(rr[0], 12, "NoQuorum");
    }
}
