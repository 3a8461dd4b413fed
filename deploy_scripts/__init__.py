"""Deployment scripts (thin front-ends over node.chain.deploy)."""
