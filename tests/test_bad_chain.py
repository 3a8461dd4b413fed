"""Bad chains at start-up: a wrong chain id, a registry address with no code, an endpoint that answers
garbage, one that hangs, a data dir of another registry. Each is a clear error after a bounded wait (no
crash loop, no traceback), and no store is written for a chain that was never checked."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from bad_endpoints import bad_endpoints

from node.chain.anvil import DEV_KEYS

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def run_node(tmp: Path, *args: str, timeout: float = 40) -> tuple[int, str, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "node", "run", "--dev", "--dev-key", DEV_KEYS[5], "--data-dir", str(tmp),
                        "--port", "0", "--chain-wait-s", "3", "--rpc-timeout-s", "0.5", "--rpc-retries", "1", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stderr, time.monotonic() - t0


def test_wrong_chain_id_is_a_clear_error(anvil, tmp_path):
    rc, err, _ = run_node(tmp_path, "--rpc-url", anvil.http_url, "--registry", "0x" + "11" * 20, "--chain-id", "1")
    assert rc != 0 and "chain id mismatch" in err and "Traceback" not in err
    assert not (tmp_path / "node.sqlite").exists()


def test_registry_without_code_is_a_clear_error(anvil, tmp_path):
    rc, err, _ = run_node(tmp_path, "--rpc-url", anvil.http_url, "--registry", "0x" + "22" * 20)
    assert rc != 0 and "no contract at the registry address" in err and "Traceback" not in err
    assert not (tmp_path / "node.sqlite").exists()


def test_garbage_and_hanging_endpoints_are_retried_with_back_off_then_a_clear_error(tmp_path):
    with bad_endpoints() as (garbage, hanging):
        rc, err, took = run_node(tmp_path / "g", "--rpc-url", garbage, "--registry", "0x" + "33" * 20)
        assert rc != 0 and "gave no JSON-RPC answer within 3s" in err and "not a JSON-RPC answer" in err
        assert "retrying in" in err and "Traceback" not in err and took < 30
        rc, err, took = run_node(tmp_path / "h", "--rpc-url", hanging, "--registry", "0x" + "33" * 20)
        assert rc != 0 and "no answer within 0.5s" in err and "Traceback" not in err and took < 30
        assert not (tmp_path / "g" / "node.sqlite").exists() and not (tmp_path / "h" / "node.sqlite").exists()


def test_a_data_dir_of_another_registry_is_refused(tmp_path):
    from node.server.app import StartupError, check_store
    from node.server.storage import Storage

    st = Storage(tmp_path / "node.sqlite")
    check_store(st, 31337, "0x" + "44" * 20, tmp_path)
    with pytest.raises(StartupError, match="holds the state of"):
        check_store(st, 31337, "0x" + "55" * 20, tmp_path)
