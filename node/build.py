"""Compile contracts/src/*.sol into build/contracts/<Name>.json through py-solc-x.

Every source (ours and the imported OpenZeppelin files) is handed to the compiler
as content in standard JSON, so the compiler never reads the file system and the
cache key (sourceHash) covers exactly what was compiled: sources, settings and
compiler version.  A repeated call with nothing changed reads the sources, hashes
them and returns the existing artifacts.

Compiler choice: $MINIBLOCK_SOLC if set; else a native ``solc`` on PATH (not our
own wrapper) or one installed by py-solc-x, if it is >= 0.8.24 (cancun); else the
repo's tools/solc wrapper around node_modules/.bin/solcjs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = ROOT / "contracts" / "src"
OUT_DIR = ROOT / "build" / "contracts"
WRAPPER = ROOT / "tools" / "solc"

# Same as foundry.toml.
REMAPPINGS = ["@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/"]
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 2000},
    "evmVersion": "cancun",
    "viaIR": False,
    "remappings": REMAPPINGS,
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
    },
}
MIN_NATIVE = (0, 8, 24)

_IMPORT_RE = re.compile(
    r"""^\s*import\s+(?:[^"';]*?\s+from\s+)?["']([^"']+)["']\s*;""", re.MULTILINE
)
_VERSION_RE = re.compile(r"Version:\s*(\d+)\.(\d+)\.(\d+)")


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Compiler:
    path: Path
    version: str
    native: bool


def _version_of(binary: Path | str) -> tuple[int, int, int, str] | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out)
    if not m:
        return None
    line = next((ln for ln in out.splitlines() if "Version:" in ln), "")
    return int(m[1]), int(m[2]), int(m[3]), line.split("Version:", 1)[1].strip()


@lru_cache(maxsize=1)
def find_compiler() -> Compiler:
    env = os.environ.get("MINIBLOCK_SOLC")
    candidates: list[tuple[Path, bool]] = []
    if env:
        candidates.append((Path(env), True))
    on_path = shutil.which("solc")
    if on_path and Path(on_path).resolve() != WRAPPER.resolve():
        candidates.append((Path(on_path), True))
    try:
        import solcx

        for installed in sorted(solcx.get_installed_solc_versions(), reverse=True):
            candidates.append((Path(solcx.install.get_executable(installed)), True))
    except Exception:  # noqa: BLE001 -- py-solc-x without installs, or an unreadable folder: fall back to the wrapper
        pass
    for path, native in candidates:
        found = _version_of(path)
        if found and (found[:3] >= MIN_NATIVE or path == Path(env or "")):
            return Compiler(path, found[3], native)
    # The wrapper: read solcjs's version from its package instead of starting node.
    pkg = ROOT / "node_modules" / "solc" / "package.json"
    if not (ROOT / "node_modules" / ".bin" / "solcjs").exists() or not pkg.is_file():
        raise BuildError(
            "no usable solc: no native solc >= 0.8.24 and no node_modules/.bin/solcjs "
            "(run ./dev setup)"
        )
    return Compiler(WRAPPER, "solcjs-" + json.loads(pkg.read_text())["version"], False)


def _resolve_import(importer: str, path: str) -> str:
    if path.startswith("./") or path.startswith("../"):
        base = importer.rsplit("/", 1)[0].split("/") if "/" in importer else []
        for part in path.split("/"):
            if part == "..":
                if base:
                    base.pop()
            elif part != ".":
                base.append(part)
        unit = "/".join(base)
    else:
        unit = path
    # Longest matching remapping prefix wins.
    best = None
    for r in REMAPPINGS:
        prefix, target = r.split("=", 1)
        if unit.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, target)
    if best:
        unit = best[1] + unit[len(best[0]) :]
    return unit


def collect_sources(src_dir: Path = SRC_DIR) -> dict[str, str]:
    """Source unit name (path relative to the repo root) -> content, imports included."""
    roots = sorted(p for p in src_dir.rglob("*.sol"))
    if not roots:
        raise BuildError(f"no Solidity sources in {src_dir}")
    sources: dict[str, str] = {}
    todo = [p.resolve().relative_to(ROOT).as_posix() for p in roots]
    while todo:
        unit = todo.pop()
        if unit in sources:
            continue
        file = ROOT / unit
        if not file.is_file():
            raise BuildError(f"import not found: {unit}")
        text = file.read_text()
        sources[unit] = text
        for imp in _IMPORT_RE.findall(text):
            todo.append(_resolve_import(unit, imp))
    return dict(sorted(sources.items()))


def source_hash(sources: dict[str, str], compiler: Compiler) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    h.update(compiler.version.encode())
    for name, text in sources.items():
        h.update(name.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    return "0x" + h.hexdigest()


def _own_units(sources: dict[str, str], src_dir: Path) -> list[str]:
    rel = src_dir.resolve().relative_to(ROOT).as_posix() + "/"
    return [u for u in sources if u.startswith(rel)]


def build(
    force: bool = False, src_dir: Path = SRC_DIR, out_dir: Path = OUT_DIR
) -> dict[str, Path]:
    """Compile if needed; returns contract name -> artifact path."""
    compiler = find_compiler()
    sources = collect_sources(src_dir)
    digest = source_hash(sources, compiler)
    stamp = out_dir / ".build.json"
    if not force and stamp.is_file():
        try:
            meta = json.loads(stamp.read_text())
            if meta.get("sourceHash") == digest and all(
                Path(p).is_file() for p in meta["artifacts"].values()
            ):
                return {k: Path(v) for k, v in meta["artifacts"].items()}
        except (ValueError, KeyError):
            pass

    import solcx

    std_input = {
        "language": "Solidity",
        "sources": {u: {"content": t} for u, t in sources.items()},
        "settings": SETTINGS,
    }
    try:
        output = solcx.compile_standard(std_input, solc_binary=str(compiler.path))
    except solcx.exceptions.SolcError as e:
        errs = [x.get("formattedMessage", x.get("message", "")) for x in (e.error_dict or [])]
        msg = "\n".join(x for x, d in zip(errs, e.error_dict or [], strict=False) if d.get("severity") == "error")
        raise BuildError(msg or f"{e.message} (return code {e.return_code}): {e.stderr_data}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Path] = {}
    for unit in _own_units(sources, src_dir):
        for name, c in output.get("contracts", {}).get(unit, {}).items():
            art = {
                "contractName": name,
                "sourceName": unit,
                "abi": c["abi"],
                "bytecode": "0x" + c["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
                "sourceHash": digest,
                "compiler": compiler.version,
                "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
            }
            path = out_dir / f"{name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(art, indent=1))
            os.replace(tmp, path)
            artifacts[name] = path
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"sourceHash": digest, "artifacts": {k: str(v) for k, v in artifacts.items()}})
    )
    os.replace(tmp, stamp)
    return artifacts


def load_artifact(name: str = "MiniblockRegistry", out_dir: Path = OUT_DIR) -> dict[str, Any]:
    """Build if needed, then return the artifact of contract ``name``."""
    arts = build(out_dir=out_dir)
    if name not in arts:
        raise BuildError(f"contract {name} not found among {sorted(arts)}")
    artifact: dict[str, Any] = json.loads(arts[name].read_text())
    return artifact
