"""Rules of the code base checked on its source: settings are read only at the edge, every variable the code
reads is in the README's settings tables (and nothing more), every error code is in the README's table,
the layering contract holds."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from schemas.errors import catalog
from worker.settings import Topics

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "gateway", "worker", "trt_build", "engines", "schemas")
EDGE = ("cli",)  # the entry points: the only package that reads the process environment
ENV_HELPERS = ("int_env", "float_env", "choice_env", "path_env", "flag_env")


def sources(*packages: str):
    for package in packages:
        yield from sorted((REPO / package).rglob("*.py"))


def environ_reads(path: Path) -> list[str]:
    """Places in `path` that touch the process environment: os.environ, os.getenv, os.putenv."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "environb"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(
                alias.name in ("environ", "getenv") for alias in node.names):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} from os import ...")
    return found


def test_no_module_below_the_entry_points_reads_the_environment():
    below = [p for p in PACKAGES if p not in EDGE]
    offenders = [hit for path in sources(*below) for hit in environ_reads(path)]
    assert offenders == [], "settings must be built at the edge (cli/) and passed down:\n" + "\n".join(offenders)


def variables_read_by_the_code() -> set[str]:
    """Names passed to the settings helpers, env.get/env[...] of a settings mapping, and os.environ in cli/."""
    names: set[str] = set()
    for path in sources(*PACKAGES):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                receiver = ast.unparse(func.value) if isinstance(func, ast.Attribute) else ""
                if called in ENV_HELPERS and len(node.args) >= 2:
                    arg = node.args[1]
                elif called == "get" and receiver in ("env", "os.environ", "environ"):
                    arg = node.args[0] if node.args else None
                else:
                    continue
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("env", "os.environ"):
                if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                    names.add(node.slice.value)
    names.update(f"TOPIC_{field.name.upper()}" for field in fields(Topics))  # built from the field names
    return {n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def variables_in_the_readme() -> set[str]:
    names = set()
    for line in readme_section("Settings").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_every_variable_the_code_reads_is_in_the_readme_settings_and_nothing_else():
    code, readme = variables_read_by_the_code(), variables_in_the_readme()
    assert code - readme == set(), f"read by the code but missing from README 'Settings': {sorted(code - readme)}"
    assert readme - code == set(), f"in README 'Settings' but read by no code: {sorted(readme - code)}"


def test_every_error_code_is_in_the_readme_table_once_with_its_status_and_retryable():
    rows = {}
    for line in readme_section("Error codes").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            code = cells[0].strip("`")
            assert code not in rows, f"{code} is listed twice"
            rows[code] = (cells[1], cells[2])
    listed = catalog()
    assert len({e["code"] for e in listed}) == len(listed)
    expected = {e["code"]: (str(e["httpStatus"]), "yes" if e["retryable"] else "no") for e in listed}
    assert rows == expected


def test_layering_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_errors_are_declared_in_the_one_tree():
    """Elsewhere a class may only specialise a tree class without a code of its own; no bare Exception types."""
    from schemas import errors

    tree = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    offenders = []
    for path in sources(*PACKAGES):
        if path == REPO / "schemas" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {ast.unparse(b).split(".")[-1] for b in node.bases}
            sets_code = any(isinstance(s, ast.Assign) and any(getattr(t, "id", "") == "code" for t in s.targets)
                            for s in node.body)
            if bases & {"Exception", "ValueError", "RuntimeError"} or (bases & tree and sets_code):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert offenders == [], "declare errors in schemas/errors.py:\n" + "\n".join(offenders)
