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

    // -------------------------------------------------------------- constants

    /// @notice Most live nodes (registered, no leave or eviction scheduled); also the number of node
    ///         slots (node indices fit 8 bits). A slot is reused once its node has left and no stream
    ///         names it any more (docs/protocol.md "Version 2", "Membership").
    uint256 public constant MAX_NODES = 256;
    /// @notice A replica is dead (replaceable by anyone) once it has missed at least DEAD_MISSES slots
    ///         since it last led a committed header ...
    uint256 public constant DEAD_MISSES = 3;
    /// @notice ... and led nothing for DEAD_EPOCHS epochs (docs/protocol.md "Version 2", "Dead replicas").
    uint256 public constant DEAD_EPOCHS = 2;
    /// @notice Most replicas of a stream.
    uint256 public constant MAX_REPLICATION = 16;
    /// @notice Most headers in one commitMiniblocks call.
    uint256 public constant MAX_BATCH = 256;
    /// @notice Most events in one mini-block.
    uint256 public constant MAX_EVENTS_PER_BLOCK = 15000;
    /// @notice Most onion layers one reveal may skip down (keccak256^d(reveal) == commit, 1 <= d <= 8).
    uint256 public constant MAX_REVEAL_SKIP = 8;
    /// @notice Bytes of a batch record before its signatures.
    uint256 public constant RECORD_FIXED = 127;
    /// @notice Bits of a header hash kept in the stream's head slot (its top bits).
    uint256 public constant HEAD_HASH_BITS = 160;
    /// @notice Commit transactions per history checkpoint (`historyCheckpoint`).
    uint256 public constant HISTORY_WINDOW = 64;

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

    // Node word: address [0,160) | joinEpoch [160,192) | leaveEpoch [192,224) | refs [224,256)
    // (refs = how many (stream, replica position) pairs name this slot).
    uint256 internal constant NEVER32 = (1 << 32) - 1;
    uint256 internal constant ADDR_MASK = (1 << 160) - 1;
    // Onion word, by node index: the top 192 bits of the RANDAO commitment | misses [32,64) |
    // lastLedEpoch [0,32) (the last epoch it led a committed header, or the first epoch its onion is
    // usable, whichever is later).
    uint256 internal constant ONION_MASK = ~uint256((1 << 64) - 1);
    // Stream head slot: number [0,32) | timestamp [32,64) | replica count [64,72) |
    // replica k < 3 node index at [72 + 8k, 80 + 8k) | top 160 bits of the head's header hash [96,256).
    // Replica k >= 3 in _replicasHi at [8(k-3), 8(k-2)).
    uint256 internal constant LOW_REPLICAS = 3;
    uint256 internal constant MAX_NUMBER = (1 << 32) - 1;
    uint256 internal constant PREFIX_MASK = ~uint256((1 << 96) - 1);
    uint256 internal constant NOT_FOUND = type(uint256).max;

    // ------------------------------------------------------------------ state

    /// @notice Chain time of deployment; epoch(t) = (t - genesisTime) / epochLength.
    uint64 public immutable genesisTime;
    /// @notice Length of an epoch in seconds.
    uint64 public immutable epochLength;
    /// @notice Seconds after the head's commit time at which each further attempt opens.
    uint64 public immutable leaderTimeout;

    // The two words every commit reads (one cold read each; only the second is written):
    // _es = seed (top 192 bits) | replicationFactor [32,40) | materialised epoch [0,32);
    // _mc = RANDAO mix (top 192 bits) | commitCount [0,64).
    uint256 internal _es;
    uint256 internal _mc;

    /// @notice Whether an address may register nodes.
    mapping(address => bool) public isOperator;

    uint256[] internal _nodeWords; // by node index, see above
    mapping(address => uint256) internal _indexPlusOne;
    mapping(address => NodeMeta) internal _meta;
    uint256[MAX_NODES] internal _onion; // by node index, see above
    uint256 internal _liveCount; // registered nodes with no leave scheduled

    bytes32[] internal _streamIds;
    mapping(bytes32 => uint256) internal _heads; // packed, see above
    mapping(bytes32 => uint256) internal _replicasHi;
    bytes32 internal _historyAcc; // keccak256(acc ‖ historyRoot) over all commit transactions
    mapping(uint256 => bytes32) internal _checkpoints; // window w -> _historyAcc after commit 64w + 63

    // ----------------------------------------------------------------- events

    event OperatorAllowed(address indexed operator);
    event OperatorRevoked(address indexed operator);
    event ReplicationFactorSet(uint8 replicationFactor);
    event NodeRegistered(address indexed node, address indexed operator, string url, uint64 joinEpoch);
    event NodeUrlChanged(address indexed node, string url);
    event NodeLeaveRequested(address indexed node, uint64 leaveEpoch);
    /// @notice The owner evicted `node`: it is no longer active from `leaveEpoch` (as a leave).
    event NodeEvicted(address indexed node, uint64 leaveEpoch);
    /// @notice `node`'s slot `index` went to a new node (`node` had left and no stream named it).
    event NodeSlotReclaimed(uint256 indexed index, address indexed node);
    /// @notice `node`'s RANDAO commitment is now `commitPrefix` (its top 192 bits), usable from `usableFrom`.
    event OnionRenewed(address indexed node, bytes32 commitPrefix, uint64 usableFrom);
    /// @notice An accepted header of `streamId` at `number` was led at an attempt >= 1: each replica
    ///         position with bit p of `positions` (the leaders of the attempts before, at most r - 1)
    ///         was charged one missed slot.
    event SlotsMissed(bytes32 indexed streamId, uint64 indexed number, uint256 positions);
    event EpochAdvanced(uint64 indexed epoch, bytes32 seed);
    event StreamCreated(bytes32 indexed streamId, address creator, uint64 epoch, address[] replicas, bytes32 genesisHash);
    /// @notice `cause`: 1 = the old replica was not active (it left, was evicted or re-registered),
    ///         2 = it was dead (DEAD_MISSES / DEAD_EPOCHS).
    event ReplicaReplaced(bytes32 indexed streamId, uint256 index, address oldNode, address newNode, uint8 cause);
    /// @notice One per commit transaction that accepted headers. Its data is packed, not ABI-encoded:
    ///         `uint256 accepted ‖ m × bytes32 headerHash` (32 + 32m bytes). `accepted` has bit i set
    ///         for each accepted record i of the batch (in the transaction's input), the hashes are
    ///         theirs in batch order. Derivable, so not logged: the transaction's history root =
    ///         keccak256 of the hashes concatenated, historyAcc = keccak256(previous historyAcc ‖ root)
    ///         (`historyAcc()`), the mix after the reveals (`randaoMix()`; the reveals are in the input).
    event MiniblocksCommitted(uint64 indexed commitIndex);
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
    /// @notice The replica is active and not dead (`misses` < DEAD_MISSES or led within DEAD_EPOCHS).
    error ReplicaNotDead(address node, uint256 misses, uint256 lastLedEpoch);
    /// @notice Every node slot is held by a node that has not left or is still named by a stream.
    error NoFreeSlot();
    error NodeHasLeft(address node);
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
        bytes32 seed = bytes32(uint256(keccak256(abi.encode(block.chainid, address(this), block.prevrandao))) & ONION_MASK);
        _es = uint256(seed) | (uint256(replicationFactor_) << 32);
        _mc = uint256(seed);
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
        _es = (_es & ~(uint256(0xff) << 32)) | (uint256(r) << 32);
        emit ReplicationFactorSet(r);
    }

    // ------------------------------------------------------------- membership

    /// @notice Registers `node` (operator only); it becomes active from the next epoch. An address whose
    ///         earlier registration has left registers again into its own slot (streams that still
    ///         name it get it back). A new address takes a fresh slot, or else the first slot whose
    ///         node has left and that no stream names (that node's record is dropped).
    /// @param node The node's signing address.
    /// @param url The node's HTTP endpoint.
    /// @param randaoCommit keccak256^K(secret), the top of the node's RANDAO hash onion (its top
    ///        192 bits are kept).
    function registerNode(address node, string calldata url, bytes32 randaoCommit) external onlyOperator advancing {
        if (node == address(0)) revert ZeroAddress();
        if (_liveCount >= MAX_NODES) revert TooManyNodes();
        uint256 e = _epoch();
        uint256 ip = _indexPlusOne[node];
        uint256 idx;
        uint256 refs;
        if (ip != 0) {
            idx = ip - 1;
            uint256 w = _nodeWords[idx];
            if (e < ((w >> 192) & NEVER32)) revert NodeAlreadyRegistered(node);
            refs = w >> 224;
        } else {
            idx = _nodeWords.length;
            if (idx < MAX_NODES) {
                _nodeWords.push();
            } else {
                idx = _reclaimableSlot(e);
                address old = address(uint160(_nodeWords[idx]));
                delete _indexPlusOne[old];
                delete _meta[old];
                emit NodeSlotReclaimed(idx, old);
            }
            _indexPlusOne[node] = idx + 1;
        }
        uint64 joinEpoch = uint64(e + 1);
        _nodeWords[idx] = uint256(uint160(node)) | (uint256(joinEpoch) << 160) | (NEVER32 << 192) | (refs << 224);
        _onion[idx] = (uint256(randaoCommit) & ONION_MASK) | joinEpoch;
        ++_liveCount;
        _meta[node] = NodeMeta({operator: msg.sender, url: url});
        emit NodeRegistered(node, msg.sender, url, joinEpoch);
    }

    /// @dev The first slot whose node has left (as of epoch e) and that no stream names (bounded: MAX_NODES).
    function _reclaimableSlot(uint256 e) internal view returns (uint256) {
        for (uint256 i; i < MAX_NODES; ++i) {
            uint256 w = _nodeWords[i];
            if (w >> 224 == 0 && ((w >> 192) & NEVER32) <= e) return i;
        }
        revert NoFreeSlot();
    }

    /// @notice Renews `node`'s RANDAO hash onion (its operator only): `randaoCommit` (its top 192 bits)
    ///         replaces the commitment at once, and the node may reveal against it from the next epoch
    ///         on (it leads nothing before). Restarts its DEAD_EPOCHS clock, keeps its misses.
    /// @param node The node (registered, not left).
    /// @param randaoCommit The new onion's top layer.
    function renewOnion(address node, bytes32 randaoCommit) external advancing {
        uint256 ip = _indexPlusOne[node];
        if (ip == 0) revert NodeNotRegistered(node);
        if (_meta[node].operator != msg.sender) revert NotNodeOperator(msg.sender, node);
        uint256 e = _epoch();
        if (e >= ((_nodeWords[ip - 1] >> 192) & NEVER32)) revert NodeHasLeft(node);
        uint64 usableFrom = uint64(e + 1);
        uint256 o = _onion[ip - 1];
        _onion[ip - 1] = (uint256(randaoCommit) & ONION_MASK) | (o & (NEVER32 << 32)) | usableFrom;
        emit OnionRenewed(node, bytes32(uint256(randaoCommit) & ONION_MASK), usableFrom);
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
        emit NodeLeaveRequested(node, _scheduleLeave(node, ip - 1));
    }

    /// @notice Evicts `node` (owner only): it stops being active at the next epoch boundary, exactly as
    ///         if it had asked to leave; its streams then replace it with `replaceReplica`.
    /// @param node The node.
    function evictNode(address node) external onlyOwner advancing {
        uint256 ip = _indexPlusOne[node];
        if (ip == 0) revert NodeNotRegistered(node);
        emit NodeEvicted(node, _scheduleLeave(node, ip - 1));
    }

    function _scheduleLeave(address node, uint256 idx) internal returns (uint64 leaveEpoch) {
        uint256 w = _nodeWords[idx];
        if ((w >> 192) & NEVER32 != NEVER32) revert NodeAlreadyLeaving(node);
        leaveEpoch = _epoch() + 1;
        _nodeWords[idx] = (w & ~(NEVER32 << 192)) | (uint256(leaveEpoch) << 192);
        --_liveCount;
    }

    // ----------------------------------------------------------------- epochs

    /// @notice Materialises the current epoch (its seed becomes the current mix). Reverts
    ///         `EpochNotOver` if the stored epoch is already current.
    function advanceEpoch() external {
        if (!_advance()) revert EpochNotOver(_epoch());
    }

    function _epochAt(uint256 t) internal view returns (uint64) {
        return uint64((t - genesisTime) / epochLength);
    }

    /// @dev Lazy advance; true if it moved.
    function _advance() internal returns (bool) {
        uint64 e = _epochAt(block.timestamp);
        uint256 es = _es;
        if (e <= es & NEVER32) return false;
        bytes32 seed = bytes32(_mc & ONION_MASK);
        _es = uint256(seed) | (es & (uint256(0xff) << 32)) | e;
        emit EpochAdvanced(e, seed);
        return true;
    }

    // ---------------------------------------------------------------- streams

    /// @notice Creates a stream with min(replicationFactor, eligible nodes) replicas picked by the
    ///         seeded partial Fisher-Yates shuffle of v1 over the eligible nodes (active and not dead),
    ///         and stores its genesis head.
    /// @param streamId The new stream's id (non-zero, unused).
    function createStream(bytes32 streamId) external advancing {
        if (streamId == bytes32(0)) revert InvalidStreamId();
        if (_heads[streamId] != 0) revert StreamAlreadyExists(streamId);
        uint64 e = _epoch();
        uint256 n = _nodeWords.length;
        uint256[] memory act = new uint256[](n);
        uint256 m;
        for (uint256 i; i < n; ++i) {
            if (_eligible(i, e)) act[m++] = i;
        }
        if (m == 0) revert NoActiveNodes();
        assembly ("memory-safe") {
            mstore(act, m)
        }
        uint256 k = replicationFactor();
        if (k > m) k = m;
        Election.pick(act, k, _seed(), streamId);

        bytes32 gh = MiniblockTypes.genesisHash(streamId, e);
        uint256 head = (uint256(gh) & PREFIX_MASK) | (uint256(uint32(block.timestamp)) << 32) | (k << 64);
        uint256 hi;
        address[] memory reps = new address[](k);
        for (uint256 i; i < k; ++i) {
            uint256 idx = act[i];
            uint256 w = _nodeWords[idx];
            _nodeWords[idx] = w + (1 << 224);
            reps[i] = address(uint160(w));
            if (i < LOW_REPLICAS) head |= idx << (72 + 8 * i);
            else hi |= idx << (8 * (i - LOW_REPLICAS));
        }
        _heads[streamId] = head;
        if (k > LOW_REPLICAS) _replicasHi[streamId] = hi;
        _streamIds.push(streamId);
        emit StreamCreated(streamId, msg.sender, e, reps, gh);
    }

    /// @notice Replaces the replica at `index` of a stream by an eligible non-replica, if the replica is
    ///         not active (it left, was evicted, or re-registered and is pending) or is dead: it was
    ///         charged at least DEAD_MISSES missed slots since it last led a committed header, and
    ///         the current epoch is at least lastLedEpoch + DEAD_EPOCHS. Anyone may call it. The new
    ///         replica is v1's pick: candidates = eligible nodes that are not replicas of the stream,
    ///         in node-index order, pick uint256(keccak256(abi.encode(seed, streamId, index))) % count.
    /// @param streamId The stream.
    /// @param index Position in the stream's replica list.
    function replaceReplica(bytes32 streamId, uint256 index) external advancing {
        uint256 head = _heads[streamId];
        if (head == 0) revert UnknownStream(streamId);
        uint256 r = uint8(head >> 64);
        if (index >= r) revert InvalidReplicaIndex(index);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[streamId] : 0;
        uint64 e = _epoch();
        uint256 oldIdx = _replicaAt(head, hi, index);
        uint256 oldWord = _nodeWords[oldIdx];
        address oldNode = address(uint160(oldWord));
        uint8 cause = 1;
        if (_wordActive(oldWord, e)) {
            uint256 o = _onion[oldIdx];
            if (!_dead(o, e)) revert ReplicaNotDead(oldNode, (o >> 32) & NEVER32, o & NEVER32);
            cause = 2;
        }

        uint256 newIdx = _pickReplacement(head, hi, e, streamId, index);
        if (index < LOW_REPLICAS) {
            uint256 shift = 72 + 8 * index;
            _heads[streamId] = (head & ~(uint256(0xff) << shift)) | (newIdx << shift);
        } else {
            uint256 shift = 8 * (index - LOW_REPLICAS);
            _replicasHi[streamId] = (hi & ~(uint256(0xff) << shift)) | (newIdx << shift);
        }
        _nodeWords[oldIdx] = oldWord - (1 << 224);
        uint256 nw = _nodeWords[newIdx] + (1 << 224);
        _nodeWords[newIdx] = nw;
        emit ReplicaReplaced(streamId, index, oldNode, address(uint160(nw)), cause);
    }

    function _pickReplacement(uint256 head, uint256 hi, uint256 e, bytes32 streamId, uint256 index)
        internal
        view
        returns (uint256)
    {
        uint256 r = uint8(head >> 64);
        uint256 n = _nodeWords.length;
        uint256[] memory cand = new uint256[](n);
        uint256 m;
        for (uint256 i; i < n; ++i) {
            if (_eligible(i, e) && _positionOf(head, hi, r, i) == NOT_FOUND) cand[m++] = i;
        }
        if (m == 0) revert NoReplacementCandidate();
        return cand[uint256(keccak256(abi.encode(_seed(), streamId, index))) % m];
    }

    // ----------------------------------------------------------------- commit

    // Event topics and error selectors used from assembly (checked against the Solidity selectors
    // in contracts/test/MiniblockRegistryV2.t.sol).
    bytes32 internal constant T_REJECTED = 0x9739ff058b934552672f34b3215c1b167b63b4e3f7d598f3ab1d1cc213bd0497;
    bytes32 internal constant T_MISSED = 0xa29ebc7a3044c9796792a7805206ffe63f299dddbeddbdf636aae1d3eb593e36;
    bytes32 internal constant T_COMMITTED = 0x49f5a757403fd3a88197c32ebebfc700db666165257d77ff5f68b5f5d047e507;
    uint256 internal constant E_TRUNCATED = 0x461b65d5;
    uint256 internal constant E_TRAILING = 0x10865ed0;
    uint256 internal constant E_BAD_SIZE = 0x348de330;

    // Literals of the record loop (the legacy code generator folds no constant expression in
    // assembly, so every mask and address it uses is spelled out here).
    uint256 internal constant M32 = 0xffffffff;
    uint256 internal constant ADDR = 0x00ffffffffffffffffffffffffffffffffffffffff;
    uint256 internal constant TAIL_MASK = 0xffffffffffffffffffffffffffff; // prevHash[18:32], 112 bits
    uint256 internal constant PREV_HEAD_MASK = 0xffffffffffffffffffffffffffffffffffff0000000000000000000000000000; // [0:18]
    uint256 internal constant HEAD_PREFIX_MASK = 0xffffffffffffffffffffffffffffffffffffffff000000000000000000000000; // 160 bits
    uint256 internal constant HEAD_REPLICA_BITS = 0xffffffff0000000000000000; // r and replicas 0..2, [64,96)
    uint256 internal constant S_MASK = 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff;
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 internal constant SIG2 = 0x40; // one compact signature
    /// @dev MiniblockTypes.HEADER_TYPEHASH as a literal (a keccak256 expression cannot be read from assembly).
    uint256 internal constant TH_HEADER = 0xa48df3e633b4c93eb9ac53ce1cdd1f8ba2ca84e13cc7ab7d23c004b49112da22;
    /// @dev Byte (2^i mod 19) = 31 - i, i < 16: the BYTE index of replica i in `reps` (byte 31 - k =
    ///      replica k) for the lowest set bit 2^i of a bitmap.
    uint256 internal constant BYTE19 = 0x001f1e121d0011191c170013101a18141b151600000000000000000000000000;

    // A node's entry in the commit's node table (memory, two words per node index, zero = not loaded):
    // word 0 = its address, with bit 160 set unless it is active in this epoch (so that an inactive
    // signer fails the fast path's address compare); word 1 (leaders only, zero = no reveal assigned) =
    // calldata offset of its reveal (2^32 - 1: none, reads 0) << 24 | reveal-table index << 16 |
    // node index << 8 | unverified (2, cleared once its reveal is checked) | assigned (1).
    uint256 internal constant B_ASSIGNED = 1;
    uint256 internal constant B_UNVERIFIED = 2;
    /// @dev Bits [96,112) of the head slot: prefix bytes 18..19, the overlap with the sent prevHash[18:32].
    uint256 internal constant PARENT_CHECK_MASK = 0xffff000000000000000000000000;

    // Memory map of commitMiniblocks (absolute addresses; nothing Solidity keeps in memory is live
    // once the commit's assembly starts; everything read is written first, the node table lies past
    // all else, in memory never touched before).
    uint256 internal constant M_REVBASE = 0x80; // calldata offset of reveal 0
    uint256 internal constant M_K = 0xa0; // reveal count
    uint256 internal constant M_NEXTJ = 0xc0; // next unassigned reveal-table entry
    uint256 internal constant M_BITS = 0xe0; // bitmap of accepted record positions (all set, cleared on rejection)
    uint256 internal constant M_TIMEOUT = 0x100; // leaderTimeout
    uint256 internal constant M_TS = 0x120; // chain time << 32 (the head slot's timestamp field)
    uint256 internal constant M_EPOCH = 0x140; // current epoch
    uint256 internal constant M_NW = 0x160; // storage slot of _nodeWords[0]
    uint256 internal constant M_P0 = 0x180; // calldata offset of record 0
    uint256 internal constant M_T = 0x1a0; // memory address of the node table
    uint256 internal constant M_NE = 0x4e0; // 1 << 32 | epoch: (head.number + 1) << 32 | epoch = head << 32 + this
    uint256 internal constant M_EL = 0x1e0; // the seed (its top 192 bits), copied over M_H for the election
    uint256 internal constant M_H = 0x240; // header struct preimage (0x160; seed ‖ streamId ‖ number first, for the election), fields:
    uint256 internal constant M_H_SID = 0x260;
    uint256 internal constant M_H_NUM = 0x280;
    uint256 internal constant M_H_PREV = 0x2a0;
    uint256 internal constant M_H_EVR = 0x2c0;
    uint256 internal constant M_H_CNT = 0x2e0;
    uint256 internal constant M_H_EPOCH = 0x300; // written once: a record's epoch must be the current one
    uint256 internal constant M_H_ATT = 0x320;
    uint256 internal constant M_H_LEADER = 0x340;
    uint256 internal constant M_H_REVEAL = 0x360;
    uint256 internal constant M_H_STATE = 0x380;
    uint256 internal constant M_D = 0x3a0; // digest preimage: 0x1901 ‖ domainSeparator ‖ headerHash (0x42)
    uint256 internal constant M_D_DS = 0x3a2;
    uint256 internal constant M_D_HH = 0x3c2;
    uint256 internal constant M_E = 0x400; // ecrecover input: digest ‖ v ‖ r ‖ s (0x80)
    uint256 internal constant M_E_V = 0x420;
    uint256 internal constant M_E_R = 0x440;
    uint256 internal constant M_E_S = 0x460;
    uint256 internal constant M_OWNERS = 0x500; // k words: node index + 1 whose reveal j was verified (0 = unused)

    /// @notice Commits a packed batch of headers (byte layout: docs/protocol.md, "Version 2"):
    ///         `uint16 n ‖ uint8 k ‖ k × bytes32 reveal ‖ n records ‖ signatures`, a record being the
    ///         127 bytes `streamId ‖ eventsRoot ‖ stateRoot (32 each) ‖ uint32 number ‖ uint32 epoch ‖
    ///         uint16 eventCount ‖ uint32 attempt ‖ uint8 leaderPos ‖ uint16 attesters ‖ prevHash[18:32] (14)`,
    ///         then every record's leader signature and one signature per set bit of its `attesters`
    ///         (ascending), record after record (64-byte EIP-2098 each). prevHash[0:18] is the head's
    ///         stored prefix; reveal j belongs to the j-th distinct leader in record order. Each header
    ///         is checked alone; a failing one emits `MiniblockRejected` and changes nothing. Reverts only
    ///         on a malformed batch (`BadBatchSize`, `TruncatedBatch`, `TrailingBytes`). Anyone may send
    ///         it: the contract checks signatures, not the sender.
    /// @param batch The packed batch.
    function commitMiniblocks(bytes calldata batch) external {
        {
            // the lazy epoch advance, inline (as _advance): one read of _es
            uint256 es = _es;
            uint256 e = (block.timestamp - genesisTime) / epochLength;
            if (e > es & NEVER32) {
                uint256 seed = _mc & ONION_MASK;
                es = seed | (es & (uint256(0xff) << 32)) | e;
                _es = es;
                emit EpochAdvanced(uint64(e), bytes32(seed));
            }
            bytes32 ds = _domainSeparatorV4();
            uint256 timeout = leaderTimeout;
            assembly {
                mstore(M_TIMEOUT, timeout)
                mstore(M_TS, shl(32, and(timestamp(), M32)))
                mstore(M_EPOCH, and(es, M32))
                // (head.number + 1) << 32 | epoch: what a record's number ‖ epoch (its top 64 bits) must be
                mstore(M_NE, or(shl(32, 1), and(es, M32)))
                mstore(M_EL, and(es, not(0xffffffffffffffff))) // the seed
                mstore(M_H_EPOCH, and(es, M32))
                mstore(M_D, shl(240, 0x1901))
                mstore(M_D_DS, ds)
            }
        }
        assembly {
            function fail(sel, arg) {
                mstore(0x00, shl(224, sel))
                mstore(0x04, arg)
                revert(0x00, 0x24)
            }

            function popcount(x) -> c {
                c := sub(x, and(shr(1, x), 0x5555))
                c := add(and(c, 0x3333), and(shr(2, c), 0x3333))
                c := and(add(c, shr(4, c)), 0x0f0f)
                c := and(add(c, shr(8, c)), 0x1f)
            }

            // replicas 3..15 of the stream whose id is at 0x00 (0x20 holds _heads.slot in the loop)
            function hiReps(reps) -> out {
                mstore(0x20, _replicasHi.slot)
                out := or(and(reps, 0xffffff), shl(24, sload(keccak256(0x00, 0x40))))
                mstore(0x20, _heads.slot)
            }

            // loads node idx into its node table entry (word 0 at ent): its address, with bit 160 set
            // unless it is active in this epoch (such a word never equals a recovered address)
            function load(idx, ent) -> a {
                let nw := sload(add(mload(M_NW), idx))
                let ep := mload(M_EPOCH)
                // active: joinEpoch <= e < leaveEpoch (joinEpoch >= 1 for every registered node)
                let act := and(iszero(gt(and(shr(160, nw), M32), ep)), gt(and(shr(192, nw), M32), ep))
                a := or(and(nw, ADDR), shl(160, iszero(act)))
                mstore(ent, a)
            }

            // gives leader idx (entry at ent) the next reveal-table entry (none left: offset 2^32 - 1,
            // past any calldata, reads 0); word 1 of the entry: offset << 24 | j << 16 | idx << 8 | flags
            function assign(idx, ent) -> b {
                if iszero(mload(ent)) { pop(load(idx, ent)) }
                let j := mload(M_NEXTJ)
                let off := M32
                if lt(j, mload(M_K)) {
                    off := add(mload(M_REVBASE), shl(5, j))
                    mstore(M_NEXTJ, add(j, 1))
                }
                b := or(or(shl(24, off), shl(16, j)), or(shl(8, idx), or(B_ASSIGNED, B_UNVERIFIED)))
                mstore(add(ent, 0x20), b)
            }

            // check 13 at the leader's first otherwise accepted header: its reveal opens its commitment
            function verify(b) -> reason {
                reason := R_BAD_RANDAO_REVEAL
                let j := and(shr(16, b), 0xff)
                if lt(j, mload(M_K)) {
                    let idx := and(shr(8, b), 0xff)
                    let c := sload(add(_onion.slot, idx))
                    // the onion is usable from its lastLedEpoch field on (a renewal waits an epoch)
                    if iszero(gt(and(c, M32), mload(M_EPOCH))) {
                        let x := mload(M_H_REVEAL)
                        for { let d := 0 } lt(d, MAX_REVEAL_SKIP) { d := add(d, 1) } {
                            mstore(0x00, x)
                            x := keccak256(0x00, 0x20)
                            if iszero(shr(64, xor(x, c))) {
                                reason := 0
                                break
                            }
                        }
                    }
                    if iszero(reason) {
                        mstore(add(add(mload(M_T), shl(6, idx)), 0x20), xor(b, B_UNVERIFIED))
                        mstore(add(M_OWNERS, shl(5, j)), add(idx, 1))
                    }
                }
            }

            // true iff the compact signature at q recovers (low s) to addr over the digest at M_E
            function sigOk(q, addr) -> ok {
                let vs := calldataload(add(q, 0x20))
                mstore(M_E_V, add(27, shr(255, vs)))
                mstore(M_E_R, calldataload(q))
                vs := and(vs, S_MASK)
                mstore(M_E_S, vs)
                mstore(0x00, 0)
                pop(staticcall(gas(), 0x01, M_E, 0x80, 0x00, 0x20))
                ok := and(iszero(gt(vs, HALF_N)), eq(mload(0x00), addr))
            }

            // The reason (0 if none) of a record the fast path did not accept, by checks 1..12 in the
            // order of docs/protocol.md "Version 2" (the fast path is only a filter: this decides). It
            // hashes the header as the contract reports it (leader and reveal 0 without an elected
            // leader, the leader's address whatever its activity) to M_D_HH and the digest to M_E.
            // It re-reads the record at p and its stream's head (warm) rather than take them from
            // the loop, whose stack it would otherwise overflow.
            function classify(sp, p, hslot, pos) -> reason {
                let w := calldataload(add(p, 96))
                let head := sload(hslot)
                let r := and(shr(64, head), 0xff)
                let reps := shr(72, head)
                if gt(r, LOW_REPLICAS) {
                    mstore(0x00, calldataload(p))
                    reps := hiReps(reps)
                }
                let att := and(shr(120, w), 0xffff)
                let cnt := popcount(att)
                let a := 0
                let rev := 0
                if and(eq(byte(14, w), pos), lt(pos, r)) {
                    let ent := add(mload(M_T), shl(6, and(shr(shl(3, pos), reps), 0xff)))
                    a := mload(ent)
                    rev := calldataload(shr(24, mload(add(ent, 0x20))))
                }
                mstore(M_H_LEADER, and(a, ADDR))
                mstore(M_H_REVEAL, rev)
                mstore(M_D_HH, keccak256(M_H, 0x160))
                mstore(M_E, keccak256(M_D, 0x42))
                for {} 1 {} {
                    reason := R_UNKNOWN_STREAM
                    if iszero(r) { break }
                    reason := R_BAD_NUMBER
                    if xor(shr(224, w), add(and(head, M32), 1)) { break }
                    reason := R_BAD_PARENT
                    if and(xor(mload(M_H_PREV), head), HEAD_PREFIX_MASK) { break }
                    reason := R_WRONG_EPOCH
                    if xor(and(shr(192, w), M32), mload(M_EPOCH)) { break }
                    reason := R_ATTEMPT_NOT_OPEN
                    if lt(timestamp(), add(and(shr(32, head), M32), mul(and(shr(144, w), M32), mload(M_TIMEOUT)))) { break }
                    reason := R_NOT_ELECTED_LEADER
                    if xor(byte(14, w), pos) { break }
                    reason := R_TOO_MANY_EVENTS
                    if gt(and(shr(176, w), 0xffff), MAX_EVENTS_PER_BLOCK) { break }
                    reason := R_NOT_REPLICA
                    if shr(r, att) { break }
                    reason := R_DUPLICATE_ATTESTER
                    if and(att, shl(pos, 1)) { break }
                    reason := R_NO_QUORUM
                    if lt(cnt, shr(1, r)) { break }
                    reason := R_BAD_LEADER_SIGNATURE
                    if iszero(sigOk(sp, and(a, ADDR))) { break }
                    reason := R_INACTIVE_ATTESTER
                    if shr(160, a) { break }
                    reason := 0
                    let q := add(sp, SIG2)
                    for {} att {} {
                        if and(att, 1) {
                            let ent := add(mload(M_T), shl(6, and(reps, 0xff)))
                            let ae := mload(ent)
                            if iszero(ae) { ae := load(and(reps, 0xff), ent) }
                            if iszero(sigOk(q, and(ae, ADDR))) {
                                reason := R_BAD_ATTESTATION
                                break
                            }
                            if shr(160, ae) {
                                reason := R_INACTIVE_ATTESTER
                                break
                            }
                            q := add(q, SIG2)
                        }
                        att := shr(1, att)
                        reps := shr(8, reps)
                    }
                    break
                }
            }

            // charges one miss to each leader of the min(attempt, r - 1) attempts before this one
            function missed(p, head, w) {
                let sid := calldataload(p)
                mstore(0x00, sid)
                let r := and(shr(64, head), 0xff)
                let reps := shr(72, head)
                if gt(r, LOW_REPLICAS) { reps := hiReps(reps) }
                let a := and(shr(144, w), M32)
                if gt(a, sub(r, 1)) { a := sub(r, 1) }
                let pos := and(shr(136, w), 0xff)
                let bits := 0
                for { let j := 1 } iszero(gt(j, a)) { j := add(j, 1) } {
                    let q := mod(sub(add(pos, r), j), r)
                    bits := or(bits, shl(q, 1))
                    let slot := add(_onion.slot, and(shr(shl(3, q), reps), 0xff))
                    let v := sload(slot)
                    if lt(and(shr(32, v), M32), M32) { sstore(slot, add(v, shl(32, 1))) }
                }
                mstore(0x00, bits)
                log3(0x00, 0x20, T_MISSED, sid, shr(224, w))
            }

            // hp and pend lie below p on the stack, off the loop body's deep end
            let hp := 0 // next header hash of the log (memory address)
            let pend := 0 // calldata offset past the last record (of signature 0)
            let p := 0 // next record
            let sp := 0 // next signature
            {
                let len := batch.length
                let base := batch.offset
                if lt(len, 3) { fail(E_TRUNCATED, 3) }
                let n := shr(240, calldataload(base))
                let k := byte(2, calldataload(base))
                if or(iszero(n), gt(n, MAX_BATCH)) { fail(E_BAD_SIZE, n) }
                p := add(add(base, 3), shl(5, k))
                sp := add(p, mul(n, RECORD_FIXED))
                if gt(sub(sp, base), len) { fail(E_TRUNCATED, sub(sp, base)) }
                mstore(M_REVBASE, add(base, 3))
                mstore(M_K, k)
                mstore(M_P0, p)
                pend := sp
                // the reveal owners, then the log data: accepted ‖ m hashes, then the node table (two
                // words per node index)
                calldatacopy(M_OWNERS, calldatasize(), shl(5, k))
                hp := add(add(M_OWNERS, shl(5, k)), 0x20)
                mstore(M_T, add(hp, shl(5, n)))
                mstore(0x40, add(mload(M_T), 0x4000))
            }
            mstore(M_NEXTJ, 0)
            // every record accepted until it is rejected (bit i cleared): the hot path pays nothing
            mstore(M_BITS, sub(shl(div(sub(pend, mload(M_P0)), RECORD_FIXED), 1), 1))
            mstore(0x00, _nodeWords.slot)
            mstore(M_NW, keccak256(0x00, 0x20))
            // 0x20 holds the slot of _heads while the loop runs (restored after other uses)
            mstore(0x20, _heads.slot)

            for {} lt(p, pend) { p := add(p, RECORD_FIXED) } {
                // number | epoch | eventCount | attempt | leaderPos | attesters | prevHash[18:32] | (next byte)
                let w := calldataload(add(p, 96))
                mstore(0x00, calldataload(p))
                let hslot := keccak256(0x00, 0x40)
                let head := sload(hslot)
                let att := and(shr(120, w), 0xffff)
                // replica node indices, byte k = replica k
                let reps := shr(72, head)
                // the leader's node table words if leaderPos is the elected position of an existing
                // stream, its reveal assigned (0 otherwise: checks 1 and 6 fail)
                let a := 0
                let b := 0
                // the header struct except leader and reveal: prevHash = stored prefix[0:18] ‖ sent [18:32]
                mstore(M_H_SID, mload(0x00))
                mstore(M_H_NUM, shr(224, w))
                mstore(M_H_PREV, or(and(head, PREV_HEAD_MASK), and(shr(8, w), TAIL_MASK)))
                mstore(M_H_EVR, calldataload(add(p, 0x20)))
                mstore(M_H_CNT, and(shr(176, w), 0xffff))
                mstore(M_H_ATT, and(shr(144, w), M32))
                mstore(M_H_STATE, calldataload(add(p, 0x40)))
                let r := and(shr(64, head), 0xff)
                if gt(r, LOW_REPLICAS) { reps := hiReps(reps) }
                // the elected position (v1 formula) over seed ‖ streamId ‖ number: the seed written over
                // the typehash word, before the header's fields; r = 0 (no stream) gives 0
                mstore(M_H, mload(M_EL))
                let pos := addmod(mod(keccak256(M_H, 0x60), r), mload(M_H_ATT), r)
                mstore(M_H, TH_HEADER)
                if mul(eq(byte(14, w), pos), r) {
                    let lidx := byte(sub(31, pos), reps)
                    let ent := add(mload(M_T), shl(6, lidx))
                    b := mload(add(ent, 0x20))
                    if iszero(b) { b := assign(lidx, ent) }
                    a := mload(ent)
                }
                mstore(M_H_LEADER, a)
                mstore(M_H_REVEAL, calldataload(shr(24, b)))
                mstore(M_D_HH, keccak256(M_H, 0x160))

                // The fast path: checks 1..4, 6, 14, 9, 10 at once (1 and 6 as "no leader"), then the
                // signatures, an inactive signer failing as a mismatch (bit 160 of its word). Any failure
                // goes to classify, which finds the reason in order. Check 12 follows the signatures.
                // Check 5 (the attempt's window) waits for the branch below: at attempt 0 it always
                // holds (a head's time is a past block's), and every attempt >= 1 takes that branch.
                let reason := or(
                    or(
                        or(iszero(a), xor(shr(192, w), add(shl(32, and(head, M32)), mload(M_NE)))),
                        and(xor(shr(8, w), head), PARENT_CHECK_MASK)
                    ),
                    or(
                        or(gt(mload(M_H_CNT), MAX_EVENTS_PER_BLOCK), shr(r, att)),
                        and(att, shl(pos, 1))
                    )
                )
                // the next record's signatures (on the fast path: past this record's last one)
                let q := add(sp, SIG2)
                if iszero(reason) {
                    mstore(M_E, keccak256(M_D, 0x42))
                    // the leader's signature (EIP-2098; high s rejected)
                    let vs := calldataload(add(sp, 0x20))
                    mstore(M_E_V, add(27, shr(255, vs)))
                    mstore(M_E_R, calldataload(sp))
                    vs := and(vs, S_MASK)
                    mstore(M_E_S, vs)
                    mstore(0x00, 0)
                    pop(staticcall(gas(), 0x01, M_E, 0x80, 0x00, 0x20))
                    reason := or(gt(vs, HALF_N), xor(mload(0x00), a))
                    // each attester's signature, lowest set bit first (its replica byte's index from
                    // a table: 2^i mod 19 differs for every i < 16), all checked (a failure is decided
                    // by classify); a loop tested at its end (one test fewer per record)
                    if att {
                        let m := att
                        for {} 1 {} {
                            let ai := shl(6, byte(byte(mod(and(m, sub(0, m)), 19), BYTE19), reps))
                            let ae := mload(add(mload(M_T), ai))
                            if iszero(ae) { ae := load(shr(6, ai), add(mload(M_T), ai)) }
                            vs := calldataload(add(q, 0x20))
                            mstore(M_E_V, add(27, shr(255, vs)))
                            mstore(M_E_R, calldataload(q))
                            vs := and(vs, S_MASK)
                            mstore(M_E_S, vs)
                            mstore(0x00, 0)
                            pop(staticcall(gas(), 0x01, M_E, 0x80, 0x00, 0x20))
                            reason := or(reason, or(gt(vs, HALF_N), xor(mload(0x00), ae)))
                            q := add(q, SIG2)
                            m := and(m, sub(m, 1))
                            if iszero(m) { break }
                        }
                    }
                    // check 12, by the signatures read: s = (q - sp) / 64 = 1 + attesters, a majority
                    // iff s >= 1 + r / 2, i.e. 2s = (q - sp) / 32 > r
                    reason := or(reason, iszero(gt(shr(5, sub(q, sp)), r)))
                }
                // one branch on the hot path: taken on a failure, at the leader's first header, or at an
                // attempt >= 1 (whose missed slots are charged in it)
                if or(or(reason, and(b, B_UNVERIFIED)), mload(M_H_ATT)) {
                    // check 5: attempt a opens a * leaderTimeout after the head's time
                    if lt(timestamp(), add(and(shr(32, head), M32), mul(mload(M_H_ATT), mload(M_TIMEOUT)))) {
                        reason := 1
                    }
                    if reason {
                        reason := classify(sp, p, hslot, pos)
                        q := add(sp, shl(6, add(popcount(att), 1)))
                    }
                    // check 13, once per leader per transaction: its reveal opens its commitment
                    if iszero(or(reason, iszero(and(b, B_UNVERIFIED)))) { reason := verify(b) }
                    if reason {
                        mstore(M_BITS, and(mload(M_BITS), not(shl(div(sub(p, mload(M_P0)), RECORD_FIXED), 1))))
                        mstore(0x00, mload(M_D_HH))
                        mstore(0x20, reason)
                        log3(0x00, 0x40, T_REJECTED, calldataload(p), shr(224, w))
                        mstore(0x20, _heads.slot)
                        sp := q
                        continue
                    }
                    // attempt a >= 1: the leaders of the min(a, r - 1) attempts before missed their slot
                    if mload(M_H_ATT) { missed(p, head, w) }
                }
                sp := q
                // accepted: the new head (number, time, replicas, hash prefix), its hash logged
                let hh := mload(M_D_HH)
                sstore(hslot, or(or(and(hh, HEAD_PREFIX_MASK), and(head, HEAD_REPLICA_BITS)), or(shr(224, w), mload(M_TS))))
                mstore(hp, hh)
                hp := add(hp, 0x20)
            }
            {
                let used := sub(sp, batch.offset)
                if gt(used, batch.length) { fail(E_TRUNCATED, used) }
                if lt(used, batch.length) { fail(E_TRAILING, used) }
            }

            let k := mload(M_K)
            let logp := add(M_OWNERS, shl(5, k))
            let hhs := add(logp, 0x20)
            let size := sub(hp, hhs)
            if size {
                let root := keccak256(hhs, size)
                mstore(0x00, sload(_historyAcc.slot))
                mstore(0x20, root)
                let hacc := keccak256(0x00, 0x40)
                sstore(_historyAcc.slot, hacc)
                // commitCount: the low 64 bits of _mc (the mix's slot, written below)
                let mc := sload(_mc.slot)
                let idx := and(mc, 0xffffffffffffffff)
                if eq(mod(idx, HISTORY_WINDOW), sub(HISTORY_WINDOW, 1)) {
                    mstore(0x00, div(idx, HISTORY_WINDOW))
                    mstore(0x20, _checkpoints.slot)
                    sstore(keccak256(0x00, 0x40), hacc)
                }

                // reveals: the leader's new commitment and the mix, once per verified entry, in table order
                let mix := and(mc, not(0xffffffffffffffff))
                for { let j := 0 } lt(j, k) { j := add(j, 1) } {
                    let own := mload(add(M_OWNERS, shl(5, j)))
                    if own {
                        let reveal := calldataload(add(mload(M_REVBASE), shl(5, j)))
                        // the reveal's top 192 bits, misses 0, lastLedEpoch = this epoch
                        sstore(add(_onion.slot, sub(own, 1)), or(shl(64, shr(64, reveal)), mload(M_EPOCH)))
                        mstore(0x00, mix)
                        mstore(0x20, reveal)
                        mix := and(keccak256(0x00, 0x40), not(0xffffffffffffffff))
                    }
                }
                sstore(_mc.slot, or(mix, add(idx, 1)))

                mstore(logp, mload(M_BITS))
                log2(logp, add(0x20, size), T_COMMITTED, idx)
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    function _wordActive(uint256 w, uint256 e) internal pure returns (bool) {
        uint256 joinEpoch = (w >> 160) & NEVER32;
        return joinEpoch != 0 && joinEpoch <= e && e < ((w >> 192) & NEVER32);
    }

    /// @dev Dead: at least DEAD_MISSES misses since its last lead, and no lead for DEAD_EPOCHS epochs.
    function _dead(uint256 onion, uint256 e) internal pure returns (bool) {
        return (onion >> 32) & NEVER32 >= DEAD_MISSES && e >= (onion & NEVER32) + DEAD_EPOCHS;
    }

    /// @dev Eligible as a new replica: active and not dead.
    function _eligible(uint256 idx, uint256 e) internal view returns (bool) {
        return _wordActive(_nodeWords[idx], e) && !_dead(_onion[idx], e);
    }

    function _replicaAt(uint256 head, uint256 hi, uint256 k) internal pure returns (uint256) {
        if (k < LOW_REPLICAS) return uint8(head >> (72 + 8 * k));
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
        if (e > _epoch()) return (e, bytes32(_mc & ONION_MASK));
        return (_epoch(), _seed());
    }

    function _streamHeadOrRevert(bytes32 streamId) internal view returns (uint256 head, uint256 hi) {
        head = _heads[streamId];
        if (head == 0) revert UnknownStream(streamId);
        if (uint8(head >> 64) > LOW_REPLICAS) hi = _replicasHi[streamId];
    }

    function _status(uint256 w, uint64 e) internal pure returns (NodeStatus) {
        uint256 joinEpoch = (w >> 160) & NEVER32;
        uint256 leaveEpoch = (w >> 192) & NEVER32;
        if (joinEpoch == 0) return NodeStatus.None;
        if (e >= leaveEpoch) return NodeStatus.Left;
        if (e < joinEpoch) return NodeStatus.Pending;
        if (leaveEpoch != NEVER32) return NodeStatus.Leaving;
        return NodeStatus.Active;
    }

    // ------------------------------------------------------------------ views

    function _epoch() internal view returns (uint64) {
        return uint64(_es & NEVER32);
    }

    function _seed() internal view returns (bytes32) {
        return bytes32(_es & ONION_MASK);
    }

    /// @notice Replica count of new streams (capped by the eligible node count).
    function replicationFactor() public view returns (uint8) {
        return uint8(_es >> 32);
    }

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
        return bytes32(_mc & ONION_MASK);
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
        pos = Election.leaderPosition(seed, streamId, number, attempt, uint8(head >> 64));
        leader = address(uint160(_nodeWords[_replicaAt(head, hi, pos)]));
    }

    /// @notice Chain time from which `attempt` may be committed for the stream's next block
    ///         (reverts `UnknownStream` for an unknown stream).
    /// @param streamId The stream.
    /// @param attempt The attempt.
    function attemptOpensAt(bytes32 streamId, uint32 attempt) external view returns (uint64) {
        (uint256 head,) = _streamHeadOrRevert(streamId);
        uint256 t = ((head >> 32) & MAX_NUMBER) + uint256(attempt) * leaderTimeout;
        return t > type(uint64).max ? type(uint64).max : uint64(t);
    }

    /// @notice Whether a stream exists.
    /// @param streamId The stream.
    function streamExists(bytes32 streamId) external view returns (bool) {
        return _heads[streamId] != 0;
    }

    /// @notice A stream's head: number, the top 160 bits of its header hash (the full hash is in the
    ///         `MiniblocksCommitted` log and provable with `verifyHeaderCommitted`), and the chain time
    ///         it was committed (or the stream created). All zero for an unknown stream.
    /// @param streamId The stream.
    function streamHead(bytes32 streamId) external view returns (uint64 number, bytes20 hashPrefix, uint64 timestamp) {
        uint256 head = _heads[streamId];
        if (head == 0) return (0, bytes20(0), 0);
        number = uint64(head & MAX_NUMBER);
        timestamp = uint64((head >> 32) & MAX_NUMBER);
        hashPrefix = bytes20(bytes32(head & PREFIX_MASK));
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
        uint256 r = uint8(head >> 64);
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

    /// @notice Number of node slots in use (any status; at most MAX_NODES, slots are reused).
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
        uint256 leaveEpoch = (w >> 192) & NEVER32;
        info = NodeInfo({
            node: node,
            operator: m.operator,
            url: m.url,
            status: _status(w, e),
            joinEpoch: uint64((w >> 160) & NEVER32),
            leaveEpoch: leaveEpoch == NEVER32 ? type(uint64).max : uint64(leaveEpoch),
            randaoCommit: bytes32(_onion[ip - 1] & ONION_MASK)
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

    /// @notice The top 192 bits of a node's current RANDAO commitment (its last accepted reveal, or
    ///         its registered or renewed onion top), low 64 bits zero; 0 if unknown. A reveal opens it
    ///         iff the top 192 bits of keccak256^d(reveal) equal these, 1 <= d <= MAX_REVEAL_SKIP.
    /// @param node The node.
    function randaoCommitOf(address node) external view returns (bytes32) {
        uint256 ip = _indexPlusOne[node];
        return ip == 0 ? bytes32(0) : bytes32(_onion[ip - 1] & ONION_MASK);
    }

    /// @notice A node's liveness record: slots missed since it last led a committed header, the last
    ///         epoch it led one (or the first epoch its onion is usable, whichever is later), and
    ///         whether it is dead now (its streams may replace it). Zeros for an unknown node.
    /// @param node The node.
    function livenessOf(address node) external view returns (uint256 misses, uint64 lastLedEpoch, bool dead) {
        uint256 ip = _indexPlusOne[node];
        if (ip == 0) return (0, 0, false);
        uint256 o = _onion[ip - 1];
        (uint64 e,) = _viewEpochSeed();
        return ((o >> 32) & NEVER32, uint64(o & NEVER32), _wordActive(_nodeWords[ip - 1], e) && _dead(o, e));
    }

    /// @notice How many (stream, replica position) pairs name `node`'s slot (0 if unknown).
    /// @param node The node.
    function streamRefsOf(address node) external view returns (uint256) {
        uint256 ip = _indexPlusOne[node];
        return ip == 0 ? 0 : _nodeWords[ip - 1] >> 224;
    }

    /// @notice Registered nodes with no leave or eviction scheduled (what MAX_NODES bounds).
    function liveNodeCount() external view returns (uint256) {
        return _liveCount;
    }

    /// @notice Number of commit transactions that accepted at least one header.
    function commitCount() external view returns (uint64) {
        return uint64(_mc);
    }

    /// @notice The history accumulator after the latest commit transaction (0 before any).
    function historyAcc() external view returns (bytes32) {
        return _historyAcc;
    }

    /// @notice The history accumulator after commit transaction HISTORY_WINDOW·w + HISTORY_WINDOW − 1
    ///         (0 until that commit).
    /// @param w The window.
    function historyCheckpoint(uint256 w) external view returns (bytes32) {
        return _checkpoints[w];
    }

    /// @notice True iff `header` was committed (at its streamId and number) by commit transaction
    ///         `proof.commitIndex`: its hash is `proof.headerHashes[proof.position]`, and folding
    ///         keccak256(headerHashes) onto `proof.prevAcc`, then `proof.laterRoots`, ends at a
    ///         checkpoint (when the last folded commit closes a window) or at `historyAcc()` (when it
    ///         is the latest commit). Since a commit needs number == head + 1, at most one header is
    ///         ever committed at a (stream, number).
    /// @param header The header.
    /// @param proof The history proof.
    function verifyHeaderCommitted(Header calldata header, HistoryProof calldata proof) public view returns (bool) {
        return _committed(MiniblockTypes.hashHeader(header), proof);
    }

    function _committed(bytes32 hh, HistoryProof calldata proof) internal view returns (bool) {
        uint256 last = uint256(proof.commitIndex) + proof.laterRoots.length;
        uint256 count = uint64(_mc);
        if (last >= count || proof.position >= proof.headerHashes.length) return false;
        if (proof.headerHashes[proof.position] != hh) return false;
        bytes32 acc = History.fold(proof.prevAcc, proof.headerHashes, proof.laterRoots);
        if (last == count - 1 && acc == _historyAcc) return true;
        return last % HISTORY_WINDOW == HISTORY_WINDOW - 1 && acc == _checkpoints[last / HISTORY_WINDOW];
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
        if (!_committed(MiniblockTypes.hashHeader(header), hp)) return false;
        if (index >= header.eventCount) return false;
        return Merkle.verify(header.eventsRoot, header.eventCount, index, eventHash, proof);
    }
}
