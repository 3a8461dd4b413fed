"""The chaos run (`python -m node chaos`): a devnet under load and random faults, then a check from the
chain and every node that nothing accepted was lost or doubled and that every node follows the chain.

Parts: `proxy` (a loopback TCP proxy in front of the chain's RPC, which faults restart or cut), `faults`
(the fault kinds), `check` (the end checks, also used by the reorg tests), `run` (the run), `report`
(figures as JSON, text and docs/reliability.md)."""
