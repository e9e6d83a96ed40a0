"""Issue 15: the control plane's OpenAPI document says exactly what the service accepts and
returns. Schemathesis, with every check and every phase (examples, coverage, fuzzing,
stateful; positive and negative data), runs over the live document of a control plane on
loopback and must find no server error, no response outside the schema and no
schema-valid request refused. Bounded: a few examples per operation and a time budget.

The control plane steers to the origin as a last resort (`--steer-to-origin`), so a play of
a title in the catalog always has a candidate: a 503 "no edge available" would otherwise be
counted as a server error on a fleet with no edges.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import StartService
from ocsim.procs import ServiceProcess

OPERATOR_TOKEN = "schemathesis-operator-token-0123"
TOPOLOGY = '[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n\n[isps.isp-b]\nprefixes = ["10.2.0.0/16"]\n'
HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_schemathesis_finds_nothing(start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(TOPOLOGY)
    control = start_service("control", "control", "--host", "127.0.0.1", "--port", "0",
                            "--state-dir", str(tmp_path / "control"), "--topology", str(topology),
                            "--origin", origin.url, "--steer-to-origin", "--operator-token", OPERATOR_TOKEN,
                            "--no-access-log")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{control.url}/openapi.json",
           "--checks", "all", "--mode", "all", "--max-examples", "12", "--max-time", "15", "--seed", "15",
           "--generation-database", "none", "--workers", "1", "--request-timeout", "5",
           "--header", f"Authorization: Bearer {OPERATOR_TOKEN}", "--warnings", "off",
           "--report", "junit", "--report-dir", str(tmp_path / "report")]
    t0 = time.monotonic()
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=80)
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert "Operations:       21 selected / 21 total" in run.stdout, run.stdout[-3000:]
    assert elapsed < 60, elapsed
