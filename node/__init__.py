"""Mini-block nodes: order events into mini-blocks and commit their headers on an EVM chain."""

__version__ = "0.1.0"
