"""The lock files: production installs only what it runs, every pin carries its hashes."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(lock: str) -> dict[str, str]:
    """{package name: the text of its entry} of requirements/<lock>.txt."""
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    return {_name(entry): entry for entry in entries if re.match(r"[A-Za-z0-9][^ ]*==", entry)}


def test_it_pins_every_production_dependency_with_hashes():
    pins = _pins("prod")
    for requirement in PYPROJECT["project"]["dependencies"]:
        assert _name(requirement) in pins, f"{requirement} is not in requirements/prod.txt: run make lock"
    for name, entry in pins.items():
        assert "--hash=sha256:" in entry, f"{name} has no hash in requirements/prod.txt"


def test_it_keeps_the_emulator_and_the_test_tools_out_of_production():
    production = _pins("prod")
    for name in ("moto", "flask", "docker", "cfn-lint", "awscli", "pytest", "playwright", "ruff", "mypy"):
        assert name not in production, f"{name} is installed in production"


def test_it_puts_the_emulator_in_demo_and_everything_in_dev():
    demo, dev = _pins("demo"), _pins("dev")
    assert "moto" in demo and "pytest" not in demo
    extras = PYPROJECT["project"]["optional-dependencies"]
    for requirement in extras["dev"] + extras["demo"]:
        if not requirement.startswith("byok-portal"):
            assert _name(requirement) in dev, f"{requirement} is not in requirements/dev.txt: run make lock"
    assert set(_pins("prod")) <= set(demo) <= set(dev)
    for lock in ("demo", "dev", "uv"):
        for name, entry in _pins(lock).items():
            assert "--hash=sha256:" in entry, f"{name} has no hash in requirements/{lock}.txt"


def test_it_names_no_index_in_the_locks():
    """A mirror path or URL in a lock would not exist on another machine."""
    for lock in ("prod", "demo", "dev", "uv"):
        text = (ROOT / "requirements" / f"{lock}.txt").read_text()
        assert "--index-url" not in text and "file://" not in text and "--find-links" not in text


def test_it_installs_the_production_lock_in_the_image_and_the_locks_in_bootstrap():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements/prod.txt" in dockerfile
    assert "moto" not in dockerfile and "pyproject.toml" not in dockerfile
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes" in bootstrap and 'requirements/${lockname}.txt' in bootstrap
    assert "./scripts/bootstrap.sh demo" in (ROOT / "scripts" / "run.sh").read_text()
    assert "./scripts/bootstrap.sh dev" in (ROOT / "scripts" / "test.sh").read_text()


def test_it_runs_lint_before_pytest_in_make_test():
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert test_sh.index("./scripts/lint.sh") < test_sh.index("-m pytest")
    makefile = (ROOT / "Makefile").read_text()
    assert "lint:\n\t./scripts/lint.sh" in makefile and "lock:\n\t./scripts/lock.sh" in makefile
