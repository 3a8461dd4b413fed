"""Client helpers of the node API (subscriptions: node.client.subscribe)."""
