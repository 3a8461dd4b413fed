// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev The few forge cheatcodes these tests use (forge-std is not available here).
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    struct Gas {
        uint64 gasLimit;
        uint64 gasTotalUsed;
        uint64 gasMemoryUsed;
        int64 gasRefunded;
        uint64 gasRemaining;
    }

    struct AccessListItem {
        address target;
        bytes32[] storageKeys;
    }

    function lastCallGas() external view returns (Gas memory);
    function record() external;
    function accesses(address) external returns (bytes32[] memory reads, bytes32[] memory writes);
    function snapshotState() external returns (uint256);
    function revertToState(uint256) external returns (bool);
    function accessList(AccessListItem[] calldata) external;
    function noAccessList() external;
    function warp(uint256) external;
    function roll(uint256) external;
    function prevrandao(bytes32) external;
    function chainId(uint256) external;
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function expectRevert() external;
    function expectRevert(bytes4) external;
    function expectRevert(bytes calldata) external;
    function expectEmit(bool, bool, bool, bool, address) external;
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
    function assume(bool) external pure;
    function label(address, string calldata) external;
}

/// @dev Minimal test base: cheatcodes, assertions, invariant target lists.
abstract contract TestBase {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    bool public IS_TEST = true;

    event log_named_uint(string key, uint256 val);
    event log_named_bytes32(string key, bytes32 val);

    address[] private _targetContracts;
    address[] private _excludeContracts;
    address[] private _targetSenders;

    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    function excludeContracts() public view returns (address[] memory) {
        return _excludeContracts;
    }

    function targetSenders() public view returns (address[] memory) {
        return _targetSenders;
    }

    function targetContract(address a) internal {
        _targetContracts.push(a);
    }

    function excludeContract(address a) internal {
        _excludeContracts.push(a);
    }

    function targetSender(address a) internal {
        _targetSenders.push(a);
    }

    function fail(string memory why) internal pure {
        revert(why);
    }

    function assertTrue(bool c, string memory why) internal pure {
        if (!c) revert(why);
    }

    function assertFalse(bool c, string memory why) internal pure {
        if (c) revert(why);
    }

    function assertEq(uint256 a, uint256 b, string memory why) internal pure {
        if (a != b) revert(string.concat(why, ": ", _u(a), " != ", _u(b)));
    }

    function assertEq(bytes32 a, bytes32 b, string memory why) internal pure {
        if (a != b) revert(string.concat(why, ": bytes32 differ"));
    }

    function assertEq(address a, address b, string memory why) internal pure {
        if (a != b) revert(string.concat(why, ": address differs"));
    }

    function assertEq(string memory a, string memory b, string memory why) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) revert(string.concat(why, ": '", a, "' != '", b, "'"));
    }

    function assertLe(uint256 a, uint256 b, string memory why) internal pure {
        if (a > b) revert(string.concat(why, ": ", _u(a), " > ", _u(b)));
    }

    function assertLt(uint256 a, uint256 b, string memory why) internal pure {
        if (a >= b) revert(string.concat(why, ": ", _u(a), " >= ", _u(b)));
    }

    function assertGe(uint256 a, uint256 b, string memory why) internal pure {
        if (a < b) revert(string.concat(why, ": ", _u(a), " < ", _u(b)));
    }

    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound");
        if (hi == type(uint256).max && lo == 0) return x;
        return lo + x % (hi - lo + 1);
    }

    function _u(uint256 v) internal pure returns (string memory) {
        if (v == 0) return "0";
        bytes memory b;
        while (v != 0) {
            b = abi.encodePacked(bytes1(uint8(48 + v % 10)), b);
            v /= 10;
        }
        return string(b);
    }
}
