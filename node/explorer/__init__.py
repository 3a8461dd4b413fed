"""The on-chain header explorer web page (`python -m node explorer`)."""
