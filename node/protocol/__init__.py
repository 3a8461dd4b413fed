"""The protocol rules, once each in Python: typed data, Merkle tree, election, hash onion, stream state.

Each mirrors its Solidity twin in contracts/src; tests/test_protocol_equivalence.py holds them equal.
"""
