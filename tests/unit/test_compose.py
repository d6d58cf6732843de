"""compose.yaml and the Dockerfile, checked without Docker: the services and their images, that
every variable they set is a docenrich setting (or documented in .env.example), that their
commands name files and modules of this repository, and that the image installs from the lock."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex

import pytest

from tests.helpers.env import ROOT

yaml = pytest.importorskip("yaml")

APP_SERVICES = ("web", "docs", "models")
PUBLIC_IMAGES = {"postgres": "pgvector/pgvector:pg16", "redis": "redis:7"}
# Variables the Python interpreter and pip read themselves.
RUNTIME_PREFIXES = ("PYTHON", "PIP_")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def known_names() -> set[str]:
    """Settings of docenrich/config.py, and the names .env.example documents."""
    from docenrich.config import Settings

    names = {f.name.upper() for f in dataclasses.fields(Settings)}
    example = (ROOT / ".env.example").read_text()
    return names | set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", example, re.M))


def app_services(compose: dict) -> dict[str, dict]:
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def test_the_services_exist_and_third_party_ones_use_public_images(compose):
    services = compose["services"]
    assert set(services) >= {*PUBLIC_IMAGES, *APP_SERVICES}
    for name, image in PUBLIC_IMAGES.items():
        assert services[name]["image"] == image and "build" not in services[name]
    assert set(app_services(compose)) >= set(APP_SERVICES)
    for name, spec in services.items():
        assert "healthcheck" in spec, f"{name} has no healthcheck"
        for target in spec.get("depends_on") or {}:
            assert target in services, f"{name} depends on {target}, which is no service"
    assert "postgres" in compose["volumes"] and "models" in compose["volumes"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_app_services_point_at_postgres_and_redis_and_never_need_root(compose):
    for name, spec in app_services(compose).items():
        env = spec["environment"]
        assert re.fullmatch(r"postgresql://docenrich:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432/docenrich",
                            env["DATABASE_URL"]), env["DATABASE_URL"]
        assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD[^}]*\}@redis:6379/0", env["REDIS_URL"]), env["REDIS_URL"]
        assert {"postgres", "redis"} <= set(spec["depends_on"]), name
        assert "C_FORCE_ROOT" not in env, f"{name}: the image runs as a user, the workers need no root override"
    assert "C_FORCE_ROOT" not in (ROOT / "compose.yaml").read_text()
    web = compose["services"]["web"]
    assert web["deploy"]["replicas"] >= 2 and web["environment"]["WEB_PORT"] == "8000"
    assert any(str(p).endswith(":8000") for p in web["ports"])


def test_every_variable_is_a_setting_or_documented(compose, dockerfile):
    known = known_names()
    for name, spec in app_services(compose).items():
        unknown = set(spec["environment"]) - known
        assert not unknown, f"{name} sets {unknown}: neither settings of docenrich/config.py nor in .env.example"
    used = set(VARIABLE.findall((ROOT / "compose.yaml").read_text()))
    assert not used - known, f"compose.yaml reads {used - known} from .env, undocumented in .env.example"
    env_names = {m for line in dockerfile if line.startswith("ENV ") for m in re.findall(r"([A-Z_][A-Z0-9_]*)=", line)}
    assert env_names and not {n for n in env_names - known if not n.startswith(RUNTIME_PREFIXES)}


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_commands_name_files_and_modules_that_exist(compose):
    from docenrich.cli.worker import ROLE_QUEUES

    roles = set()
    for name, spec in app_services(compose).items():
        argv = spec["command"] if isinstance(spec["command"], list) else shlex.split(spec["command"])
        assert argv[0] == "python", (name, argv)
        if argv[1] == "-m":
            assert _module_exists(argv[2]), (name, argv[2])
            for arg in argv[3:]:
                if arg.startswith("python:"):
                    assert _module_exists(arg.removeprefix("python:")), (name, arg)
                elif ":" in arg and not arg.startswith("-"):
                    module, _, attr = arg.partition(":")
                    assert _module_exists(module) and attr, (name, arg)
        else:
            assert (ROOT / argv[1]).is_file(), (name, argv[1])
        if "--role" in argv:
            role = argv[argv.index("--role") + 1]
            assert role in ROLE_QUEUES, (name, role)
            roles.add(role)
    assert roles >= {"models", "docs"}


def test_a_gpu_models_worker_reserves_one_device(compose):
    gpu = [spec for spec in app_services(compose).values()
           if spec.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")]
    assert gpu, "no service shows how a models worker reserves a GPU"
    for spec in gpu:
        assert "--role" in spec["command"] and spec["command"][spec["command"].index("--role") + 1] == "models"
        (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        assert spec.get("profiles"), "the GPU worker is opt-in, so hosts without a GPU start without it"


def test_dockerfile_installs_from_the_lock_copies_what_exists_and_runs_as_a_user(dockerfile):
    assert dockerfile[0] == "FROM python:3.11-slim"
    torch_pin = re.search(r"^torch==([\w.]+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(dockerfile), re.M))
    assert args["TORCH_VERSION"] == torch_pin and "/whl/cpu" in args["TORCH_INDEX"]
    installs = [cmd.strip() for line in dockerfile if line.startswith("RUN ")
                for cmd in line[4:].split("&&") if "pip install" in cmd]
    assert installs, "the image installs nothing"
    for cmd in installs:
        words = shlex.split(cmd)
        if "-r" in words:
            assert words[words.index("-c") + 1] == "requirements.lock", cmd
        else:
            assert words[-1].startswith("torch==") and "--index-url" in words, cmd
    assert any("-r" in shlex.split(cmd) for cmd in installs)
    copies = [shlex.split(line)[1:] for line in dockerfile if line.startswith("COPY ")]
    assert copies
    for words in copies:
        assert not any(w.startswith("--from") for w in words)
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    copied = {s for words in copies for s in words[:-1]}
    assert {"requirements.lock", "docenrich", "templates", "static", "start_celery_worker.py"} <= copied
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, line in enumerate(dockerfile) if line.startswith("USER "))
    assert not [line for line in dockerfile[last_user:] if line.startswith("RUN ")], "RUN after USER needs root again"
