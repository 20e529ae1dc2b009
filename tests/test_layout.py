"""The package layout as a test: import directions, root modules, folder docstrings, no line counts.

Parses every module of `alexnet_tf` with `ast` (nothing is imported, so it runs in a second) and
fails, saying what to do, when the layout drifts:

- imports go one way: data/ (0) <- serving/ (1) <- weights/ (2) <- training/ (3) <- commands (4).
  A module may import its own folder, a lower folder, the public model API and the shared helpers.
  The public model API and the helpers import no folder. applications.py (like keras.applications,
  it loads weights) may import data/, serving/ and weights/, and training/ and commands may import
  it. Nothing imports a command module but that command's own package. Imports inside functions
  count.
- every root module is public API, a shared helper or a command;
- each package's `__init__.py` docstring lists exactly its modules and subpackages, one a line:
  `    name.py  description` or `    sub/  description`;
- no doc states a line count (it goes stale at the next edit);
- tools/ scripts run against the installed package and leave sys.path alone.
"""

import ast
import pathlib
import re

from conftest import REPO

ROOT = pathlib.Path(REPO)
PACKAGE = ROOT / "alexnet_tf"

FOLDER_RANKS = {"data": 0, "serving": 1, "weights": 2, "training": 3}
COMMAND_RANK = 4
# What users import; these paths stay.
PUBLIC_API = {"layers", "model", "optim", "config", "costs", "explain"}
# Small helpers every stage shares.
HELPERS = {"metrics", "hardware", "cli"}
# The keras.applications-style entry: it loads weights, so it sits just above weights/.
APPLICATIONS = "applications"
APPLICATIONS_RANK = 2.5
ROOT_COMMANDS = {
    "train",
    "evaluate",
    "export",
    "predict",
    "client",
    "info",
    "convert",
    "import_weights",
    "data_service",
}
COMMAND_PACKAGES = {"benchmark", "features"}

ENTRY_PATTERN = re.compile(r"^\s*((?:\w+\.py)|(?:\w+/))(?:\s|$)")
ENTRY_FORMAT = re.compile(r"^ {4}(\w+\.py|\w+/) {2,}\S")
LINE_COUNT = re.compile(r"\b\d[\d,]* lines\b", re.IGNORECASE)


