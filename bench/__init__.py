"""Benchmarks of the mini-block nodes (`python -m node bench`, docs/performance.md).

load.py       the devnet's load generator, posting in batches (POST /v1/events/batch)
scenarios.py  throughput, latency, gas, node cost, scale, mini-pool, ceilings
plot.py       the PNG
gas_per_header.py  contract-only gas by batch size (a standalone script)
"""
