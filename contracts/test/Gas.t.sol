// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {RegistryFixture} from "./utils/Fixture.sol";
import {MiniblockRegistry} from "../src/MiniblockRegistry.sol";
import {Header} from "../src/lib/MiniblockTypes.sol";

/// @dev Gas of commitMiniblocks: batches of 64 headers, 3 replicas, all three signatures per header.
///      Logs execution gas, calldata gas (4/16 per zero/non-zero byte) and the per-header total
///      including the 21,000 base (run with -vv to see them). Plain `forge test` keeps setUp's storage
///      warm, so run `forge test --match-path contracts/test/Gas.t.sol -vv --isolate` for real
///      transaction accounting: there the "execution" figure is the whole transaction's gas (calldata
///      and base included) per header.
contract CommitGasTest is RegistryFixture {
    uint256 internal constant BATCH = 64;

    bytes32[] internal ids; // streams whose block 1 nodes[0] leads

    function setUp() public {
        _activeRegistry(4);
        // created in setUp so that the measured transaction sees their storage cold
        for (uint256 k; ids.length < BATCH; ++k) {
            bytes32 sid = _sid(k);
            reg.createStream(sid);
            if (reg.electedLeader(sid, 1, 0) == nodes[0]) ids.push(sid);
        }
    }

    function _calldataGas(bytes memory cd) internal pure returns (uint256 g) {
        for (uint256 i; i < cd.length; ++i) g += cd[i] == 0 ? 4 : 16;
    }

    function _measure(string memory what, Header[] memory hs, bytes[][] memory ss) internal returns (uint256 perHeader) {
        uint256 cdGas = _calldataGas(abi.encodeCall(MiniblockRegistry.commitMiniblocks, (hs, ss)));
        vm.recordLogs();
        reg.commitMiniblocks(hs, ss);
        uint256 exec = vm.lastCallGas().gasTotalUsed;
        uint256 committed;
        bytes32 t = MiniblockRegistry.MiniblockCommitted.selector;
        Vm_Log[] memory logs = _logs();
        for (uint256 i; i < logs.length; ++i) if (logs[i].topics[0] == t) ++committed;
        assertEq(committed, hs.length, "all committed");
        perHeader = (exec + cdGas + 21000) / hs.length;
        emit log_named_uint(string.concat(what, ": execution gas per header"), exec / hs.length);
        emit log_named_uint(string.concat(what, ": calldata gas per header"), cdGas / hs.length);
        emit log_named_uint(string.concat(what, ": total tx gas per header"), perHeader);
    }

    struct Vm_Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function _logs() internal returns (Vm_Log[] memory out) {
        bytes memory raw = abi.encode(vm.getRecordedLogs());
        out = abi.decode(raw, (Vm_Log[]));
    }

    /// @dev One node commits the block 1 it leads on 64 streams (the node loop's batch).
    function test_gas_batch64_distinctStreams_oneLeader() public {
        address L = nodes[0];
        Header[] memory hs = new Header[](BATCH);
        bytes[][] memory ss = new bytes[][](BATCH);
        uint256 l = layerOf[L];
        for (uint256 i; i < BATCH; ++i) {
            hs[i] = _header(ids[i]);
            hs[i].randaoReveal = _layer(L, l - 1 - i);
            hs[i].eventCount = 100;
            ss[i] = _sigs(hs[i], 3);
        }
        vm.warp(block.timestamp + 1);
        uint256 per = _measure("64 streams, one leader", hs, ss);
        assertLe(per, 80_000, "per-header gas regression");
    }

    /// @dev The same shape at batch 1 and 8 (with batch 64 above: the per-header cost at 1/8/64).
    function _distinct(uint256 size, string memory what) internal {
        address L = nodes[0];
        Header[] memory hs = new Header[](size);
        bytes[][] memory ss = new bytes[][](size);
        uint256 l = layerOf[L];
        for (uint256 i; i < size; ++i) {
            hs[i] = _header(ids[i]);
            hs[i].randaoReveal = _layer(L, l - 1 - i);
            hs[i].eventCount = 100;
            ss[i] = _sigs(hs[i], 3);
        }
        vm.warp(block.timestamp + 1);
        _measure(what, hs, ss);
    }

    function test_gas_batch1_oneLeader() public {
        _distinct(1, "1 stream");
    }

    function test_gas_batch8_distinctStreams_oneLeader() public {
        _distinct(8, "8 streams, one leader");
    }

    /// @dev 64 consecutive blocks of one stream in one batch (leaders vary).
    function test_gas_batch64_oneStreamChain() public {
        bytes32 sid = ids[0];
        Header[] memory hs = new Header[](BATCH);
        bytes[][] memory ss = new bytes[][](BATCH);
        (, bytes32 prev,) = reg.streamHead(sid);
        uint64 e = reg.currentEpoch();
        for (uint256 i; i < BATCH; ++i) {
            Header memory h;
            h.streamId = sid;
            h.number = uint64(i + 1);
            h.prevHash = prev;
            h.eventsRoot = keccak256(abi.encode(i));
            h.eventCount = 100;
            h.epoch = e;
            h.leader = reg.electedLeader(sid, h.number, 0);
            layerOf[h.leader] -= 1;
            h.randaoReveal = _layer(h.leader, layerOf[h.leader]);
            h.stateRoot = keccak256(abi.encode("s", i));
            hs[i] = h;
            ss[i] = _sigs(h, 3);
            prev = reg.hashHeader(h);
        }
        vm.warp(block.timestamp + 1);
        uint256 per = _measure("one stream, 64 blocks", hs, ss);
        assertLe(per, 80_000, "per-header gas regression");
    }
}