def _rel(path):
    return path.relative_to(ROOT).as_posix()


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_module(dotted):
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(name, path):
    """(line, dotted target) of every alexnet_tf module `name` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate) else base
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _place(dotted):
    """Where a module of the package sits: (kind, name), kind one of package, api, helper,
    applications, folder, command, unknown."""
    parts = dotted.split(".")
    if parts == ["alexnet_tf"]:
        return "package", "alexnet_tf"
    top = parts[1]
    if top in FOLDER_RANKS:
        return "folder", top
    if top in ROOT_COMMANDS or top in COMMAND_PACKAGES:
        return "command", top
    if top in PUBLIC_API:
        return "api", top
    if top in HELPERS:
        return "helper", top
    if top == APPLICATIONS:
        return "applications", top
    return "unknown", top


def _rank(place):
    kind, name = place
    if kind == "folder":
        return FOLDER_RANKS[name]
    if kind == "applications":
        return APPLICATIONS_RANK
    if kind == "command":
        return COMMAND_RANK
    return None


def _where(place):
    kind, name = place
    return f"{name}/" if kind == "folder" or name in COMMAND_PACKAGES else f"{name}.py"


def _import_problem(importer, target):
    """Why `importer` may not import `target` (dotted names), or None."""
    source, dest = _place(importer), _place(target)
    if source == dest or dest[0] == "unknown":  # own folder or module; unknown ones fail below
        return None
    if dest[0] == "command":
        return (
            f"it imports the command module {target}: nothing imports a command. Move what it uses "
            f"down, into the folder of the stage whose data it consumes (or a public API module if "
            f"users import it), and import it from there in both"
        )
    if source[0] in ("api", "helper"):
        if dest[0] in ("api", "helper"):
            return None
        return (
            f"the public model API and the shared helpers import no folder, but it imports {target}: "
            f"move the code that needs {_where(dest)} into {_where(dest)} (or higher), or move what it "
            f"uses from there into a root API or helper module"
        )
    if source[0] == "package":
        if dest[0] in ("api", "helper", "applications"):
            return None
        return f"alexnet_tf/__init__.py imports {target}: it imports only the public API and helpers"
    if dest[0] in ("api", "helper", "package"):
        return None
    if _rank(dest) <= _rank(source):
        return None
    order = " <- ".join(f"{name}/" for name in FOLDER_RANKS) + " <- applications.py <- commands"
    return (
        f"{_where(source)} imports {target}, a later stage ({order}): move what it uses from "
        f"{_where(dest)} down to {_where(source)} or a lower folder, or move this code up to {_where(dest)}"
    )


def test_imports_go_one_way():
    modules = _modules()
    problems = []
    for name, path in modules.items():
        for line, target in _imports(name, path):
            if target != "alexnet_tf" and not target.startswith("alexnet_tf."):
                continue
            problem = _import_problem(name, target)
            if problem:
                problems.append(f"{_rel(path)}:{line}: {problem}")
    assert not problems, "\n".join(problems)


def _root_entries():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return modules, folders


def test_every_root_module_has_a_place():
    modules, folders = _root_entries()
    known_modules = PUBLIC_API | HELPERS | ROOT_COMMANDS | {APPLICATIONS}
    known_folders = set(FOLDER_RANKS) | COMMAND_PACKAGES
    problems = [
        f"alexnet_tf/{name}.py is neither public API, a shared helper nor a command: move it into the "
        f"folder of the stage whose data it consumes (data/, serving/, weights/, training/); if users "
        f"import it or run it with `python -m`, add it to PUBLIC_API or ROOT_COMMANDS in "
        f"tests/test_layout.py and to alexnet_tf/__init__.py's docstring"
        for name in sorted(modules - known_modules)
    ]
    problems += [
        f"alexnet_tf/{name}/ is neither a stage folder nor a command package: move its modules into a "
        f"stage folder, or add it to FOLDER_RANKS (with its place in the import order) or "
        f"COMMAND_PACKAGES in tests/test_layout.py"
        for name in sorted(folders - known_folders)
    ]
    problems += [
        f"tests/test_layout.py lists alexnet_tf/{name}, which is gone: remove it from the test"
        for name in sorted((known_modules - modules) | (known_folders - folders))
    ]
    assert not problems, "\n".join(problems)


def _docstring_problems(init):
    """What is wrong with how one package's `__init__.py` docstring lists its modules."""
    folder = init.parent
    where = f"{_rel(init)}'s docstring"
    on_disk = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
    on_disk |= {f"{p.parent.name}/" for p in folder.glob("*/__init__.py")}
    docstring = ast.get_docstring(ast.parse(init.read_text()), clean=False) or ""
    listed, problems = [], []
    for text in docstring.splitlines():
        match = ENTRY_PATTERN.match(text)
        if not match:
            continue
        listed.append(match.group(1))
        if not ENTRY_FORMAT.match(text):
            problems.append(
                f"{where} line {text.strip()!r}: write it as 4 spaces, `{match.group(1)}`, two or more "
                f"spaces, a one-line description"
            )
    problems += [
        f"add `{name}` to {where}, as `    {name}  one-line description`"
        for name in sorted(on_disk - set(listed))
    ]
    problems += [
        f"remove `{name}` from {where}: there is no {_rel(folder)}/{name}"
        for name in sorted(set(listed) - on_disk)
    ]
    problems += [
        f"{where} lists `{name}` {listed.count(name)} times: keep one line"
        for name in sorted(set(listed))
        if listed.count(name) > 1
    ]
    return problems


def test_package_docstrings_list_their_modules():
    problems = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if "__pycache__" not in init.parts:
            problems += _docstring_problems(init)
    assert not problems, "\n".join(problems)


def test_no_doc_states_a_line_count():
    texts = [ROOT / "README.md", ROOT / "BUILD.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = []
    for path in texts:
        if path.is_file():
            for number, text in enumerate(path.read_text().splitlines(), 1):
                found += [(f"{_rel(path)}:{number}", m.group(0)) for m in LINE_COUNT.finditer(text)]
    for path in _modules().values():
        tree = ast.parse(path.read_text())
        docstring = ast.get_docstring(tree, clean=False)
        if docstring:
            start = tree.body[0].lineno
            for offset, text in enumerate(docstring.splitlines()):
                found += [(f"{_rel(path)}:{start + offset}", m.group(0)) for m in LINE_COUNT.finditer(text)]
    problems = [
        f"{where}: states a line count ({count!r}); say what the code owns instead, counts go stale"
        for where, count in found
    ]
    assert not problems, "\n".join(problems)


SYS_PATH_EDITS = {"insert", "append", "extend", "remove", "pop", "clear", "__setitem__"}


def _is_sys_path(node):
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def test_tools_leave_sys_path_alone():
    problems = []
    for path in sorted((ROOT / "tools").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            edited = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and (
                    (node.func.attr in SYS_PATH_EDITS and _is_sys_path(node.func.value))
                    or node.func.attr == "addsitedir"
                )
            )
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                edited = any(_is_sys_path(getattr(t, "value", t)) or _is_sys_path(t) for t in targets)
            if edited:
                problems.append(
                    f"{_rel(path)}:{node.lineno} edits sys.path: import alexnet_tf as installed "
                    f"(`pip install -e .`) or run the script from the repository root instead"
                )
    assert not problems, "\n".join(problems)
