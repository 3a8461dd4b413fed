// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {Header, Event, MiniblockTypes} from "./lib/MiniblockTypes.sol";
import {Merkle} from "./lib/Merkle.sol";
import {Election} from "./lib/Election.sol";

/// @title MiniblockRegistry
/// @notice Node membership, epochs and RANDAO seeds, streams and their replica sets, and the
///         committed mini-block headers of the mini-block protocol (docs/protocol.md, version 1).
contract MiniblockRegistry is Ownable2Step, EIP712 {
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

    /// @dev The per-node data the commit path reads: one slot. Word layout (read raw by `_nodeWord`):
    ///      index [0,16) | joinEpoch [16,80) | leaveEpoch [80,144) | lastLedEpoch [144,208) |
    ///      misses [208,224) | refs [224,256).
    struct NodeRec {
        uint16 index; // position in _nodeList (its slot)
        uint64 joinEpoch; // 0 = not registered (a real joinEpoch is always >= 1)
        uint64 leaveEpoch; // type(uint64).max until a leave (or eviction) is scheduled
        uint64 lastLedEpoch; // last epoch it led a committed header, or the first epoch its onion is usable
        uint16 misses; // slots it was skipped in since it last led (saturating)
        uint32 refs; // how many (stream, replica position) pairs name its slot
    }

    /// @dev Cold per-node data.
    struct NodeMeta {
        address operator;
        string url;
    }

    // -------------------------------------------------------------- constants

    /// @notice Most live nodes (registered, no leave or eviction scheduled); also the number of node
    ///         slots. A slot is reused once its node has left and no stream names it (docs/protocol.md
    ///         "Contract surface", membership rules shared with version 2).
    uint256 public constant MAX_NODES = 256;
    /// @notice Most replicas of a stream.
    uint256 public constant MAX_REPLICATION = 16;
    /// @notice Most headers in one commitMiniblocks call.
    uint256 public constant MAX_BATCH = 256;
    /// @notice Most events in one mini-block.
    uint256 public constant MAX_EVENTS_PER_BLOCK = 15000;
    /// @notice Most onion layers one reveal may skip down (keccak256^d(reveal) == commit, 1 <= d <= 8).
    uint256 public constant MAX_REVEAL_SKIP = 8;

    // Rejection reasons (MiniblockRejected.reason).
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
    // Not a rejection: accepted with the leader's renewed onion (internal to commitMiniblocks).
    uint8 internal constant A_RENEWED_ONION = 255;

    uint64 internal constant NEVER = type(uint64).max;
    // lastLedEpoch and misses together, in the node word (a leader's reset writes both).
    uint256 internal constant LED_SHIFT = 144;
    uint256 internal constant LED_MASK = 0xffffffffffffffffffff000000000000000000000000000000000000; // 80 bits at LED_SHIFT
    uint256 internal constant NOT_FOUND = type(uint256).max;
    // Packed stream head slot: number [0,64) | timestamp [64,128) | replica count [128,136) |
    // replica node index k (k < 7) at [136 + 16k, 152 + 16k). Replica k >= 7 in the second slot at 16(k-7).
    uint256 internal constant LOW_REPLICAS = 7;
    uint256 internal constant HEAD_MASK = (1 << 128) - 1;

    // ------------------------------------------------------------------ state

    /// @notice Chain time of deployment; epoch(t) = (t - genesisTime) / epochLength.
    uint64 public immutable genesisTime;
    /// @notice Length of an epoch in seconds.
    uint64 public immutable epochLength;
    /// @notice Seconds after the head's commit time at which each further attempt opens.
    uint64 public immutable leaderTimeout;
    /// @notice A replica is dead (replaceable by anyone) once it was skipped in at least `deadMisses`
    ///         slots since it last led a committed header ...
    uint256 public immutable deadMisses;
    /// @notice ... and led nothing for `deadEpochs` epochs (docs/protocol.md "Streams").
    uint256 public immutable deadEpochs;

    uint64 internal _epoch; // materialised epoch
    /// @notice Replica count of new streams (capped by the active node count).
    uint8 public replicationFactor;
    bytes32 internal _seed; // seed of _epoch
    bytes32 internal _mix; // RANDAO mix

    /// @notice Whether an address may register nodes.
    mapping(address => bool) public isOperator;

    address[] internal _nodeList; // by slot; at most MAX_NODES, slots are reused
    uint256 internal _liveCount; // registered nodes with no leave or eviction scheduled
    mapping(address => NodeRec) internal _nodes;
    mapping(address => bytes32) internal _randaoCommit; // 0 while a renewal is pending
    mapping(address => bytes32) internal _renewedOnion; // renewOnion's commitment until first used
    mapping(address => NodeMeta) internal _meta;

    bytes32[] internal _streamIds;
    mapping(bytes32 => uint256) internal _head; // packed, see above
    mapping(bytes32 => uint256) internal _replicasHi; // replicas 7..15
    mapping(bytes32 => mapping(uint64 => bytes32)) internal _headerHash;

    // ----------------------------------------------------------------- events

    event OperatorAllowed(address indexed operator);
    event OperatorRevoked(address indexed operator);
    event ReplicationFactorSet(uint8 replicationFactor);
    event NodeRegistered(address indexed node, address indexed operator, string url, uint64 joinEpoch);
    event NodeUrlChanged(address indexed node, string url);
    event NodeLeaveRequested(address indexed node, uint64 leaveEpoch);
    event EpochAdvanced(uint64 indexed epoch, bytes32 seed);
    event StreamCreated(bytes32 indexed streamId, address creator, uint64 epoch, address[] replicas, bytes32 genesisHash);
    /// @notice `cause`: 1 = the old replica was not active (it left, was evicted or re-registered),
    ///         2 = it was dead (deadMisses / deadEpochs).
    event ReplicaReplaced(bytes32 indexed streamId, uint256 index, address oldNode, address newNode, uint8 cause);
    /// @notice The owner evicted `node`: it is no longer active from `leaveEpoch` (as a leave).
    event NodeEvicted(address indexed node, uint64 leaveEpoch);
    /// @notice `node`'s operator renewed its RANDAO onion; it may reveal against it from `usableFrom`.
    event OnionRenewed(address indexed node, bytes32 randaoCommit, uint64 usableFrom);
    /// @notice A header accepted at attempt a >= 1: each replica position set in `positions` (bit k =
    ///         replica k) led an earlier attempt of it and was charged one missed slot.
    event SlotsMissed(bytes32 indexed streamId, uint64 indexed number, uint256 positions);
    /// @notice Slot `index` of a node that has left and that no stream names was given to a new node.
    event NodeSlotReclaimed(uint256 indexed index, address oldNode);
    event MiniblockCommitted(
        bytes32 indexed streamId,
        uint64 indexed number,
        bytes32 headerHash,
        bytes32 prevHash,
        bytes32 eventsRoot,
        uint32 eventCount,
        address indexed leader
    );
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
    /// @notice The replica is active and not dead (misses < deadMisses or it led within deadEpochs).
    error ReplicaNotDead(address node, uint256 misses, uint64 lastLedEpoch);
    error NodeHasLeft(address node);
    error NoFreeSlot();
    error NoReplacementCandidate();
    error BadBatchSize(uint256 size);
    error LengthMismatch(uint256 headers, uint256 signatures);
    error IndexOutOfRange(uint256 index);

    // ------------------------------------------------------------ constructor

    /// @param epochLength_ Epoch length in seconds (> 0).
    /// @param leaderTimeout_ Seconds between consecutive election attempts (> 0).
    /// @param replicationFactor_ Replicas per new stream, 1..MAX_REPLICATION.
    /// @param deadMisses_ Missed slots that, with `deadEpochs_` epochs without a lead, make a replica
    ///        dead, 1..65535 (node/chain/deploy.py's default: 3).
    /// @param deadEpochs_ Epochs without a lead, >= 1 (default 2).
    constructor(
        uint64 epochLength_,
        uint64 leaderTimeout_,
        uint8 replicationFactor_,
        uint256 deadMisses_,
        uint256 deadEpochs_
    ) Ownable(msg.sender) EIP712("MiniblockRegistry", "1") {
        if (epochLength_ == 0 || leaderTimeout_ == 0) revert InvalidConfig();
        if (deadMisses_ == 0 || deadMisses_ > type(uint16).max || deadEpochs_ == 0 || deadEpochs_ > type(uint32).max) {
            revert InvalidConfig();
        }
        deadMisses = deadMisses_;
        deadEpochs = deadEpochs_;
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

    /// @notice Registers `node` (operator only); it becomes active from the next epoch. An address whose
    ///         earlier registration has left registers again into its own slot (streams that still
    ///         name it get it back). A new address takes a fresh slot, or else the first slot whose
    ///         node has left and that no stream names (that node's record is dropped).
    /// @param node The node's signing address.
    /// @param url The node's HTTP endpoint.
    /// @param randaoCommit keccak256^K(secret), the top of the node's RANDAO hash onion.
    function registerNode(address node, string calldata url, bytes32 randaoCommit) external onlyOperator advancing {
        if (node == address(0)) revert ZeroAddress();
        if (_liveCount >= MAX_NODES) revert TooManyNodes();
        uint64 e = _epoch;
        NodeRec memory rec = _nodes[node];
        uint256 idx;
        if (rec.joinEpoch != 0) {
            // leave and register again: same slot, its stream references kept
            if (e < rec.leaveEpoch) revert NodeAlreadyRegistered(node);
            idx = rec.index;
        } else {
            idx = _nodeList.length;
            if (idx < MAX_NODES) {
                _nodeList.push(node);
            } else {
                idx = _reclaimableSlot(e);
                address old = _nodeList[idx];
                delete _nodes[old];
                delete _meta[old];
                delete _randaoCommit[old];
                delete _renewedOnion[old];
                _nodeList[idx] = node;
                emit NodeSlotReclaimed(idx, old);
            }
        }
        uint64 joinEpoch = e + 1;
        _nodes[node] = NodeRec({
            index: uint16(idx),
            joinEpoch: joinEpoch,
            leaveEpoch: NEVER,
            lastLedEpoch: joinEpoch,
            misses: 0,
            refs: rec.refs
        });
        ++_liveCount;
        _randaoCommit[node] = randaoCommit;
        if (rec.joinEpoch != 0) delete _renewedOnion[node];
        _meta[node] = NodeMeta({operator: msg.sender, url: url});
        emit NodeRegistered(node, msg.sender, url, joinEpoch);
    }

    /// @dev The first slot whose node has left (as of epoch e) and that no stream names. Bounded: the
    ///      node list never exceeds MAX_NODES, and this runs only once all MAX_NODES slots were used.
    function _reclaimableSlot(uint64 e) internal view returns (uint256) {
        for (uint256 i; i < MAX_NODES; ++i) {
            NodeRec storage rec = _nodes[_nodeList[i]];
            if (rec.refs == 0 && rec.leaveEpoch <= e) return i;
        }
        revert NoFreeSlot();
    }

    /// @notice Renews `node`'s RANDAO hash onion (its operator only): `randaoCommit` (non-zero) replaces
    ///         the commitment at once, and the node may reveal against it from the next epoch on (its
    ///         headers are rejected `BadRandaoReveal` before). Restarts its deadEpochs clock, keeps its
    ///         misses. Safe against grinding: the new onion is fixed before the seed it first mixes
    ///         into (the next epoch's, the mix at the boundary) is known, exactly like the onion of a
    ///         fresh registration, which also joins at the next epoch (docs/protocol.md "Epochs").
    /// @param node The node (registered, not left).
    /// @param randaoCommit The new onion's top layer.
    function renewOnion(address node, bytes32 randaoCommit) external advancing {
        NodeRec storage rec = _nodes[node];
        if (rec.joinEpoch == 0) revert NodeNotRegistered(node);
        if (_meta[node].operator != msg.sender) revert NotNodeOperator(msg.sender, node);
        uint64 e = _epoch;
        if (e >= rec.leaveEpoch) revert NodeHasLeft(node);
        if (randaoCommit == 0) revert InvalidConfig();
        uint64 usableFrom = e + 1;
        rec.lastLedEpoch = usableFrom;
        _randaoCommit[node] = 0; // no reveal against the old onion any more
        _renewedOnion[node] = randaoCommit;
        emit OnionRenewed(node, randaoCommit, usableFrom);
    }

    /// @notice Changes a node's URL (its operator only).
    /// @param node The node.
    /// @param url The new URL.
    function setNodeUrl(address node, string calldata url) external advancing {
        if (_nodes[node].joinEpoch == 0) revert NodeNotRegistered(node);
        NodeMeta storage m = _meta[node];
        if (m.operator != msg.sender) revert NotNodeOperator(msg.sender, node);
        m.url = url;
        emit NodeUrlChanged(node, url);
    }

    /// @notice Asks `node` to leave (its operator or the node itself); effective from the next epoch.
    /// @param node The node.
    function requestLeave(address node) external advancing {
        if (_nodes[node].joinEpoch == 0) revert NodeNotRegistered(node);
        if (msg.sender != node && msg.sender != _meta[node].operator) revert NotNodeOrOperator(msg.sender, node);
        emit NodeLeaveRequested(node, _scheduleLeave(node));
    }

    /// @notice Evicts `node` (owner only): it stops being active at the next epoch boundary, exactly as
    ///         if it had asked to leave; its streams then replace it with `replaceReplica` (cause 1).
    /// @param node The node.
    function evictNode(address node) external onlyOwner advancing {
        if (_nodes[node].joinEpoch == 0) revert NodeNotRegistered(node);
        emit NodeEvicted(node, _scheduleLeave(node));
    }

    /// @dev leaveEpoch = next epoch; frees its place in the live-node cap at once.
    function _scheduleLeave(address node) internal returns (uint64 leaveEpoch) {
        NodeRec storage rec = _nodes[node];
        if (rec.leaveEpoch != NEVER) revert NodeAlreadyLeaving(node);
        leaveEpoch = _epoch + 1;
        rec.leaveEpoch = leaveEpoch;
        --_liveCount;
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

    /// @notice Creates a stream with min(replicationFactor, eligible nodes) replicas picked by a seeded
    ///         partial Fisher-Yates shuffle of the eligible (active and not dead) node list, and stores
    ///         its genesis header.
    /// @param streamId The new stream's id (non-zero, unused).
    function createStream(bytes32 streamId) external advancing {
        if (streamId == bytes32(0)) revert InvalidStreamId();
        if (_head[streamId] != 0) revert StreamAlreadyExists(streamId);
        uint64 e = _epoch;
        uint256 n = _nodeList.length;
        uint256[] memory act = new uint256[](n);
        uint256 m;
        for (uint256 i; i < n; ++i) {
            if (_eligible(_nodes[_nodeList[i]], e)) act[m++] = i;
        }
        if (m == 0) revert NoActiveNodes();
        assembly ("memory-safe") {
            mstore(act, m)
        }
        uint256 k = replicationFactor;
        if (k > m) k = m;
        Election.pick(act, k, _seed, streamId);

        uint256 head = (block.timestamp << 64) | (k << 128);
        uint256 hi;
        address[] memory reps = new address[](k);
        for (uint256 i; i < k; ++i) {
            uint256 idx = act[i];
            address a = _nodeList[idx];
            reps[i] = a;
            ++_nodes[a].refs;
            if (i < LOW_REPLICAS) head |= idx << (136 + 16 * i);
            else hi |= idx << (16 * (i - LOW_REPLICAS));
        }
        bytes32 gh = MiniblockTypes.genesisHash(streamId, e);
        _head[streamId] = head;
        if (hi != 0) _replicasHi[streamId] = hi;
        _headerHash[streamId][0] = gh;
        _streamIds.push(streamId);
        emit StreamCreated(streamId, msg.sender, e, reps, gh);
    }

    /// @notice Replaces the replica at `index` of a stream by an eligible non-replica, if the replica is
    ///         not active (it left, was evicted, or re-registered and is pending: cause 1) or is dead
    ///         (cause 2): it was skipped in at least `deadMisses` slots since it last led a committed
    ///         header, and the current epoch is at least lastLedEpoch + `deadEpochs`. Anyone may call
    ///         it. Candidates = eligible (active, not dead) nodes that are not replicas of the stream,
    ///         in node-list order, pick uint256(keccak256(abi.encode(seed, streamId, index))) % count.
    /// @param streamId The stream.
    /// @param index Position in the stream's replica list.
    function replaceReplica(bytes32 streamId, uint256 index) external advancing {
        uint256 head = _head[streamId];
        if (head == 0) revert UnknownStream(streamId);
        uint256 r = uint8(head >> 128);
        if (index >= r) revert InvalidReplicaIndex(index);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[streamId] : 0;
        uint64 e = _epoch;
        address oldNode = _nodeList[_replicaAt(head, hi, index)];
        uint8 cause = 1;
        {
            NodeRec memory old = _nodes[oldNode];
            if (_isActive(old, e)) {
                if (!_dead(old, e)) revert ReplicaNotDead(oldNode, old.misses, old.lastLedEpoch);
                cause = 2;
            }
        }
        uint256 newIdx = _pickReplacement(head, hi, e, streamId, index);
        if (index < LOW_REPLICAS) {
            uint256 shift = 136 + 16 * index;
            _head[streamId] = (head & ~(uint256(0xffff) << shift)) | (newIdx << shift);
        } else {
            uint256 shift = 16 * (index - LOW_REPLICAS);
            _replicasHi[streamId] = (hi & ~(uint256(0xffff) << shift)) | (newIdx << shift);
        }
        address newNode = _nodeList[newIdx];
        --_nodes[oldNode].refs;
        ++_nodes[newNode].refs;
        emit ReplicaReplaced(streamId, index, oldNode, newNode, cause);
    }

    function _pickReplacement(uint256 head, uint256 hi, uint64 e, bytes32 streamId, uint256 index)
        internal
        view
        returns (uint256)
    {
        uint256 r = uint8(head >> 128);
        uint256 n = _nodeList.length;
        uint256[] memory cand = new uint256[](n);
        uint256 m;
        for (uint256 i; i < n; ++i) {
            if (_eligible(_nodes[_nodeList[i]], e) && _positionOf(head, hi, r, i) == NOT_FOUND) cand[m++] = i;
        }
        if (m == 0) revert NoReplacementCandidate();
        return cand[uint256(keccak256(abi.encode(_seed, streamId, index))) % m];
    }

    // ----------------------------------------------------------------- commit

    /// @notice Commits a batch of headers. `signatures[i][0]` is the leader's signature over header i,
    ///         the rest the other replicas' attestations. Each header is checked alone; a failing one
    ///         emits `MiniblockRejected` and changes nothing. Reverts only on a malformed batch.
    /// @param headers The headers, in order.
    /// @param signatures Per header: leader signature, then attestations (65-byte r||s||v each).
    function commitMiniblocks(Header[] calldata headers, bytes[][] calldata signatures) external {
        uint256 n = headers.length;
        if (n == 0 || n > MAX_BATCH) revert BadBatchSize(n);
        if (signatures.length != n) revert LengthMismatch(n, signatures.length);
        _advance();
        uint64 e = _epoch;
        bytes32 seed = _seed;
        bytes32 mix0 = _mix;
        bytes32 mix = mix0;
        uint256 fmp;
        assembly ("memory-safe") {
            fmp := mload(0x40)
        }
        for (uint256 i; i < n;) {
            Header calldata h = headers[i];
            bytes32 hh = MiniblockTypes.hashHeaderCalldata(h);
            (uint8 reason, uint256 head) = _check(h, signatures[i], hh, e, seed);
            if (reason != 0 && reason != A_RENEWED_ONION) {
                emit MiniblockRejected(h.streamId, h.number, hh, reason);
            } else {
                if (reason != 0) delete _renewedOnion[h.leader]; // A_RENEWED_ONION: used up
                mix = _accept(h, hh, head, mix);
                uint256 attempt;
                assembly ("memory-safe") {
                    // Leading resets the leader's liveness (misses 0, lastLedEpoch e). Its node slot is
                    // warm (read by the checks) and written only when it changes: once per epoch per
                    // leader, or after a miss. Fields read raw: hashHeaderCalldata refused dirty ones.
                    mstore(0x00, calldataload(add(h, 0xe0))) // leader
                    mstore(0x20, _nodes.slot)
                    let slot := keccak256(0x00, 0x40)
                    let w := sload(slot)
                    let want := shl(LED_SHIFT, e)
                    if xor(and(w, LED_MASK), want) { sstore(slot, or(and(w, not(LED_MASK)), want)) }
                    attempt := calldataload(add(h, 0xc0))
                }
                if (attempt != 0) _chargeMisses(h, head, seed);
            }
            assembly ("memory-safe") {
                mstore(0x40, fmp)
            }
            unchecked {
                ++i;
            }
        }
        if (mix != mix0) _mix = mix;
    }

    function _accept(Header calldata h, bytes32 hh, uint256 head, bytes32 mix) internal returns (bytes32) {
        bytes32 sid = h.streamId;
        uint64 number = h.number;
        bytes32 reveal = h.randaoReveal;
        address leader = h.leader;
        _headerHash[sid][number] = hh;
        _head[sid] = (head & ~HEAD_MASK) | uint256(number) | (block.timestamp << 64);
        _randaoCommit[leader] = reveal;
        emit MiniblockCommitted(sid, number, hh, h.prevHash, h.eventsRoot, h.eventCount, leader);
        assembly ("memory-safe") {
            mstore(0x00, mix)
            mstore(0x20, reveal)
            mix := keccak256(0x00, 0x40)
        }
        return mix;
    }

    /// @dev A header accepted at attempt a >= 1: the leaders of the min(a, r - 1) attempts before it
    ///      (replica positions pos - 1, ..., pos - a mod r) missed their slot; one saturating increment
    ///      each (one SSTORE per skipped leader: exactly one at attempt 1, none at attempt 0).
    function _chargeMisses(Header calldata h, uint256 head, bytes32 seed) internal {
        uint256 r = uint8(head >> 128);
        uint256 a = h.attempt;
        if (a > r - 1) a = r - 1;
        if (a == 0) return;
        bytes32 sid = h.streamId;
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[sid] : 0;
        uint256 pos = Election.leaderPosition(seed, sid, h.number, h.attempt, r);
        uint256 bits;
        for (uint256 d = 1; d <= a; ++d) {
            uint256 q = (pos + r - d) % r;
            bits |= 1 << q;
            NodeRec storage rec = _nodes[_nodeList[_replicaAt(head, hi, q)]];
            uint16 m = rec.misses;
            if (m != type(uint16).max) rec.misses = m + 1;
        }
        emit SlotsMissed(sid, h.number, bits);
    }

    /// @dev Checks 1..11 of docs/protocol.md; returns 0 or the rejection reason, and the stream's packed head.
    function _check(Header calldata h, bytes[] calldata sigs, bytes32 hh, uint64 e, bytes32 seed)
        internal
        view
        returns (uint8, uint256 head)
    {
        bytes32 sid = h.streamId;
        head = _head[sid];
        if (head == 0) return (R_UNKNOWN_STREAM, head);
        {
            uint64 headNumber = uint64(head);
            if (uint256(h.number) != uint256(headNumber) + 1) return (R_BAD_NUMBER, head);
            if (h.prevHash != _headerHash[sid][headNumber]) return (R_BAD_PARENT, head);
        }
        if (h.epoch != e) return (R_WRONG_EPOCH, head);
        unchecked {
            if (block.timestamp < uint256(uint64(head >> 64)) + uint256(h.attempt) * leaderTimeout) {
                return (R_ATTEMPT_NOT_OPEN, head);
            }
        }
        uint8 reason = _checkSignatures(h, sigs, hh, head, e, seed);
        if (reason != 0) return (reason, head);
        return (_checkTail(h, e), head);
    }

    /// @dev Checks 10..11: RANDAO reveal (against the current commitment, else against a renewed onion
    ///      once usable: from the leader's lastLedEpoch on), event count. Returns 0, a rejection
    ///      reason, or A_RENEWED_ONION (accepted, and the renewed onion is used up).
    function _checkTail(Header calldata h, uint64 e) internal view returns (uint8) {
        uint8 ok;
        if (!_revealOk(h.randaoReveal, _randaoCommit[h.leader])) {
            // A renewed onion (renewOnion revoked the commitment): read only when the current
            // commitment fails, so attempt-0 headers of unrenewed nodes pay nothing for renewal.
            bytes32 next = _renewedOnion[h.leader];
            if (next == 0 || uint64(_nodeWord(h.leader) >> LED_SHIFT) > e || !_revealOk(h.randaoReveal, next)) {
                return R_BAD_RANDAO_REVEAL;
            }
            ok = A_RENEWED_ONION;
        }
        if (h.eventCount > MAX_EVENTS_PER_BLOCK) return R_TOO_MANY_EVENTS;
        return ok;
    }

    /// @dev Checks 6..9: elected leader, leader signature, attestations, quorum.
    function _checkSignatures(Header calldata h, bytes[] calldata sigs, bytes32 hh, uint256 head, uint64 e, bytes32 seed)
        internal
        view
        returns (uint8)
    {
        uint256 r = uint8(head >> 128);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[h.streamId] : 0;
        uint256 pos = Election.leaderPosition(seed, h.streamId, h.number, h.attempt, r);
        {
            address leader = h.leader;
            uint256 rec = _nodeWord(leader);
            if (uint64(rec >> 16) == 0 || uint16(rec) != _replicaAt(head, hi, pos)) return R_NOT_ELECTED_LEADER;
            if (sigs.length == 0) return R_BAD_LEADER_SIGNATURE;
            hh = _hashTypedDataV4(hh); // the digest from here on
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(hh, sigs[0]);
            if (err != ECDSA.RecoverError.NoError || signer != leader) return R_BAD_LEADER_SIGNATURE;
            // The leader's signature is its attestation, counted first.
            if (!_wordActive(rec, e)) return R_INACTIVE_ATTESTER;
        }
        (uint8 reason, uint256 count) = _countAttesters(hh, sigs, head, hi, e, 1 << pos);
        if (reason != 0) return reason;
        if (count < r / 2 + 1) return R_NO_QUORUM;
        return 0;
    }

    /// @dev Check 8 for sigs[1..]; `seen` has the leader's replica position set. Returns the distinct count.
    function _countAttesters(bytes32 digest, bytes[] calldata sigs, uint256 head, uint256 hi, uint64 e, uint256 seen)
        internal
        view
        returns (uint8, uint256 count)
    {
        count = 1;
        uint256 r = uint8(head >> 128);
        uint256 ns = sigs.length;
        for (uint256 j = 1; j < ns;) {
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, sigs[j]);
            if (err != ECDSA.RecoverError.NoError) return (R_BAD_ATTESTATION, count);
            uint256 rec = _nodeWord(signer);
            if (uint64(rec >> 16) == 0) return (R_NOT_REPLICA, count);
            uint256 bit = _positionOf(head, hi, r, uint16(rec));
            if (bit == NOT_FOUND) return (R_NOT_REPLICA, count);
            bit = 1 << bit;
            if (seen & bit != 0) return (R_DUPLICATE_ATTESTER, count);
            if (!_wordActive(rec, e)) return (R_INACTIVE_ATTESTER, count);
            seen |= bit;
            unchecked {
                ++count;
                ++j;
            }
        }
        return (0, count);
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

    /// @dev The raw NodeRec slot of `node` (one SLOAD): index [0,16), joinEpoch [16,80), leaveEpoch [80,144).
    function _nodeWord(address node) internal view returns (uint256 w) {
        assembly ("memory-safe") {
            mstore(0x00, node)
            mstore(0x20, _nodes.slot)
            w := sload(keccak256(0x00, 0x40))
        }
    }

    function _wordActive(uint256 w, uint64 e) internal pure returns (bool) {
        uint64 joinEpoch = uint64(w >> 16);
        return joinEpoch != 0 && joinEpoch <= e && e < uint64(w >> 80);
    }

    function _isActive(NodeRec memory rec, uint64 e) internal pure returns (bool) {
        return rec.joinEpoch != 0 && rec.joinEpoch <= e && e < rec.leaveEpoch;
    }

    /// @dev Dead: at least deadMisses misses since its last lead, and no lead for deadEpochs epochs.
    function _dead(NodeRec memory rec, uint64 e) internal view returns (bool) {
        return rec.misses >= deadMisses && uint256(e) >= uint256(rec.lastLedEpoch) + deadEpochs;
    }

    /// @dev Eligible as a new replica: active and not dead.
    function _eligible(NodeRec memory rec, uint64 e) internal view returns (bool) {
        return _isActive(rec, e) && !_dead(rec, e);
    }

    function _replicaAt(uint256 head, uint256 hi, uint256 k) internal pure returns (uint256) {
        if (k < LOW_REPLICAS) return uint16(head >> (136 + 16 * k));
        return uint16(hi >> (16 * (k - LOW_REPLICAS)));
    }

    function _positionOf(uint256 head, uint256 hi, uint256 r, uint256 idx) internal pure returns (uint256) {
        unchecked {
            uint256 lo = r < LOW_REPLICAS ? r : LOW_REPLICAS;
            for (uint256 k; k < lo; ++k) {
                if (uint16(head >> (136 + 16 * k)) == idx) return k;
            }
            for (uint256 k = LOW_REPLICAS; k < r; ++k) {
                if (uint16(hi >> (16 * (k - LOW_REPLICAS))) == idx) return k;
            }
        }
        return NOT_FOUND;
    }

    function _viewEpochSeed() internal view returns (uint64 e, bytes32 seed) {
        e = _epochAt(block.timestamp);
        if (e > _epoch) return (e, _mix);
        return (_epoch, _seed);
    }

    function _streamHeadOrRevert(bytes32 streamId) internal view returns (uint256 head) {
        head = _head[streamId];
        if (head == 0) revert UnknownStream(streamId);
    }

    function _status(NodeRec memory rec, uint64 e) internal pure returns (NodeStatus) {
        if (rec.joinEpoch == 0) return NodeStatus.None;
        if (e >= rec.leaveEpoch) return NodeStatus.Left;
        if (e < rec.joinEpoch) return NodeStatus.Pending;
        if (rec.leaveEpoch != NEVER) return NodeStatus.Leaving;
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
        uint256 head = _streamHeadOrRevert(streamId);
        uint256 r = uint8(head >> 128);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[streamId] : 0;
        (, bytes32 seed) = _viewEpochSeed();
        return _nodeList[_replicaAt(head, hi, Election.leaderPosition(seed, streamId, number, attempt, r))];
    }

    /// @notice Chain time from which `attempt` may be committed for the stream's next block
    ///         (reverts `UnknownStream` for an unknown stream).
    /// @param streamId The stream.
    /// @param attempt The attempt.
    function attemptOpensAt(bytes32 streamId, uint32 attempt) external view returns (uint64) {
        uint256 head = _streamHeadOrRevert(streamId);
        uint256 t = uint256(uint64(head >> 64)) + uint256(attempt) * leaderTimeout;
        return t > NEVER ? NEVER : uint64(t);
    }

    /// @notice Whether a stream exists.
    /// @param streamId The stream.
    function streamExists(bytes32 streamId) external view returns (bool) {
        return _head[streamId] != 0;
    }

    /// @notice A stream's head: number, header hash, and the chain time it was committed (or the
    ///         stream created). All zero for an unknown stream.
    /// @param streamId The stream.
    function streamHead(bytes32 streamId) external view returns (uint64 number, bytes32 headerHash, uint64 timestamp) {
        uint256 head = _head[streamId];
        if (head == 0) return (0, bytes32(0), 0);
        number = uint64(head);
        timestamp = uint64(head >> 64);
        headerHash = _headerHash[streamId][number];
    }

    /// @notice The header hash committed at (streamId, number), or 0.
    /// @param streamId The stream.
    /// @param number The block number.
    function headerHashAt(bytes32 streamId, uint64 number) external view returns (bytes32) {
        return _headerHash[streamId][number];
    }

    /// @notice A stream's replicas, in stored order (empty for an unknown stream).
    /// @param streamId The stream.
    function replicasOf(bytes32 streamId) external view returns (address[] memory reps) {
        uint256 head = _head[streamId];
        uint256 r = uint8(head >> 128);
        uint256 hi = r > LOW_REPLICAS ? _replicasHi[streamId] : 0;
        reps = new address[](r);
        for (uint256 k; k < r; ++k) reps[k] = _nodeList[_replicaAt(head, hi, k)];
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

    /// @notice Number of node slots in use (any status; at most MAX_NODES, slots are reused), the
    ///         length `getNodes` pages over.
    function nodeCount() external view returns (uint256) {
        return _nodeList.length;
    }

    /// @notice Registered nodes with no leave or eviction scheduled (what MAX_NODES bounds).
    function liveNodeCount() external view returns (uint256) {
        return _liveCount;
    }

    /// @notice A node's liveness record: slots missed since it last led a committed header, the last
    ///         epoch it led one (or the first epoch its onion is usable, whichever is later), and
    ///         whether it is dead now (its streams may replace it). Zeros for an unknown node.
    /// @param node The node.
    function livenessOf(address node) external view returns (uint256 misses, uint64 lastLedEpoch, bool dead) {
        NodeRec memory rec = _nodes[node];
        if (rec.joinEpoch == 0) return (0, 0, false);
        (uint64 e,) = _viewEpochSeed();
        return (rec.misses, rec.lastLedEpoch, _isActive(rec, e) && _dead(rec, e));
    }

    /// @notice How many (stream, replica position) pairs name `node`'s slot (0 if unknown).
    /// @param node The node.
    function streamRefsOf(address node) external view returns (uint256) {
        return _nodes[node].refs;
    }

    /// @notice A node's record (status `None` and zero fields if unknown).
    /// @param node The node.
    function getNode(address node) public view returns (NodeInfo memory info) {
        NodeRec memory rec = _nodes[node];
        if (rec.joinEpoch == 0) return info;
        (uint64 e,) = _viewEpochSeed();
        NodeMeta storage m = _meta[node];
        info = NodeInfo({
            node: node,
            operator: m.operator,
            url: m.url,
            status: _status(rec, e),
            joinEpoch: rec.joinEpoch,
            leaveEpoch: rec.leaveEpoch,
            randaoCommit: _commitOf(node)
        });
    }

    /// @notice Up to `limit` node records from position `offset` of the node list.
    /// @param offset First position.
    /// @param limit Maximum count.
    function getNodes(uint256 offset, uint256 limit) external view returns (NodeInfo[] memory out) {
        uint256 n = _nodeList.length;
        if (offset >= n) return new NodeInfo[](0);
        uint256 end = n - offset > limit ? offset + limit : n;
        out = new NodeInfo[](end - offset);
        for (uint256 i = offset; i < end; ++i) out[i - offset] = getNode(_nodeList[i]);
    }

    /// @notice A node's current RANDAO commitment (last accepted reveal), or its renewed onion's top
    ///         while a renewal is pending (usable from `livenessOf(node).lastLedEpoch`).
    /// @param node The node.
    function randaoCommitOf(address node) external view returns (bytes32) {
        return _commitOf(node);
    }

    /// @dev The commitment the node's next reveal opens: the current one, or a pending renewed onion.
    function _commitOf(address node) internal view returns (bytes32) {
        bytes32 c = _randaoCommit[node];
        return c == 0 ? _renewedOnion[node] : c;
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

    /// @notice The EIP-712 digest an event author signs.
    /// @param e The event.
    function eventDigest(Event calldata e) external view returns (bytes32) {
        return _hashTypedDataV4(MiniblockTypes.hashEvent(e));
    }

    /// @notice The EIP-712 digest leaders and attesters sign.
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

    /// @notice True iff `header` is committed at its (streamId, number), index < eventCount, and the proof holds.
    /// @param header The header.
    /// @param proof Siblings bottom-up.
    /// @param index The event's index in the block.
    /// @param eventHash The event hash.
    function verifyInclusion(Header calldata header, bytes32[] calldata proof, uint256 index, bytes32 eventHash)
        external
        view
        returns (bool)
    {
        bytes32 hh = MiniblockTypes.hashHeader(header);
        if (hh != _headerHash[header.streamId][header.number]) return false;
        if (index >= header.eventCount) return false;
        return Merkle.verify(header.eventsRoot, header.eventCount, index, eventHash, proof);
    }
}
