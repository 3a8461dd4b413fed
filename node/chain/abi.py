"""The one ABI loader and codec of node/chain: calldata, view results, event topics, revert data.

`load_abi(source)` reads the registry's ABI from a deployment file, an ABI file, an artifact or the
build (compiled once, then cached); `Abi` precomputes selectors and types once and encodes/decodes
with eth-abi directly (addresses come back checksummed, tuples as tuples).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

AbiItem = dict[str, Any]
AbiList = list[AbiItem]

REGISTRY = "MiniblockRegistry"
# The registry's contract by version (docs/protocol.md: v1 "Commit", "Version 2").
REGISTRY_CONTRACTS = {1: "MiniblockRegistry", 2: "MiniblockRegistryV2"}


def registry_contract(version: int) -> str:
    try:
        return REGISTRY_CONTRACTS[version]
    except KeyError:
        raise ValueError(f"no registry version {version} (1 or 2)") from None


def abi_version(abi: AbiList) -> int:
    """The registry version an ABI is of: v2 has `isHead` (and commits a packed `bytes` batch)."""
    return 2 if any(i.get("type") == "function" and i.get("name") == "isHead" for i in abi) else 1


def load_artifact(artifact: dict[str, Any] | str | Path | None = None, version: int = 1) -> dict[str, Any]:
    """A compiled artifact ({abi, bytecode}): given, from a JSON file, or the registry's (of `version`)
    from the build."""
    if artifact is None:
        from node.build import load_artifact as build_artifact

        return build_artifact(registry_contract(version))
    if isinstance(artifact, (str, Path)):
        blob: dict[str, Any] = json.loads(Path(artifact).read_text())
        return blob
    return artifact


def read_abi_file(path: str | Path) -> AbiList:
    """An ABI file: a list, or an object (artifact, deployment) with "abi"; raises OSError/ValueError."""
    blob = json.loads(Path(path).read_text())
    abi = blob.get("abi") if isinstance(blob, dict) else blob
    if not isinstance(abi, list):
        raise ValueError(f"{path} holds no ABI")
    return abi


def load_abi(source: str | Path | AbiList | dict[str, Any] | None = None, version: int = 1) -> AbiList:
    """The registry's ABI: a list as is; a file holding a list or an object with "abi" (a deployment's
    ABI file, an artifact, or a deployment file that carries its ABI); else the compiled artifact's (of
    registry `version`).

    An unreadable file falls back to the build (as the node always did)."""
    if isinstance(source, list):
        return source
    if isinstance(source, dict):
        abi = source.get("abi")
        if isinstance(abi, list):
            return abi
    elif source is not None:
        try:
            return read_abi_file(source)
        except (OSError, ValueError):
            pass
    build_abi: AbiList = load_artifact(None, version)["abi"]
    return build_abi


def abi_type(param: AbiItem) -> str:
    """The canonical type string of an ABI parameter (tuples spelled out)."""
    t: str = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + t[len("tuple"):]
    return t


def normalize(param: AbiItem, value: Any) -> Any:
    """An eth-abi decoded value as the rest of the code wants it: checksummed addresses, tuples, bytes."""
    t: str = param["type"]
    if t.endswith("]"):
        inner = {**param, "type": t[: t.rindex("[")]}
        return [normalize(inner, v) for v in value]
    if t == "tuple":
        return tuple(normalize(c, v) for c, v in zip(param["components"], value, strict=True))
    if t == "address":
        return to_checksum_address(value)
    return value


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[AbiItem, ...]
    outputs: tuple[AbiItem, ...]
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    topic: bytes
    indexed: tuple[AbiItem, ...]
    data: tuple[AbiItem, ...]
    data_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    name: str
    inputs: tuple[AbiItem, ...]
    types: tuple[str, ...]


_BUILTIN_ERRORS = (
    ErrorSpec("Error", ({"type": "string"},), ("string",)),
    ErrorSpec("Panic", ({"type": "uint256"},), ("uint256",)),
)


class Abi:
    """Selectors, topics and types of one contract ABI, computed once."""

    def __init__(self, abi: AbiList) -> None:
        self.items = abi
        self.functions: dict[str, Function] = {}
        self.events: dict[bytes, EventSpec] = {}
        self.event_topics: dict[str, bytes] = {}
        self.errors: dict[bytes, ErrorSpec] = {}
        self.constructor_inputs: tuple[AbiItem, ...] = ()
        for item in abi:
            kind = item.get("type")
            inputs = tuple(item.get("inputs", []))
            if kind == "function":
                ins = tuple(abi_type(i) for i in inputs)
                outs = tuple(item.get("outputs", []))
                sel = keccak(text=f"{item['name']}({','.join(ins)})")[:4]
                self.functions[item["name"]] = Function(item["name"], sel, inputs, outs, ins,
                                                        tuple(abi_type(o) for o in outs))
            elif kind == "event":
                sig = f"{item['name']}({','.join(abi_type(i) for i in inputs)})"
                topic = keccak(text=sig)
                data = tuple(i for i in inputs if not i.get("indexed"))
                self.events[topic] = EventSpec(item["name"], topic, tuple(i for i in inputs if i.get("indexed")),
                                               data, tuple(abi_type(i) for i in data))
                self.event_topics[item["name"]] = topic
            elif kind == "error":
                types = tuple(abi_type(i) for i in inputs)
                self.errors[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = ErrorSpec(
                    item["name"], inputs, types)
            elif kind == "constructor":
                self.constructor_inputs = inputs
        for e in _BUILTIN_ERRORS:
            self.errors[keccak(text=f"{e.name}({','.join(e.types)})")[:4]] = e

    def function(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"the ABI has no function {name!r}") from None

    def encode_call(self, name: str, args: tuple[Any, ...] | list[Any]) -> bytes:
        fn = self.function(name)
        return fn.selector + abi_encode(list(fn.input_types), list(args))

    def decode_output(self, name: str, data: bytes) -> tuple[Any, ...]:
        fn = self.function(name)
        raw = abi_decode(list(fn.output_types), data)
        return tuple(normalize(p, v) for p, v in zip(fn.outputs, raw, strict=True))

    def encode_constructor(self, bytecode: str | bytes, args: tuple[Any, ...] | list[Any] = ()) -> bytes:
        code = bytecode if isinstance(bytecode, bytes) else bytes.fromhex(bytecode.removeprefix("0x"))
        if not self.constructor_inputs:
            return code
        return code + abi_encode([abi_type(i) for i in self.constructor_inputs], list(args))

    def decode_error(self, data: bytes | str | None) -> tuple[str | None, tuple[Any, ...]]:
        """(custom error name, its arguments) of revert data, or (None, ()) when not one of the ABI's."""
        if data is None:
            return None, ()
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x"))
        spec = self.errors.get(data[:4]) if len(data) >= 4 else None
        if spec is None:
            return None, ()
        try:
            raw = abi_decode(list(spec.types), data[4:])
        except Exception:  # noqa: BLE001 -- eth-abi raises several decoding error types; undecodable args are left out
            return spec.name, ()
        return spec.name, tuple(normalize(p, v) for p, v in zip(spec.inputs, raw, strict=True))
