"""Imports run one way (docs/architecture.md, "Packages and imports").

The import graph is built from the source with ``ast``: every ``import`` and ``from ... import``
statement, at module level and inside functions, classes and ``if`` blocks, relative forms
(``from . import x``, ``from ..services import y``) included. It must have no cycle, and no
module may import a module of a higher layer:

    views, API, admin, tasks, template tags, forms, URLconfs   (top)
      → services and selectors
        → adapters (kms, sts, aws_clients, crypto, cache, parsers, diagnosis, clock, metrics, queue, …)
          → models

Template tags never import views (both use the context builders in ``keys.selectors``), and
``keys`` reaches into ``environments`` only through its models and selectors.

Every module of ``environments`` and ``keys`` has a layer (``layer_of``), so a new module must be
placed before this test passes.

The AWS SDK is imported only where ``AWS_SDK_IMPORTERS`` says, and ``keys.aws_clients`` (what the
KMS and STS adapters share) only by those two adapters.
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("portal", "environments", "keys")

TOP, SERVICE, ADAPTER, MODEL = 3, 2, 1, 0
LAYER_NAMES = {TOP: "view/API/admin/task", SERVICE: "service", ADAPTER: "adapter", MODEL: "model"}

# By module name (exact) or package prefix (ending in "."); the first match wins.
LAYERS: list[tuple[str, int]] = [
    ("keys.views.", TOP),
    ("keys.api.", TOP),
    ("keys.templatetags.", TOP),
    ("keys.management.", TOP),
    ("keys.admin", TOP),
    ("keys.tasks", TOP),
    ("keys.forms", TOP),
    ("keys.urls", TOP),
    ("keys.apps", TOP),
    ("keys.services.", SERVICE),
    ("keys.selectors", SERVICE),
    ("keys.models", MODEL),
    # Migrations run like management commands (migrate calls them, nothing imports them); a
    # data migration may use adapters (0008 unseals access key IDs through keys.crypto).
    ("keys.migrations.", TOP),
    ("keys.", ADAPTER),  # kms, sts, aws_clients, crypto, cache, parsers, diagnosis, clock, metrics, queue, devkeys, …
    ("environments.views", TOP),
    ("environments.account_views", TOP),
    ("environments.admin", TOP),
    ("environments.forms", TOP),
    ("environments.urls", TOP),
    ("environments.apps", TOP),
    ("environments.management.", TOP),
    ("environments.services", SERVICE),
    ("environments.selectors", SERVICE),
    ("environments.two_factor", SERVICE),
    ("environments.models", MODEL),
    ("environments.migrations.", MODEL),
]


# Who imports the AWS SDK, and what for (docs/architecture.md, "Apps and packages"): keys.kms and
# keys.sts make every AWS call the platform makes, with clients only keys.aws_clients builds.
AWS_SDK_IMPORTERS: dict[str, set[str]] = {
    # builds, caches and calls every client of the platform; classifies botocore errors
    "keys.aws_clients": {"boto3", "botocore.config", "botocore.exceptions"},
    # KMS error codes
    "keys.kms": {"botocore.exceptions"},
    # STS error codes; the platform's own credential chain; refreshable role credentials
    "keys.sts": {"boto3", "botocore.credentials", "botocore.exceptions"},
    # botocore's endpoint data (which regions have KMS); no client
    "keys.parsers": {"botocore.loaders", "botocore.regions"},
    # a development command that plays the customer with its own KMS and IAM clients
    "keys.management.commands.customer_demo": {"boto3"},
}


def layer_of(module: str) -> int | None:
    """The layer of a module of ``keys`` or ``environments``; None for ``portal`` and package
    ``__init__`` modules (only the cycle rule applies to those)."""
    if module in ("keys", "environments", "keys.views", "keys.services", "keys.api") or module.endswith(
        (".templatetags", ".management", ".management.commands", ".migrations")
    ):
        return None
    for prefix, layer in LAYERS:
        if module == prefix or (prefix.endswith(".") and module.startswith(prefix)):
            return layer
    if module.startswith(("keys.", "environments.")):
        raise AssertionError(f"{module} has no layer: add it to LAYERS in {__name__}")
    return None


def module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: pathlib.Path, packages: tuple[str, ...]) -> dict[str, pathlib.Path]:
    """Module name → file, for every ``.py`` file under the given top-level packages."""
    return {
        module_name(root, path): path for package in packages for path in sorted((root / package).rglob("*.py"))
    }


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules ``source`` imports, wherever the import statement stands.

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import keys.models`` or an import of a package: the deepest known module named.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def build_graph(root: pathlib.Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the project modules it imports (module- and function-level)."""
    files = discover(root, packages)
    known = set(files)
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", known) for name, path in files.items()
    }


