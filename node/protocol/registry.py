"""The registry's parameters and the rules that follow from them (docs/protocol.md, "Epochs and RANDAO",
"Membership", "Commit"): the epoch of a chain time, a node's activity in an epoch, a stream's quorum.

The same formulas as MiniblockRegistry.sol's `_epochAt`, `_isActive` and `r / 2 + 1`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RegistryParams:
    """The registry's constructor parameters and its genesis time (fixed for its lifetime, except
    `replication_factor`, which only affects streams created later)."""

    genesis_time: int
    epoch_length: int
    leader_timeout: int
    replication_factor: int

    def __post_init__(self) -> None:
        if self.epoch_length <= 0 or self.leader_timeout <= 0:
            raise ValueError("epoch_length and leader_timeout are positive (the contract's InvalidConfig)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, int]) -> RegistryParams:
        """From a {"genesis_time", "epoch_length", "leader_timeout", "replication_factor"} mapping."""
        return cls(int(values["genesis_time"]), int(values["epoch_length"]), int(values["leader_timeout"]),
                   int(values["replication_factor"]))


def epoch_at(params: RegistryParams, t: float) -> int:
    """epoch(t) = (t - genesisTime) / epochLength, for chain time `t`."""
    return int((t - params.genesis_time) // params.epoch_length)


def epoch_starts_at(params: RegistryParams, epoch: int) -> int:
    """The chain time at which `epoch` begins."""
    return params.genesis_time + epoch * params.epoch_length


def epoch_time_left(params: RegistryParams, t: float) -> float:
    """Seconds from chain time `t` to the end of its epoch (in (0, epochLength])."""
    return params.epoch_length - (t - params.genesis_time) % params.epoch_length


def is_active(join_epoch: int, leave_epoch: int, epoch: int) -> bool:
    """A registered node is active while joinEpoch <= epoch < leaveEpoch (joinEpoch 0: not registered)."""
    return join_epoch != 0 and join_epoch <= epoch < leave_epoch


def quorum(replica_count: int) -> int:
    """Distinct attesters (the leader included) a header of a stream with `replica_count` replicas needs:
    floor(r / 2) + 1, `r` the stored replica count (inactive replicas included)."""
    return replica_count // 2 + 1
