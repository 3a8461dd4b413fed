"""The chain edge: a local Anvil, the registry contract wrapper, deployment files."""
