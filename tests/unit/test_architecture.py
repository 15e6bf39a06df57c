"""docs/architecture.md's picture against the code's own imports.

`pytest tests/unit/test_architecture.py` is the command that shows the picture matches: every
module_utils file is named in it, and the layers it draws hold in the imports (parsed, not
run): stage0 never imports ansible, stage1 imports only the standard library and itself,
the contract imports nothing of the project, and no file reaches into another's private names.
"""
import ast
import os
import re
import sys

import pytest

from tests.support import ROOT

MU = os.path.join(ROOT, "plugins", "module_utils")
STDLIB = set(sys.stdlib_module_names) | {"_signal", "_imp", "_json", "_thread"}


def _files(sub):
    top = os.path.join(MU, sub)
    return sorted(f[:-3] for f in os.listdir(top) if f.endswith(".py") and f != "__init__.py")


def _tree(sub, name):
    with open(os.path.join(MU, sub, name + ".py"), encoding="utf-8") as f:
        return ast.parse(f.read())


def _imports(sub, name):
    """(absolute top-level names, relative (level, module, names)) a file imports anywhere."""
    absolute, relative = set(), []
    for node in ast.walk(_tree(sub, name)):
        if isinstance(node, ast.Import):
            absolute |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative.append((node.level, node.module or "", [a.name for a in node.names]))
            else:
                absolute.add((node.module or "").split(".")[0])
    return absolute, relative


def _picture():
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    return text.split("```")[1]


@pytest.mark.parametrize("sub", ["stage0", "stage1", ""])
def test_every_module_utils_file_is_in_the_picture(sub):
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _picture()))
    missing = [f for f in _files(sub) if f not in words]
    assert not missing, "docs/architecture.md's picture does not name %s" % ", ".join(missing)


@pytest.mark.parametrize("name", _files("stage0"))
def test_stage0_never_imports_ansible(name):
    absolute = _imports("stage0", name)[0]
    assert "ansible" not in absolute and "ansible_collections" not in absolute


@pytest.mark.parametrize("name", _files("stage1"))
def test_stage1_imports_only_the_standard_library_and_itself(name):
    absolute, relative = _imports("stage1", name)
    assert absolute <= STDLIB | {"stage1"}, absolute - STDLIB
    assert all(imp[0] == 1 for imp in relative), relative


def test_the_contract_imports_nothing_of_the_project():
    absolute, relative = _imports("stage1", "contract")
    assert not relative and absolute <= STDLIB
    assert not absolute & {"json", "re", "enum", "typing"}, "contract.py is on the start path"


def _module_files():
    for sub in ("stage0", "stage1", ""):
        for name in _files(sub):
            yield sub, name


@pytest.mark.parametrize("sub,name", list(_module_files()))
def test_no_file_reaches_into_another_files_private_names(sub, name):
    """`from .x import _y` and `x._y` for a module x of ours: a seam that should be public."""
    ours = set(_files("stage0")) | set(_files("stage1")) | set(_files(""))
    relative = _imports(sub, name)[1]
    bad = ["%s.%s" % (mod, n) for level, mod, names in relative for n in names
           if level and n.startswith("_") and not n.startswith("__")]
    for node in ast.walk(_tree(sub, name)):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in ours and node.value.id != name
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append("%s.%s" % (node.value.id, node.attr))
    assert not bad, "%s/%s uses private names of other files: %s" % (sub, name, ", ".join(sorted(set(bad))))
