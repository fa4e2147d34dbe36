"""docker-compose.yml without a Docker engine: Debian's docker-compose 1.29 parses and interpolates it,
the result validates against the compose-spec schema that docker-compose ships, and everything it
references exists: the Dockerfile and the files it copies, bind-mounted files, every ${VAR} in
.env.example, the commands its services run, pinned images matching the installed stack.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
#: Shipped by Debian's docker-compose package (the compose-spec JSON schema it validates with).
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
SERVICES = {"postgres", "labelstudio", "prefect", "worker", "fiftyone"}


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` with .env.example: the file as an engine would run it."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (scripts/system_packages.sh installs Debian's 1.29)")
    proc = subprocess.run([exe, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = yaml.safe_load(proc.stdout)
    return data


def test_compose_config_resolves_with_the_example_env(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) >= SERVICES
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == _env_example()["POSTGRES_PASSWORD"]
    # ONE data volume, shared by everything that reads images
    data_users = {name for name, svc in services.items() for v in svc.get("volumes", [])
                  if isinstance(v, dict) and v.get("source") == "spinetrack-data"}
    assert data_users >= {"labelstudio", "worker", "fiftyone"}
    assert [v for v in resolved["volumes"] if "data" in v and v != "spinetrack-data"] == [
        "labelstudio-data", "postgres-data"]  # the servers' own state, not data


def test_compose_validates_against_the_compose_spec(resolved: dict[str, Any]) -> None:
    import jsonschema

    if not COMPOSE_SPEC.is_file():
        pytest.skip(f"compose-spec schema not at {COMPOSE_SPEC}")
    schema = json.loads(COMPOSE_SPEC.read_text())
    jsonschema.validate(yaml.safe_load(COMPOSE.read_text()), schema)
    jsonschema.validate(resolved, schema)


def test_ports_are_loopback_by_default(resolved: dict[str, Any]) -> None:
    published = [(name, p) for name, svc in resolved["services"].items() for p in svc.get("ports", [])]
    assert {name for name, _ in published} == {"labelstudio", "prefect", "fiftyone"}
    for name, port in published:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_every_variable_is_in_env_example() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used, "the compose file takes its settings from the environment"
    missing = used - set(_env_example())
    assert not missing, f".env.example lacks {sorted(missing)}"


def test_referenced_files_exist() -> None:
    data = yaml.safe_load(COMPOSE.read_text())
    for name, svc in data["services"].items():
        build = svc.get("build")
        if build:
            context = REPO / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for vol in svc.get("volumes", []):
            if isinstance(vol, str) and vol.startswith("./"):
                assert (REPO / vol.split(":")[0]).exists(), f"{name} mounts missing {vol}"
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.M)
    assert copied
    for line in copied:
        for src in line.split():
            assert (REPO / src).exists(), f"Dockerfile copies missing {src}"
    assert "download.pytorch.org/whl/cpu" in dockerfile  # CPU torch from the public index
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".env", "spinetrack-data"} <= set(ignored)


def test_images_are_pinned_to_the_stack(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, svc in services.items():
        image = svc["image"]
        if "build" in svc:
            continue  # built here from the Dockerfile
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
    assert services["prefect"]["image"].startswith(f"prefecthq/prefect:{version('prefect')}-python3.11")
    ls_pins = (REPO / "requirements" / "labelstudio.txt").read_text()
    ls_version = services["labelstudio"]["image"].split(":")[1]
    assert f"label-studio=={ls_version}" in ls_pins
    for name in ("worker", "fiftyone"):
        assert services[name]["build"]["dockerfile"] == "Dockerfile"


def test_services_run_real_commands(resolved: dict[str, Any]) -> None:
    from typer.main import get_command

    from flows.app import app
    from flows.cli import _register

    _register()
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    services = resolved["services"]
    worker = " ".join(services["worker"]["command"])
    assert "spinetrack deploy" in worker and "prefect worker start --pool spinetrack" in worker
    assert {"deploy", "webhook"} <= commands
    assert services["webhook"]["command"][:2] == ["spinetrack", "webhook"]
    assert services["fiftyone"]["command"][:3] == ["python", "-m", "fiftyone.server.main"]
    ls_env = services["labelstudio"]["environment"]
    assert ls_env["SENTRY_DSN"] == "" and ls_env["FRONTEND_SENTRY_DSN"] == ""
    assert ls_env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == services["worker"]["environment"][
        "SPINETRACK_LS_DOCUMENT_ROOT"] == "/data/spinetrack/media"
