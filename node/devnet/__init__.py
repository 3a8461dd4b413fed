"""A local network and a load on it, for the devnet command, the tests and the bench.

    network.Network   set up a network: Anvil or an existing RPC, deploy, fund, register, streams, node processes
    loadgen.LoadGen   the load generator: JOINs, then MESSAGEs, posted one by one or in batches
    watcher.Watcher   MiniblockCommitted logs -> blocks read back from the nodes -> per-event commit latency
    stats.Stats       the figures the load generator and the watcher share
    render.render     the devnet's rich table and lines
    watchdog.Watchdog stops Anvil and the nodes if the process that started them is killed outright
"""
