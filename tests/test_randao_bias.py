"""The last-revealer bias of the RANDAO seed, measured with the protocol's own rules.

The leader of the last header before an epoch boundary sees the mix before it signs, and
chooses the next epoch's seed among the outcomes it can produce: withhold (mix unchanged), or
reveal one of the MAX_REVEAL_SKIP layers the contract accepts (docs/protocol.md, "Epochs and
RANDAO"). We measure how often it can then make itself the leader of a chosen block, against
the fair 1/r and the bound 1 - (1 - 1/r)^k for k outcomes.
"""

from __future__ import annotations

import random

from node.protocol.election import elected_leader
from node.protocol.onion import HashOnion, mix_reveal, reveal_matches
from node.protocol.types import MAX_REVEAL_SKIP

TRIALS = 3000
REPLICAS = ["0x" + f"{i:040x}" for i in (0xA1, 0xB2, 0xC3)]
ATTACKER = REPLICAS[0]


def _win_rates(rng: random.Random) -> dict[str, float]:
    wins = {"honest": 0, "withhold": 0, "withhold_or_skip": 0}
    for _ in range(TRIALS):
        mix = rng.randbytes(32)
        stream, number = rng.randbytes(32), rng.randrange(1, 10_000)
        onion = HashOnion(rng.randbytes(32), MAX_REVEAL_SKIP)
        reveals = onion.reveals(onion.commitment, MAX_REVEAL_SKIP)  # layer k-1 .. 0: skip 0..k-1 layers
        assert all(reveal_matches(r, onion.commitment) for r in reveals)

        def leads(seed: bytes, stream: bytes = stream, number: int = number) -> bool:
            return elected_leader(seed, stream, number, 0, REPLICAS) == ATTACKER

        honest = leads(mix_reveal(mix, reveals[0]))
        withhold = honest or leads(mix)
        skip = withhold or any(leads(mix_reveal(mix, r)) for r in reveals[1:])
        wins["honest"] += honest
        wins["withhold"] += withhold
        wins["withhold_or_skip"] += skip
    return {k: v / TRIALS for k, v in wins.items()}


def test_last_revealer_bias_is_as_documented() -> None:
    rates = _win_rates(random.Random(20261201))
    fair = 1 / len(REPLICAS)
    bound = {
        "honest": fair,
        "withhold": 1 - (1 - fair) ** 2,
        "withhold_or_skip": 1 - (1 - fair) ** (1 + MAX_REVEAL_SKIP),
    }
    print({k: {"measured": round(v, 3), "theory": round(bound[k], 3)} for k, v in rates.items()})
    for name, rate in rates.items():
        assert abs(rate - bound[name]) < 0.04, (name, rate, bound[name])
    assert rates["honest"] < rates["withhold"] < rates["withhold_or_skip"]
