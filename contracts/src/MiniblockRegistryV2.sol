// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {Header, Event, MiniblockTypes} from "./lib/MiniblockTypes.sol";
import {Merkle} from "./lib/Merkle.sol";
import {Election} from "./lib/Election.sol";
import {History, HistoryProof} from "./lib/HistoryProof.sol";

/// @title MiniblockRegistryV2
/// @notice Registry v2 of the mini-block protocol (docs/protocol.md, "Version 2"): the rules of v1
///         (membership, epochs, RANDAO, streams, election, quorum, parent, attempt window) with a
///         packed commit call, 64-byte (EIP-2098) signatures, one storage slot per stream head, one
///         RANDAO reveal per leader per transaction and one history root per commit transaction.
contract MiniblockRegistryV2 is Ownable2Step, EIP712 {
    // ------------------------------------------------------------------ types

    /// @notice Status of a node as of the current epoch.
    enum NodeStatus {
        None,
        Pending,
        Active,
        Leaving,
        Left
    }

    /// @notice Everything known about a node.
    struct NodeInfo {
        address node;
        address operator;
        string url;
        NodeStatus status;
        uint64 joinEpoch;
        uint64 leaveEpoch;
        bytes32 randaoCommit;
    }

    /// @dev Cold per-node data.
    struct NodeMeta {
        address operator;
        string url;
    }

    /// @dev Per-transaction values of a commit, kept in memory against stack depth.
    struct Ctx {
        uint256 base; // calldata offset of the batch
        uint256 len; // batch length
        uint256 k; // reveal count
        uint256 e; // current epoch
        bytes32 seed;
        bytes32 domainSep;
        uint256 owners; // memory: k words, leader node index + 1 that used reveal j (0 = unused)
        uint256 revealed; // bitmap of node indices that used a reveal
        uint256 acc; // accepted headers so far
        uint256 records; // memory: accepted (streamId ‖ number ‖ headerHash) records, 72 bytes each
        uint256 leaves; // memory: accepted leaf hashes
    }

    // -------------------------------------------------------------- constants

    /// @notice Most nodes ever registered (node indices fit 8 bits).
    uint256 public constant MAX_NODES = 256;
    /// @notice Most replicas of a stream.
    uint256 public constant MAX_REPLICATION = 16;
    /// @notice Most headers in one commitMiniblocks call.
    uint256 public constant MAX_BATCH = 256;
    /// @notice Most events in one mini-block.
    uint256 public constant MAX_EVENTS_PER_BLOCK = 15000;
    /// @notice Most onion layers one reveal may skip down (keccak256^d(reveal) == commit, 1 <= d <= 8).
    uint256 public constant MAX_REVEAL_SKIP = 8;
    /// @notice Bytes of a batch record before its signatures.
    uint256 public constant RECORD_FIXED = 156;
    /// @notice Bits of a header hash kept in the stream's head slot (its top bits).
    uint256 public constant HEAD_HASH_BITS = 144;

    // Rejection reasons (MiniblockRejected.reason), same codes as v1.
    uint8 internal constant R_UNKNOWN_STREAM = 1;
    uint8 internal constant R_BAD_NUMBER = 2;
    uint8 internal constant R_BAD_PARENT = 3;
    uint8 internal constant R_WRONG_EPOCH = 4;
    uint8 internal constant R_ATTEMPT_NOT_OPEN = 5;
    uint8 internal constant R_NOT_ELECTED_LEADER = 6;
    uint8 internal constant R_BAD_LEADER_SIGNATURE = 7;
    uint8 internal constant R_BAD_ATTESTATION = 8;
    uint8 internal constant R_NOT_REPLICA = 9;
    uint8 internal constant R_DUPLICATE_ATTESTER = 10;
    uint8 internal constant R_INACTIVE_ATTESTER = 11;
    uint8 internal constant R_NO_QUORUM = 12;
    uint8 internal constant R_BAD_RANDAO_REVEAL = 13;
    uint8 internal constant R_TOO_MANY_EVENTS = 14;

    // Node word: address [0,160) | joinEpoch [160,208) | leaveEpoch [208,256).
    uint256 internal constant NEVER48 = (1 << 48) - 1;
    // Stream head slot: number [0,40) | timestamp [40,80) | replica count [80,88) |
    // replica k < 3 node index at [88 + 8k, 96 + 8k) | top 144 bits of the head's header hash [112,256).
    // Replica k >= 3 in _replicasHi at [8(k-3), 8(k-2)).
    uint256 internal constant LOW_REPLICAS = 3;
    uint256 internal constant MAX_NUMBER = (1 << 40) - 1;
    uint256 internal constant KEEP_MASK = ((1 << 112) - 1) ^ ((1 << 80) - 1); // r and low replicas
    uint256 internal constant PREFIX_MASK = ~uint256((1 << 112) - 1);
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 internal constant NOT_FOUND = type(uint256).max;

    // ------------------------------------------------------------------ state

    /// @notice Chain time of deployment; epoch(t) = (t - genesisTime) / epochLength.
    uint64 public immutable genesisTime;
    /// @notice Length of an epoch in seconds.
    uint64 public immutable epochLength;
    /// @notice Seconds after the head's commit time at which each further attempt opens.
    uint64 public immutable leaderTimeout;

    uint64 internal _epoch; // materialised epoch
    /// @notice Replica count of new streams (capped by the active node count).
    uint8 public replicationFactor;
    uint64 internal _commitCount; // shares the slot read by every commit
    bytes32 internal _seed;
    bytes32 internal _mix;

    /// @notice Whether an address may register nodes.
    mapping(address => bool) public isOperator;

    uint256[] internal _nodeWords; // by node index, see above
    mapping(address => uint256) internal _indexPlusOne;
    mapping(address => NodeMeta) internal _meta;
    bytes32[MAX_NODES] internal _randaoCommit; // by node index

    bytes32[] internal _streamIds;
    mapping(bytes32 => uint256) internal _heads; // packed, see above
    mapping(bytes32 => uint256) internal _replicasHi;
    mapping(uint256 => bytes32) internal _history; // commit index -> history root

    // ----------------------------------------------------------------- events

    event OperatorAllowed(address indexed operator);
    event OperatorRevoked(address indexed operator);
    event ReplicationFactorSet(uint8 replicationFactor);
    event NodeRegistered(address indexed node, address indexed operator, string url, uint64 joinEpoch);
    event NodeUrlChanged(address indexed node, string url);
    event NodeLeaveRequested(address indexed node, uint64 leaveEpoch);
    event EpochAdvanced(uint64 indexed epoch, bytes32 seed);
    event StreamCreated(bytes32 indexed streamId, address creator, uint64 epoch, address[] replicas, bytes32 genesisHash);
    event ReplicaReplaced(bytes32 indexed streamId, uint256 index, address oldNode, address newNode);
    /// @notice One per commit transaction that accepted headers: `headers` packs, per accepted
    ///         header in batch order, streamId (32) ‖ number (8, big-endian) ‖ headerHash (32); the
    ///         history tree's leaves are keccak256 of each 72-byte record.
    event MiniblocksCommitted(uint64 indexed commitIndex, bytes32 historyRoot, bytes headers);
    /// @notice A leader's reveal of this transaction became its commitment and entered the mix.
    event RandaoRevealed(address indexed node, bytes32 reveal, bytes32 mix);
    event MiniblockRejected(bytes32 indexed streamId, uint64 indexed number, bytes32 headerHash, uint8 reason);

    // ----------------------------------------------------------------- errors

    error InvalidConfig();
    error InvalidReplicationFactor(uint8 replicationFactor);
    error NotOperator(address caller);
    error ZeroAddress();
    error NodeAlreadyRegistered(address node);
    error TooManyNodes();
    error NodeNotRegistered(address node);
    error NotNodeOperator(address caller, address node);
    error NotNodeOrOperator(address caller, address node);
    error NodeAlreadyLeaving(address node);
    error EpochNotOver(uint64 epoch);
    error InvalidStreamId();
    error StreamAlreadyExists(bytes32 streamId);
    error UnknownStream(bytes32 streamId);
    error NoActiveNodes();
    error InvalidReplicaIndex(uint256 index);
    error ReplicaStillActive(address node);
    error NoReplacementCandidate();
    error BadBatchSize(uint256 size);
    /// @notice The packed batch ends inside the record (or reveal table) starting at `offset`.
    error TruncatedBatch(uint256 offset);
    /// @notice The packed batch has bytes after its last record, starting at `offset`.
    error TrailingBytes(uint256 offset);
    error IndexOutOfRange(uint256 index);

    // ------------------------------------------------------------ constructor

    /// @param epochLength_ Epoch length in seconds (> 0).
    /// @param leaderTimeout_ Seconds between consecutive election attempts (> 0).
    /// @param replicationFactor_ Replicas per new stream, 1..MAX_REPLICATION.
    constructor(uint64 epochLength_, uint64 leaderTimeout_, uint8 replicationFactor_)
        Ownable(msg.sender)
        EIP712("MiniblockRegistry", "2")
    {
        if (epochLength_ == 0 || leaderTimeout_ == 0) revert InvalidConfig();
        if (replicationFactor_ == 0 || replicationFactor_ > MAX_REPLICATION) {
            revert InvalidReplicationFactor(replicationFactor_);
        }
        genesisTime = uint64(block.timestamp);
        epochLength = epochLength_;
        leaderTimeout = leaderTimeout_;
        replicationFactor = replicationFactor_;
        bytes32 seed = keccak256(abi.encode(block.chainid, address(this), block.prevrandao));
        _seed = seed;
        _mix = seed;
        emit ReplicationFactorSet(replicationFactor_);
        emit EpochAdvanced(0, seed);
    }

    // -------------------------------------------------------------- modifiers

    modifier advancing() {
        _advance();
        _;
    }

    modifier onlyOperator() {
        if (!isOperator[msg.sender]) revert NotOperator(msg.sender);
        _;
    }

    // ------------------------------------------------------------- governance

    /// @notice Lets `operator` register nodes. Owner only.
    /// @param operator The operator address.
    function allowOperator(address operator) external onlyOwner advancing {
        if (operator == address(0)) revert ZeroAddress();
        isOperator[operator] = true;
        emit OperatorAllowed(operator);
    }

    /// @notice Stops `operator` from registering further nodes (its nodes stay). Owner only.
    /// @param operator The operator address.
    function revokeOperator(address operator) external onlyOwner advancing {
        isOperator[operator] = false;
        emit OperatorRevoked(operator);
    }

    /// @notice Sets the replica count of streams created from now on. Owner only.
    /// @param r New replication factor, 1..MAX_REPLICATION.
    function setReplicationFactor(uint8 r) external onlyOwner advancing {
        if (r == 0 || r > MAX_REPLICATION) revert InvalidReplicationFactor(r);
        replicationFactor = r;
        emit ReplicationFactorSet(r);
    }

    // ------------------------------------------------------------- membership

    /// @notice Registers `node` (operator only); it becomes active from the next epoch.
    /// @param node The node's signing address.
    /// @param url The node's HTTP endpoint.
    /// @param randaoCommit keccak256^K(secret), the top of the node's RANDAO hash onion.
    function registerNode(address node, string calldata url, bytes32 randaoCommit) external onlyOperator advancing {
        if (node == address(0)) revert ZeroAddress();
        if (_indexPlusOne[node] != 0) revert NodeAlreadyRegistered(node);
        uint256 idx = _nodeWords.length;
        if (idx >= MAX_NODES) revert TooManyNodes();
        uint64 joinEpoch = _epoch + 1;
        _nodeWords.push(uint256(uint160(node)) | (uint256(joinEpoch) << 160) | (NEVER48 << 208));
        _indexPlusOne[node] = idx + 1;
        _randaoCommit[idx] = randaoCommit;
        _meta[node] = NodeMeta({operator: msg.sender, url: url});
        emit NodeRegistered(node, msg.sender, url, joinEpoch);
    }

    /// @notice Changes a node's URL (its operator only).
    /// @param node The node.
    /// @param url The new URL.
    function setNodeUrl(address node, string calldata url) external advancing {
        if (_indexPlusOne[node] == 0) revert NodeNotRegistered(node);
        NodeMeta storage m = _meta[node];
        if (m.operator != msg.sender) revert NotNodeOperator(msg.sender, node);
        m.url = url;
        emit NodeUrlChanged(node, url);
    }

    /// @notice Asks `node` to leave (its operator or the node itself); effective from the next epoch.
    /// @param node The node.
    function requestLeave(address node) external advancing {
        uint256 ip = _indexPlusOne[node];
        if (ip == 0) revert NodeNotRegistered(node);
        if (msg.sender != node && msg.sender != _meta[node].operator) revert NotNodeOrOperator(msg.sender, node);
        uint256 w = _nodeWords[ip - 1];
        if (w >> 208 != NEVER48) revert NodeAlreadyLeaving(node);
        uint64 leaveEpoch = _epoch + 1;
        _nodeWords[ip - 1] = (w & ((1 << 208) - 1)) | (uint256(leaveEpoch) << 208);
        emit NodeLeaveRequested(node, leaveEpoch);
    }

    // ----------------------------------------------------------------- epochs

    /// @notice Materialises the current epoch (its seed becomes the current mix). Reverts
    ///         `EpochNotOver` if the stored epoch is already current.
    function advanceEpoch() external {
        if (!_advance()) revert EpochNotOver(_epoch);
    }

    function _epochAt(uint256 t) internal view returns (uint64) {
        return uint64((t - genesisTime) / epochLength);
    }

    /// @dev Lazy advance; true if it moved.
    function _advance() internal returns (bool) {
        uint64 e = _epochAt(block.timestamp);
        if (e <= _epoch) return false;
        bytes32 seed = _mix;
        _epoch = e;
        _seed = seed;
        emit EpochAdvanced(e, seed);
        return true;
    }

    // ---------------------------------------------------------------- streams

    /// @notice Creates a stream with min(replicationFactor, active nodes) replicas picked by the seeded
    ///         partial Fisher-Yates shuffle of v1, and stores its genesis head.
    /// @param streamId The new stream's id (non-zero, unused).
    function createStream(bytes32 streamId) external advancing {
        if (streamId == bytes32(0)) revert InvalidStreamId();
        if (_heads[streamId] != 0) revert StreamAlreadyExists(streamId);
        uint64 e = _epoch;
        uint256 n = _nodeWords.length;
        uint256[] memory act = new uint256[](n);
        uint256 m;
        for (uint256 i; i < n; ++i) {
            if (_wordActive(_nodeWords[i], e)) act[m++] = i;
        }
        if (m == 0) revert NoActiveNodes();
        assembly ("memory-safe") {
            mstore(act, m)
        }
        uint256 k = replicationFactor;
        if (k > m) k = m;
        Election.pick(act, k, _seed, streamId);

        bytes32 gh = MiniblockTypes.genesisHash(streamId, e);
        uint256 head = (uint256(gh) & PREFIX_MASK) | (block.timestamp << 40) | (k << 80);
        uint256 hi;
        address[] memory reps = new address[](k);
        for (uint256 i; i < k; ++i) {
            uint256 idx = act[i];
            reps[i] = address(uint160(_nodeWords[idx]));
            if (i < LOW_REPLICAS) head |= idx << (88 + 8 * i);
            else hi |= idx << (8 * (i - LOW_REPLICAS));
        }
        _heads[streamId] = head;
        if (k > LOW_REPLICAS) _replicasHi[streamId] = hi;
        _streamIds.push(streamId);
        emit StreamCreated(streamId, msg.sender, e, reps, gh);
    }

    /// @notice Replaces the replica at `index` of a stream, if it is no longer active, by an active
    ///         non-replica (v1's rule: candidates in node-list order,
    ///         pick uint256(keccak256(abi.encode(seed, streamId, index))) % count).
    /// @param streamId The stream.
    /// @param index Position in the stream's replica list.
    function replaceReplica(bytes32 streamId, uint256 index) external advancing {
        uint256 head = _heads[streamId];
        if (head == 0) revert UnknownStream(streamId);
        uint256 r = uint8(head >> 80);
        if (index >= r) revert InvalidReplicaIndex(index);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[streamId] : 0;
        uint64 e = _epoch;
        uint256 oldIdx = _replicaAt(head, hi, index);
        address oldNode = address(uint160(_nodeWords[oldIdx]));
        if (_wordActive(_nodeWords[oldIdx], e)) revert ReplicaStillActive(oldNode);

        uint256 n = _nodeWords.length;
        uint256[] memory cand = new uint256[](n);
        uint256 m;
        for (uint256 i; i < n; ++i) {
            if (_wordActive(_nodeWords[i], e) && _positionOf(head, hi, r, i) == NOT_FOUND) cand[m++] = i;
        }
        if (m == 0) revert NoReplacementCandidate();
        uint256 newIdx = cand[uint256(keccak256(abi.encode(_seed, streamId, index))) % m];
        if (index < LOW_REPLICAS) {
            uint256 shift = 88 + 8 * index;
            _heads[streamId] = (head & ~(uint256(0xff) << shift)) | (newIdx << shift);
        } else {
            uint256 shift = 8 * (index - LOW_REPLICAS);
            _replicasHi[streamId] = (hi & ~(uint256(0xff) << shift)) | (newIdx << shift);
        }
        emit ReplicaReplaced(streamId, index, oldNode, address(uint160(_nodeWords[newIdx])));
    }

    // ----------------------------------------------------------------- commit

    /// @notice Commits a packed batch of headers (byte layout: docs/protocol.md, "Version 2"):
    ///         `uint16 n ‖ uint8 k ‖ k × bytes32 reveal ‖ n records`, a record being
    ///         `streamId ‖ prevHash ‖ eventsRoot ‖ stateRoot (32 each) ‖ uint64 number ‖ uint64 epoch ‖
    ///         uint32 eventCount ‖ uint32 attempt ‖ uint8 leaderPos ‖ uint8 revealIndex ‖ uint16 attesters ‖
    ///         leader signature ‖ one signature per set bit of `attesters`, ascending (64-byte EIP-2098 each)`.
    ///         Each header is checked alone; a failing one emits `MiniblockRejected` and changes nothing.
    ///         Reverts only on a malformed batch (`BadBatchSize`, `TruncatedBatch`, `TrailingBytes`).
    ///         Anyone may send it: the contract checks signatures, not the sender.
    /// @param batch The packed batch.
    function commitMiniblocks(bytes calldata batch) external {
        Ctx memory c;
        uint256 n;
        {
            uint256 len = batch.length;
            if (len < 3) revert TruncatedBatch(0);
            uint256 base;
            uint256 k;
            assembly ("memory-safe") {
                base := batch.offset
                let w := calldataload(base)
                n := shr(240, w)
                k := and(shr(232, w), 0xff)
            }
            if (n == 0 || n > MAX_BATCH) revert BadBatchSize(n);
            if (3 + 32 * k > len) revert TruncatedBatch(3);
            c.base = base;
            c.len = len;
            c.k = k;
        }
        _advance();
        c.e = _epoch;
        c.seed = _seed;
        c.domainSep = _domainSeparatorV4();
        {
            uint256 owners;
            uint256 records;
            uint256 leaves;
            uint256 k = c.k;
            assembly ("memory-safe") {
                owners := mload(0x40)
                for { let j := 0 } lt(j, k) { j := add(j, 1) } { mstore(add(owners, shl(5, j)), 0) }
                records := add(owners, shl(5, k))
                leaves := add(records, mul(n, 72))
                mstore(0x40, add(leaves, shl(5, add(n, 1))))
            }
            c.owners = owners;
            c.records = records;
            c.leaves = leaves;
        }
        uint256 o = 3 + 32 * c.k;
        for (uint256 i; i < n; ++i) {
            o = _record(c, o);
        }
        if (o != c.len) revert TrailingBytes(o);
        _finish(c);
    }

    /// @dev Checks and applies the record at batch offset `o`; returns the next record's offset.
    function _record(Ctx memory c, uint256 o) internal returns (uint256 next) {
        uint256 p = c.base + o;
        uint256 w;
        assembly ("memory-safe") {
            w := shr(32, calldataload(add(p, 128))) // number|epoch|count|attempt|leaderPos|revealIdx|attesters
        }
        next = o + RECORD_FIXED + 64 * (1 + _popcount(w & 0xffff));
        if (o + RECORD_FIXED > c.len || next > c.len) revert TruncatedBatch(o);
        bytes32 sid = _sidAt(p);
        uint256 head = _heads[sid];
        (uint256 leaderIdx, uint256 leaderWord, uint256 hi) = _leaderOf(sid, head, w);
        bytes32 hh = _hashRecord(p, w, address(uint160(leaderWord)), _revealAt(c, w));
        uint8 reason = _check(c, p, w, head, hi, hh, leaderIdx, leaderWord);
        if (reason == 0) reason = _checkReveal(c, (w >> 16) & 0xff, leaderIdx);
        if (reason != 0) emit MiniblockRejected(sid, uint64(w >> 160), hh, reason);
        else _accept(c, sid, w >> 160, hh, head);
    }

    /// @dev The claimed leader (node index at replica position leaderPos, NOT_FOUND if none), its
    ///      node word, and the stream's replicas 3.. word.
    function _leaderOf(bytes32 sid, uint256 head, uint256 w)
        internal
        view
        returns (uint256 leaderIdx, uint256 leaderWord, uint256 hi)
    {
        leaderIdx = NOT_FOUND;
        if (head == 0) return (leaderIdx, 0, 0);
        uint256 r = uint8(head >> 80);
        if (r > LOW_REPLICAS) hi = _replicasHi[sid];
        uint256 lp = (w >> 24) & 0xff;
        if (lp < r) {
            leaderIdx = _replicaAt(head, hi, lp);
            leaderWord = _nodeWord(leaderIdx);
        }
    }

    /// @dev The record's reveal (0 if its index is past the reveal table).
    function _revealAt(Ctx memory c, uint256 w) internal pure returns (bytes32 reveal) {
        uint256 j = (w >> 16) & 0xff;
        if (j >= c.k) return bytes32(0);
        uint256 rp = c.base + 3 + 32 * j;
        assembly ("memory-safe") {
            reveal := calldataload(rp)
        }
    }

    /// @dev Effects of an accepted header: the head slot, and its record and leaf in memory.
    function _accept(Ctx memory c, bytes32 sid, uint256 num, bytes32 hh, uint256 head) internal {
        _heads[sid] = (uint256(hh) & PREFIX_MASK) | (head & KEEP_MASK) | num | (block.timestamp << 40);
        uint256 acc = c.acc;
        uint256 rec = c.records + 72 * acc;
        uint256 lf = c.leaves + 32 * acc;
        assembly ("memory-safe") {
            mstore(rec, sid)
            mstore(add(rec, 0x20), shl(192, num))
            mstore(add(rec, 0x28), hh)
            mstore(lf, keccak256(rec, 0x48))
        }
        c.acc = acc + 1;
    }

    /// @dev hashStruct(Header) of a record, the derived leader and the record's reveal.
    function _hashRecord(uint256 p, uint256 w, address leader, bytes32 reveal) internal pure returns (bytes32 hh) {
        bytes32 th = MiniblockTypes.HEADER_TYPEHASH;
        assembly ("memory-safe") {
            let f := mload(0x40)
            mstore(f, th)
            mstore(add(f, 0x20), calldataload(p)) // streamId
            mstore(add(f, 0x40), shr(160, w)) // number
            mstore(add(f, 0x60), calldataload(add(p, 0x20))) // prevHash
            mstore(add(f, 0x80), calldataload(add(p, 0x40))) // eventsRoot
            mstore(add(f, 0xa0), and(shr(64, w), 0xffffffff)) // eventCount
            mstore(add(f, 0xc0), and(shr(96, w), 0xffffffffffffffff)) // epoch
            mstore(add(f, 0xe0), and(shr(32, w), 0xffffffff)) // attempt
            mstore(add(f, 0x100), and(leader, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(f, 0x120), reveal)
            mstore(add(f, 0x140), calldataload(add(p, 0x60))) // stateRoot
            hh := keccak256(f, 0x160)
        }
    }

    /// @dev All checks but the reveal's, in the order of docs/protocol.md "Version 2"; 0 or the reason.
    function _check(
        Ctx memory c,
        uint256 p,
        uint256 w,
        uint256 head,
        uint256 hi,
        bytes32 hh,
        uint256 leaderIdx,
        uint256 leaderWord
    ) internal view returns (uint8 reason) {
        reason = _checkHead(c, p, w, head, leaderIdx);
        if (reason == 0) reason = _checkSigs(c, p, w, head, hi, hh, leaderWord);
    }

    /// @dev Checks 1..6, 14, 9, 10, 12: stream, number, parent, epoch, attempt window, elected
    ///      leader, event count, attester bitmap, quorum.
    function _checkHead(Ctx memory c, uint256 p, uint256 w, uint256 head, uint256 leaderIdx)
        internal
        view
        returns (uint8)
    {
        if (head == 0) return R_UNKNOWN_STREAM;
        uint256 number = w >> 160;
        if (number != (head & MAX_NUMBER) + 1 || number > MAX_NUMBER) return R_BAD_NUMBER;
        {
            bytes32 prev;
            assembly ("memory-safe") {
                prev := calldataload(add(p, 0x20))
            }
            if ((uint256(prev) ^ head) & PREFIX_MASK != 0) return R_BAD_PARENT;
        }
        if ((w >> 96) & 0xffffffffffffffff != c.e) return R_WRONG_EPOCH;
        uint256 attempt = (w >> 32) & 0xffffffff;
        unchecked {
            if (block.timestamp < ((head >> 40) & MAX_NUMBER) + attempt * leaderTimeout) return R_ATTEMPT_NOT_OPEN;
        }
        uint256 r = uint8(head >> 80);
        uint256 pos = Election.leaderPosition(c.seed, _sidAt(p), uint64(number), uint32(attempt), r);
        if ((w >> 24) & 0xff != pos || leaderIdx == NOT_FOUND) return R_NOT_ELECTED_LEADER;
        if ((w >> 64) & 0xffffffff > MAX_EVENTS_PER_BLOCK) return R_TOO_MANY_EVENTS;
        uint256 attesters = w & 0xffff;
        if (attesters >> r != 0) return R_NOT_REPLICA;
        if (attesters & (1 << pos) != 0) return R_DUPLICATE_ATTESTER;
        if (1 + _popcount(attesters) < r / 2 + 1) return R_NO_QUORUM;
        return 0;
    }

    /// @dev Checks 7, 11, 8: the leader's signature and activity, then each attester's.
    function _checkSigs(Ctx memory c, uint256 p, uint256 w, uint256 head, uint256 hi, bytes32 hh, uint256 leaderWord)
        internal
        view
        returns (uint8)
    {
        bytes32 digest = _digest(c.domainSep, hh);
        uint256 sp = p + RECORD_FIXED;
        if (_recover(digest, sp) != address(uint160(leaderWord))) return R_BAD_LEADER_SIGNATURE;
        uint256 e = c.e;
        if (!_wordActive(leaderWord, e)) return R_INACTIVE_ATTESTER;
        uint256 attesters = w & 0xffff;
        for (uint256 k; attesters != 0; ++k) {
            if (attesters & 1 != 0) {
                sp += 64;
                uint256 word = _nodeWord(_replicaAt(head, hi, k));
                if (_recover(digest, sp) != address(uint160(word))) return R_BAD_ATTESTATION;
                if (!_wordActive(word, e)) return R_INACTIVE_ATTESTER;
            }
            attesters >>= 1;
        }
        return 0;
    }

    function _sidAt(uint256 p) internal pure returns (bytes32 sid) {
        assembly ("memory-safe") {
            sid := calldataload(p)
        }
    }

    /// @dev Check 13: the record's reveal entry opens the leader's commitment (first use) or is the
    ///      entry this leader already used in this transaction; a leader uses one entry per transaction.
    function _checkReveal(Ctx memory c, uint256 j, uint256 leaderIdx) internal view returns (uint8) {
        if (j >= c.k) return R_BAD_RANDAO_REVEAL;
        bytes32 reveal;
        uint256 rp = c.base + 3 + 32 * j;
        assembly ("memory-safe") {
            reveal := calldataload(rp)
        }
        uint256 slot = c.owners + 32 * j;
        uint256 owner;
        assembly ("memory-safe") {
            owner := mload(slot)
        }
        if (owner != 0) return owner == leaderIdx + 1 ? 0 : R_BAD_RANDAO_REVEAL;
        if (c.revealed & (1 << leaderIdx) != 0) return R_BAD_RANDAO_REVEAL;
        if (!_revealOk(reveal, _randaoCommit[leaderIdx])) return R_BAD_RANDAO_REVEAL;
        // Not a storage effect: the memory bookkeeping of this transaction's reveals.
        assembly ("memory-safe") {
            mstore(slot, add(leaderIdx, 1))
        }
        c.revealed |= 1 << leaderIdx;
        return 0;
    }

    /// @dev Effects after the loop: the history root, the commit log, reveals and the mix.
    function _finish(Ctx memory c) internal {
        uint256 acc = c.acc;
        if (acc == 0) return;
        bytes32 root = History.rootInPlace(c.leaves, acc);
        uint64 idx = _commitCount;
        _history[idx] = root;
        _commitCount = idx + 1;
        bytes memory records;
        uint256 rp = c.records - 32;
        assembly ("memory-safe") {
            // the word before the records is the last owners word (or below): save, use as length
            records := rp
        }
        uint256 saved;
        assembly ("memory-safe") {
            saved := mload(rp)
            mstore(rp, mul(acc, 72))
        }
        emit MiniblocksCommitted(idx, root, records);
        assembly ("memory-safe") {
            mstore(rp, saved)
        }
        bytes32 mix = _mix;
        uint256 k = c.k;
        for (uint256 j; j < k; ++j) {
            uint256 owner;
            bytes32 reveal;
            uint256 op = c.owners + 32 * j;
            uint256 cp = c.base + 3 + 32 * j;
            assembly ("memory-safe") {
                owner := mload(op)
                reveal := calldataload(cp)
            }
            if (owner == 0) continue;
            _randaoCommit[owner - 1] = reveal;
            assembly ("memory-safe") {
                mstore(0x00, mix)
                mstore(0x20, reveal)
                mix := keccak256(0x00, 0x40)
            }
            emit RandaoRevealed(address(uint160(_nodeWords[owner - 1])), reveal, mix);
        }
        _mix = mix;
    }

    /// @dev keccak256("\x19\x01" ‖ domainSeparator ‖ structHash).
    function _digest(bytes32 domainSep, bytes32 structHash) internal pure returns (bytes32 d) {
        assembly ("memory-safe") {
            let f := mload(0x40)
            mstore(f, hex"1901")
            mstore(add(f, 0x02), domainSep)
            mstore(add(f, 0x22), structHash)
            d := keccak256(f, 0x42)
        }
    }

    /// @dev ecrecover of the 64-byte EIP-2098 signature `r ‖ yParityAndS` at calldata `sp`;
    ///      address(0) for a high-s or unrecoverable signature.
    function _recover(bytes32 digest, uint256 sp) internal view returns (address a) {
        assembly ("memory-safe") {
            let vs := calldataload(add(sp, 0x20))
            let s := and(vs, 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)
            if iszero(gt(s, HALF_N)) {
                let f := mload(0x40)
                mstore(f, digest)
                mstore(add(f, 0x20), add(27, shr(255, vs)))
                mstore(add(f, 0x40), calldataload(sp))
                mstore(add(f, 0x60), s)
                mstore(0x00, 0)
                pop(staticcall(gas(), 0x01, f, 0x80, 0x00, 0x20))
                a := mload(0x00)
            }
        }
    }

    /// @dev keccak256^d(reveal) == commit for some 1 <= d <= MAX_REVEAL_SKIP.
    function _revealOk(bytes32 reveal, bytes32 commit) internal pure returns (bool ok) {
        assembly ("memory-safe") {
            let x := reveal
            for { let d := 0 } lt(d, 8) { d := add(d, 1) } {
                mstore(0x00, x)
                x := keccak256(0x00, 0x20)
                if eq(x, commit) {
                    ok := 1
                    break
                }
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    function _popcount(uint256 x) internal pure returns (uint256 c) {
        unchecked {
            for (; x != 0; x &= x - 1) ++c;
        }
    }

    /// @dev The node word of node index `idx` (one SLOAD; 0 past the end).
    function _nodeWord(uint256 idx) internal view returns (uint256 w) {
        assembly ("memory-safe") {
            mstore(0x00, _nodeWords.slot)
            if lt(idx, sload(_nodeWords.slot)) { w := sload(add(keccak256(0x00, 0x20), idx)) }
        }
    }

    function _wordActive(uint256 w, uint256 e) internal pure returns (bool) {
        uint256 joinEpoch = (w >> 160) & NEVER48;
        return joinEpoch != 0 && joinEpoch <= e && e < (w >> 208);
    }

    function _replicaAt(uint256 head, uint256 hi, uint256 k) internal pure returns (uint256) {
        if (k < LOW_REPLICAS) return uint8(head >> (88 + 8 * k));
        return uint8(hi >> (8 * (k - LOW_REPLICAS)));
    }

    function _positionOf(uint256 head, uint256 hi, uint256 r, uint256 idx) internal pure returns (uint256) {
        for (uint256 k; k < r; ++k) {
            if (_replicaAt(head, hi, k) == idx) return k;
        }
        return NOT_FOUND;
    }

    function _viewEpochSeed() internal view returns (uint64 e, bytes32 seed) {
        e = _epochAt(block.timestamp);
        if (e > _epoch) return (e, _mix);
        return (_epoch, _seed);
    }

    function _streamHeadOrRevert(bytes32 streamId) internal view returns (uint256 head, uint256 hi) {
        head = _heads[streamId];
        if (head == 0) revert UnknownStream(streamId);
        if (uint8(head >> 80) > LOW_REPLICAS) hi = _replicasHi[streamId];
    }

    function _status(uint256 w, uint64 e) internal pure returns (NodeStatus) {
        uint256 joinEpoch = (w >> 160) & NEVER48;
        uint256 leaveEpoch = w >> 208;
        if (joinEpoch == 0) return NodeStatus.None;
        if (e >= leaveEpoch) return NodeStatus.Left;
        if (e < joinEpoch) return NodeStatus.Pending;
        if (leaveEpoch != NEVER48) return NodeStatus.Leaving;
        return NodeStatus.Active;
    }

    // ------------------------------------------------------------------ views

    /// @notice The current epoch (as if advanced).
    function currentEpoch() external view returns (uint64 e) {
        (e,) = _viewEpochSeed();
    }

    /// @notice The seed of the current epoch (as if advanced).
    function currentSeed() external view returns (bytes32 seed) {
        (, seed) = _viewEpochSeed();
    }

    /// @notice The current RANDAO mix.
    function randaoMix() external view returns (bytes32) {
        return _mix;
    }

    /// @notice The replica elected to lead block `number` of a stream at `attempt` in the current epoch
    ///         (reverts `UnknownStream` for an unknown stream).
    /// @param streamId The stream.
    /// @param number The block number.
    /// @param attempt The attempt.
    function electedLeader(bytes32 streamId, uint64 number, uint32 attempt) external view returns (address) {
        (, address leader) = electedPosition(streamId, number, attempt);
        return leader;
    }

    /// @notice The replica position (the record's `leaderPos`) and address of the elected leader.
    /// @param streamId The stream.
    /// @param number The block number.
    /// @param attempt The attempt.
    function electedPosition(bytes32 streamId, uint64 number, uint32 attempt)
        public
        view
        returns (uint256 pos, address leader)
    {
        (uint256 head, uint256 hi) = _streamHeadOrRevert(streamId);
        (, bytes32 seed) = _viewEpochSeed();
        pos = Election.leaderPosition(seed, streamId, number, attempt, uint8(head >> 80));
        leader = address(uint160(_nodeWords[_replicaAt(head, hi, pos)]));
    }

    /// @notice Chain time from which `attempt` may be committed for the stream's next block
    ///         (reverts `UnknownStream` for an unknown stream).
    /// @param streamId The stream.
    /// @param attempt The attempt.
    function attemptOpensAt(bytes32 streamId, uint32 attempt) external view returns (uint64) {
        (uint256 head,) = _streamHeadOrRevert(streamId);
        uint256 t = ((head >> 40) & MAX_NUMBER) + uint256(attempt) * leaderTimeout;
        return t > type(uint64).max ? type(uint64).max : uint64(t);
    }

    /// @notice Whether a stream exists.
    /// @param streamId The stream.
    function streamExists(bytes32 streamId) external view returns (bool) {
        return _heads[streamId] != 0;
    }

    /// @notice A stream's head: number, the top 144 bits of its header hash (the full hash is in the
    ///         `MiniblocksCommitted` log and provable with `verifyHeaderCommitted`), and the chain time
    ///         it was committed (or the stream created). All zero for an unknown stream.
    /// @param streamId The stream.
    function streamHead(bytes32 streamId) external view returns (uint64 number, bytes18 hashPrefix, uint64 timestamp) {
        uint256 head = _heads[streamId];
        if (head == 0) return (0, bytes18(0), 0);
        number = uint64(head & MAX_NUMBER);
        timestamp = uint64((head >> 40) & MAX_NUMBER);
        hashPrefix = bytes18(bytes32(head & PREFIX_MASK));
    }

    /// @notice True iff `headerHash` prefix-matches the stream's head at `number` (the head only).
    /// @param streamId The stream.
    /// @param number The block number.
    /// @param headerHash The full header hash.
    function isHead(bytes32 streamId, uint64 number, bytes32 headerHash) external view returns (bool) {
        uint256 head = _heads[streamId];
        return head != 0 && head & MAX_NUMBER == number && (uint256(headerHash) ^ head) & PREFIX_MASK == 0;
    }

    /// @notice A stream's replicas, in stored order (empty for an unknown stream).
    /// @param streamId The stream.
    function replicasOf(bytes32 streamId) external view returns (address[] memory reps) {
        uint256 head = _heads[streamId];
        uint256 r = uint8(head >> 80);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[streamId] : 0;
        reps = new address[](r);
        for (uint256 k; k < r; ++k) reps[k] = address(uint160(_nodeWords[_replicaAt(head, hi, k)]));
    }

    /// @notice Number of streams.
    function streamCount() external view returns (uint256) {
        return _streamIds.length;
    }

    /// @notice The id of the `i`-th created stream.
    /// @param i Index.
    function streamIdAt(uint256 i) external view returns (bytes32) {
        if (i >= _streamIds.length) revert IndexOutOfRange(i);
        return _streamIds[i];
    }

    /// @notice Number of registered nodes (any status).
    function nodeCount() external view returns (uint256) {
        return _nodeWords.length;
    }

    /// @notice A node's index (its byte in stream head slots), or reverts `NodeNotRegistered`.
    /// @param node The node.
    function nodeIndex(address node) external view returns (uint256) {
        uint256 ip = _indexPlusOne[node];
        if (ip == 0) revert NodeNotRegistered(node);
        return ip - 1;
    }

    /// @notice A node's record (status `None` and zero fields if unknown).
    /// @param node The node.
    function getNode(address node) public view returns (NodeInfo memory info) {
        uint256 ip = _indexPlusOne[node];
        if (ip == 0) return info;
        uint256 w = _nodeWords[ip - 1];
        (uint64 e,) = _viewEpochSeed();
        NodeMeta storage m = _meta[node];
        uint256 leaveEpoch = w >> 208;
        info = NodeInfo({
            node: node,
            operator: m.operator,
            url: m.url,
            status: _status(w, e),
            joinEpoch: uint64((w >> 160) & NEVER48),
            leaveEpoch: leaveEpoch == NEVER48 ? type(uint64).max : uint64(leaveEpoch),
            randaoCommit: _randaoCommit[ip - 1]
        });
    }

    /// @notice Up to `limit` node records from position `offset` of the node list.
    /// @param offset First position.
    /// @param limit Maximum count.
    function getNodes(uint256 offset, uint256 limit) external view returns (NodeInfo[] memory out) {
        uint256 n = _nodeWords.length;
        if (offset >= n) return new NodeInfo[](0);
        uint256 end = n - offset > limit ? offset + limit : n;
        out = new NodeInfo[](end - offset);
        for (uint256 i = offset; i < end; ++i) out[i - offset] = getNode(address(uint160(_nodeWords[i])));
    }

    /// @notice A node's current RANDAO commitment (last accepted reveal); 0 if unknown.
    /// @param node The node.
    function randaoCommitOf(address node) external view returns (bytes32) {
        uint256 ip = _indexPlusOne[node];
        return ip == 0 ? bytes32(0) : _randaoCommit[ip - 1];
    }

    /// @notice Number of commit transactions that accepted at least one header.
    function commitCount() external view returns (uint64) {
        return _commitCount;
    }

    /// @notice The history root of commit transaction `commitIndex` (0 if none).
    /// @param commitIndex The commit index (`MiniblocksCommitted.commitIndex`).
    function historyRoot(uint64 commitIndex) external view returns (bytes32) {
        return _history[commitIndex];
    }

    /// @notice The history leaf of a header: keccak256(streamId ‖ uint64 number ‖ headerHash).
    /// @param streamId The stream.
    /// @param number The block number.
    /// @param headerHash The header hash.
    function historyLeaf(bytes32 streamId, uint64 number, bytes32 headerHash) external pure returns (bytes32) {
        return History.leaf(streamId, number, headerHash);
    }

    /// @notice True iff the header with hash `headerHash` was committed at (streamId, number) by
    ///         commit transaction `proof.commitIndex`. Since a commit needs number == head + 1, at most
    ///         one header is ever committed at a (stream, number).
    /// @param streamId The stream.
    /// @param number The block number.
    /// @param headerHash The header hash.
    /// @param proof The history proof.
    function verifyHeaderCommitted(bytes32 streamId, uint64 number, bytes32 headerHash, HistoryProof calldata proof)
        public
        view
        returns (bool)
    {
        return History.verify(_history[proof.commitIndex], History.leaf(streamId, number, headerHash), proof);
    }

    /// @notice hashStruct(Event).
    /// @param e The event.
    function hashEvent(Event calldata e) external pure returns (bytes32) {
        return MiniblockTypes.hashEvent(e);
    }

    /// @notice hashStruct(Header).
    /// @param h The header.
    function hashHeader(Header calldata h) external pure returns (bytes32) {
        return MiniblockTypes.hashHeader(h);
    }

    /// @notice The EIP-712 digest an event author signs (domain version "2").
    /// @param e The event.
    function eventDigest(Event calldata e) external view returns (bytes32) {
        return _hashTypedDataV4(MiniblockTypes.hashEvent(e));
    }

    /// @notice The EIP-712 digest leaders and attesters sign (domain version "2").
    /// @param h The header.
    function headerDigest(Header calldata h) external view returns (bytes32) {
        return _hashTypedDataV4(MiniblockTypes.hashHeader(h));
    }

    /// @notice Merkle root over ordered event hashes.
    /// @param eventHashes The event hashes in block order.
    function merkleRoot(bytes32[] calldata eventHashes) external pure returns (bytes32) {
        return Merkle.root(eventHashes);
    }

    /// @notice Verifies a Merkle proof for `eventHash` at `index` of `count` events.
    /// @param root The root.
    /// @param count Number of leaves.
    /// @param index Leaf index.
    /// @param eventHash The event hash.
    /// @param proof Siblings bottom-up.
    function verifyMerkleProof(bytes32 root, uint256 count, uint256 index, bytes32 eventHash, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return Merkle.verify(root, count, index, eventHash, proof);
    }

    /// @notice True iff `header` was committed (history proof `hp`), index < eventCount, and the
    ///         event proof holds against its eventsRoot.
    /// @param header The header.
    /// @param hp History proof of the header.
    /// @param proof Event Merkle siblings bottom-up.
    /// @param index The event's index in the block.
    /// @param eventHash The event hash.
    function verifyInclusion(
        Header calldata header,
        HistoryProof calldata hp,
        bytes32[] calldata proof,
        uint256 index,
        bytes32 eventHash
    ) external view returns (bool) {
        bytes32 hh = MiniblockTypes.hashHeader(header);
        if (!verifyHeaderCommitted(header.streamId, header.number, hh, hp)) return false;
        if (index >= header.eventCount) return false;
        return Merkle.verify(header.eventsRoot, header.eventCount, index, eventHash, proof);
    }
}
