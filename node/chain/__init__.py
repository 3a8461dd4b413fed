"""The chain edge, and the only package that imports web3: the registry client (async `client`, sync
`registry`), its ABI codec (`abi`), log/receipt dataclasses (`logs`), tx sender (`tx`) and transport
(`rpc`); deployment files, deploy, commit calldata decoding, the header history, a local Anvil."""
