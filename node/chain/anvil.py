"""Run a local dev chain on a free loopback port: Anvil (node_modules/.bin/anvil) or Hardhat's node
(npm `hardhat@2`), behind one interface (`DevChain`; `launch_chain("anvil" | "hardhat", ...)`).

    with Anvil(block_time=None) as anvil:       # automine: one block per tx
        w3 = anvil.w3()
        ...

Used by tests, the devnet and benchmarks. Both chains use the well-known test mnemonic and chain id
31337; the ten dev accounts' keys are in DEV_KEYS. Hardhat is found through $HARDHAT_BIN, else
node_modules/.bin/hardhat (not installed by ./dev setup yet: `hardhat_binary()` says how to get it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from node.netutil import free_port

if TYPE_CHECKING:
    from web3 import Web3

ROOT = Path(__file__).resolve().parent.parent.parent
ANVIL_BIN = ROOT / "node_modules" / ".bin" / "anvil"

# Anvil's well-known dev accounts (mnemonic "test test ... junk"), public test keys.
DEV_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
DEV_CHAIN_ID = 31337


def anvil_binary() -> str:
    """The native binary of the npm package (not the node launcher, so that stopping
    the child stops anvil itself), else node_modules/.bin/anvil, else PATH."""
    for native in sorted((ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil")):
        if os.access(native, os.X_OK):
            return str(native)
    if ANVIL_BIN.exists():
        return str(ANVIL_BIN)
    found = shutil.which("anvil")
    if not found:
        raise FileNotFoundError("anvil not found: run ./dev setup (node_modules/.bin/anvil)")
    return found


def hardhat_binary() -> str:
    """$HARDHAT_BIN, else node_modules/.bin/hardhat (npm `hardhat@2`; v3 needs Node.js 22+)."""
    env = os.environ.get("HARDHAT_BIN")
    for cand in ([Path(env)] if env else []) + [ROOT / "node_modules" / ".bin" / "hardhat"]:
        if cand.exists() and os.access(cand, os.X_OK):
            return str(cand)
    raise FileNotFoundError("hardhat not found: set HARDHAT_BIN to a hardhat@2 binary "
                            "(npm install --prefix DIR hardhat@2; DIR/node_modules/.bin/hardhat) or add hardhat@2 "
                            "to package.json")


class AnvilError(RuntimeError):
    pass


ChainError = AnvilError


class DevChain:
    """A child dev-chain process on loopback.  ``block_time=None`` means automine (a block per tx).

    ``timestamp`` sets the genesis block's time; ``extra_args`` go to the chain as-is;
    ``log_path`` collects its output (a temp file by default, shown on failure). Subclasses give
    `args()` (and `cwd()`); the rest (start, readiness, stop, raw RPC, dev controls) is shared.
    """

    kind = "chain"
    supports_reorg = False  # anvil_reorg / anvil_rollback

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        block_time: float | None = None,
        timestamp: int | None = None,
        chain_id: int | None = None,
        accounts: int | None = None,
        gas_limit: int | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("Anvil is only run on loopback")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.block_time = block_time
        self.timestamp = timestamp
        self.chain_id = chain_id
        self.accounts = accounts
        self.gas_limit = gas_limit
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._own_log = False

    # -- urls -------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def chain_id_value(self) -> int:
        return self.chain_id or DEV_CHAIN_ID

    # -- lifecycle --------------------------------------------------------
    def args(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> str | None:
        return None

    def _anvil_args(self) -> list[str]:
        a = [anvil_binary(), "--host", self.host, "--port", str(self.port)]
        if self.block_time is not None:
            a += ["--block-time", str(self.block_time)]
        if self.timestamp is not None:
            a += ["--timestamp", str(int(self.timestamp))]
        if self.chain_id is not None:
            a += ["--chain-id", str(self.chain_id)]
        if self.accounts is not None:
            a += ["--accounts", str(self.accounts)]
        if self.gas_limit is not None:
            a += ["--gas-limit", str(self.gas_limit)]
        return a + self.extra_args

    def start(self) -> DevChain:
        if self.proc is not None:
            return self
        attempts = 1 if self.port else 5
        last = ""
        for _ in range(attempts):
            if self.port is None or attempts > 1:
                self.port = free_port(self.host)
            if self.log_path:
                self._log = open(self.log_path, "ab")
            else:
                self._log = tempfile.NamedTemporaryFile(prefix="anvil-", suffix=".log", delete=False)
                self._own_log = True
            self.proc = subprocess.Popen(
                self.args(),
                cwd=self.cwd(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own process group: Ctrl-C in tests doesn't race us
            )
            if self._wait_ready():
                return self
            last = self.log_text()
            self.stop()
        raise AnvilError(f"{self.kind} did not start on {self.host}:{self.port}:\n{last[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                self.rpc("eth_chainId")
                return True
            except (OSError, ValueError, AnvilError):  # not listening yet (URLError is an OSError)
                time.sleep(0.05)
        return False

    def log_text(self) -> str:
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # The child leads its own process group (start_new_session): signal that
            # group, which holds only the anvil we started (and a launcher, if any).
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            if self._own_log:
                try:
                    os.unlink(self._log.name)
                except OSError:
                    pass
            self._log = None
            self._own_log = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> DevChain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; never leave an orphan chain behind
        try:
            self.stop(timeout=2)
        except Exception:  # noqa: BLE001 -- __del__ may run at interpreter exit, when anything can fail
            pass

    # -- helpers ------------------------------------------------------------
    def rpc(self, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
        """A raw JSON-RPC call (no web3 needed): returns ``result`` or raises."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        req = urllib.request.Request(
            self.http_url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        if "error" in out:
            raise AnvilError(f"{method}: {out['error']}")
        return out.get("result")

    def w3(self, timeout: float = 30.0) -> Web3:
        """A sync Web3 on this Anvil (raw chain access for tests and benchmarks)."""
        from .rpc import http_web3

        return http_web3(self.http_url, timeout)

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.rpc("evm_mine")

    def increase_time(self, seconds: int) -> None:
        """Move chain time forward; the next block carries it (call mine() to seal one)."""
        self.rpc("evm_increaseTime", [int(seconds)])

    def set_next_timestamp(self, ts: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", [int(ts)])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snap: str) -> bool:
        return bool(self.rpc("evm_revert", [snap]))

    def set_automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", [on])

    def _time_offset(self) -> int:
        """The chain clock's lead over wall time: the pending block's timestamp (the latest block's may be
        seconds old on an idle automining chain, and a reorg measured by it lost that much time)."""
        return int(self.rpc("eth_getBlockByNumber", ["pending", False])["timestamp"], 16) - int(time.time())

    def _keeping_time(self, method: str, params: list[Any]) -> None:
        """Run a reorg-like call, then give the chain back the time offset it had: Anvil 1.7.1 restores its
        time state to the fork point's, so a reorg to before an `evm_increaseTime` warp drops the warp and
        chain time jumps backwards (a real chain's never does: a devnet warped to its epoch would fall back
        into an earlier one), and each reorg set it back by its fork point's age. A no-op when the offset
        survived."""
        before = self._time_offset()
        self.rpc(method, params)
        lost = before - self._time_offset()
        if lost >= 1:
            self.increase_time(lost)

    def reorg(self, depth: int, txs: list[Any] | None = None) -> None:
        """Replace the last `depth` blocks (`anvil_reorg`); their transactions are gone unless given in `txs`."""
        self._keeping_time("anvil_reorg", [int(depth), txs or []])

    def rollback(self, depth: int) -> None:
        """Remove the last `depth` blocks (`anvil_rollback`): the chain is shorter until new blocks come."""
        self._keeping_time("anvil_rollback", [int(depth)])


class Anvil(DevChain):
    """A child Anvil process (reorgs on demand: `reorg`, `rollback`)."""

    kind = "anvil"
    supports_reorg = True

    def args(self) -> list[str]:
        return self._anvil_args()

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def __enter__(self) -> Anvil:
        self.start()
        return self


class Hardhat(DevChain):
    """A child Hardhat node (npm hardhat@2, EDR): `hardhat --config CFG node --hostname H --port P`.

    Hardhat refuses to run outside a project that installed it (HH12), so the process runs in the folder
    holding the node_modules it comes from, with a one-line config in a temporary folder."""

    kind = "hardhat"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._cfg_dir: tempfile.TemporaryDirectory[str] | None = None

    def _binary(self) -> str:
        return hardhat_binary()

    def cwd(self) -> str | None:
        b = Path(self._binary())
        return str(b.parent.parent.parent) if b.parent.name == ".bin" else None

    def args(self) -> list[str]:
        if self._cfg_dir is None:
            self._cfg_dir = tempfile.TemporaryDirectory(prefix="hardhat-cfg-")
        cfg = Path(self._cfg_dir.name) / "hardhat.config.js"
        if self.block_time is not None:  # interval mining, in ms; automine off
            cfg.write_text("module.exports = { networks: { hardhat: { mining: { auto: false, interval: "
                           f"{int(self.block_time * 1000)} }} }} }};\n")
        else:
            cfg.write_text("module.exports = {};\n")
        return [self._binary(), "--config", str(cfg), "node", "--hostname", self.host, "--port", str(self.port),
                *self.extra_args]

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._cfg_dir is not None:
            self._cfg_dir.cleanup()
            self._cfg_dir = None

    def __enter__(self) -> Hardhat:
        self.start()
        return self


CHAINS: dict[str, type[DevChain]] = {"anvil": Anvil, "hardhat": Hardhat}


def launch_chain(kind: str = "anvil", **kw: Any) -> DevChain:
    """A started dev chain of `kind` ("anvil" or "hardhat"); keyword arguments as DevChain's."""
    try:
        cls = CHAINS[kind]
    except KeyError:
        raise ValueError(f"unknown chain {kind!r} (one of {', '.join(CHAINS)})") from None
    return cls(**kw).start()
