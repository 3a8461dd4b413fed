"""The node process: HTTP API, mini-pool, leader/attester, chain watcher, sync, storage.

One small module per job; `app.py` wires them together and `run()` starts a node.
"""