def aws_sdk_imports(root: pathlib.Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the ``boto3``/``botocore`` modules it imports (anywhere in the file), for the
    modules that import any."""
    found: dict[str, set[str]] = {}
    for name, path in discover(root, packages).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in ("boto3", "botocore"):
                    found.setdefault(name, set()).add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer by a lower one, e.g. ``keys.cache -> keys.services.sealing``."""
    bad = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        if layer is None:
            continue
        for target in sorted(targets):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer > layer:
                bad.append(f"{module} ({LAYER_NAMES[layer]}) -> {target} ({LAYER_NAMES[target_layer]})")
    return bad


def cross_app_imports(graph: dict[str, set[str]]) -> list[str]:
    """``keys`` builds on ``environments`` through its models and selectors only; the reverse
    direction (an environment's page lists its key versions, creating one makes version 1) goes
    through ``keys`` services and selectors. Neither app's models import the other's upper layers."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if (
                module.startswith("keys")
                and target.startswith("environments.")
                and target not in ("environments.models", "environments.selectors")
            ):
                bad.append(f"{module} -> {target}")
    return bad


def tags_importing_views(graph: dict[str, set[str]]) -> list[str]:
    """Template tags and views share context builders from ``keys.selectors``; a tag module
    never imports a view module."""
    return [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        if ".templatetags." in module
        for target in sorted(targets)
        if target.startswith(("keys.views", "environments.views", "environments.account_views"))
    ]


# --- the real tree ------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph(ROOT)


def test_it_reads_imports_of_every_kind_from_the_real_tree(graph):
    # A module-level relative import, an absolute one and a package-level one, each known to exist.
    assert "keys.models" in graph["keys.services.registrations"]
    assert "keys.services.records" in graph["keys.api.views"]
    assert "environments.models" in graph["keys.models"]
    assert len(graph) > 60


def test_the_import_graph_has_no_cycle(graph):
    assert cycles(graph) == []


def test_no_module_imports_a_higher_layer(graph):
    assert upward_imports(graph) == []


def test_keys_uses_only_the_models_and_selectors_of_environments(graph):
    assert cross_app_imports(graph) == []


def test_template_tags_import_no_view_module(graph):
    assert tags_importing_views(graph) == []


def test_every_module_of_the_apps_has_a_layer(graph):
    for module in graph:
        if module.startswith(("keys", "environments")):
            layer_of(module)  # raises for a module nobody placed


def test_only_the_aws_adapters_and_their_helper_import_the_aws_sdk():
    assert aws_sdk_imports(ROOT) == AWS_SDK_IMPORTERS


def test_only_the_kms_and_sts_adapters_import_their_shared_helper(graph):
    assert {module for module, targets in graph.items() if "keys.aws_clients" in targets} == {"keys.kms", "keys.sts"}


# --- the checker itself can fail ----------------------------------------------------------


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def test_it_finds_a_cycle_hidden_in_a_function_level_relative_import(tmp_path):
    _write(
        tmp_path,
        {
            "keys/__init__.py": "",
            "keys/cache.py": "def load():\n    from .services import sealing\n    return sealing\n",
            "keys/services/__init__.py": "",
            "keys/services/sealing.py": "from keys.models import KeyRegistration\n",
            "keys/services/records.py": "from .. import cache\n",
            "keys/models.py": "from keys.services import records\n",
        },
    )
    graph = build_graph(tmp_path, ("keys",))

    assert graph["keys.cache"] == {"keys.services.sealing"}
    assert graph["keys.services.records"] == {"keys.cache"}
    assert cycles(graph) == [["keys.cache", "keys.models", "keys.services.records", "keys.services.sealing"]]


def test_it_finds_a_two_module_cycle_through_from_dot_import(tmp_path):
    _write(
        tmp_path,
        {
            "keys/__init__.py": "",
            "keys/a.py": "from . import b\n",
            "keys/b.py": "def f():\n    import keys.a\n",
        },
    )
    assert cycles(build_graph(tmp_path, ("keys",))) == [["keys.a", "keys.b"]]


def test_it_reports_an_adapter_importing_a_service_and_a_service_importing_a_view():
    graph = {
        "keys.cache": {"keys.services.sealing", "keys.models"},
        "keys.services.validation": {"keys.tasks", "keys.kms"},
        "keys.services.records": {"keys.views.try_it"},
        "keys.models": {"keys.api.views"},
        "keys.views.try_it": {"keys.services.records"},
    }
    assert upward_imports(graph) == [
        "keys.cache (adapter) -> keys.services.sealing (service)",
        "keys.models (model) -> keys.api.views (view/API/admin/task)",
        "keys.services.records (service) -> keys.views.try_it (view/API/admin/task)",
        "keys.services.validation (service) -> keys.tasks (view/API/admin/task)",
    ]


def test_it_reports_keys_reaching_into_environments_services():
    assert cross_app_imports({"keys.services.lifecycle": {"environments.services", "environments.models"}}) == [
        "keys.services.lifecycle -> environments.services"
    ]


def test_it_reports_a_template_tag_importing_a_view():
    graph = {"keys.templatetags.lifecycle_tags": {"keys.views.lifecycle", "keys.selectors"}}
    assert tags_importing_views(graph) == ["keys.templatetags.lifecycle_tags -> keys.views.lifecycle"]


def test_it_finds_an_aws_sdk_import_inside_a_function(tmp_path):
    _write(
        tmp_path,
        {
            "keys/__init__.py": "",
            "keys/views.py": "def f():\n    import boto3.session\n    from botocore import exceptions\n",
            "keys/models.py": "from keys import views\n",
        },
    )
    assert aws_sdk_imports(tmp_path, ("keys",)) == {"keys.views": {"boto3.session", "botocore"}}


def test_it_refuses_a_module_without_a_layer():
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("environments.helpers")
