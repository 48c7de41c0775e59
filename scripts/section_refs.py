"""Every fr_lib function and class the book uses names, in its docstring, the
section that introduces it (as d2l's "Defined in :numref:" does).

The sections are read from the notebooks' code cells, in ``_toc.yml`` order:
``from fr_lib... import name`` and ``fr_lib.a.b.name`` uses, and ``alias.name``
after a module is imported (``from fr_lib import metrics`` then
``metrics.l2_normalize``); the first section that uses a function or class is
the one that introduces it. Its docstring gets one paragraph after the
summary::

    Book: introduced in ``chapter_loss/loss-comparison`` (比较：同一份数据上的所有损失).

(kept up to date by this script; API appendix pages show it too).

Usage::

    python scripts/section_refs.py          # rewrite the docstrings
    python scripts/section_refs.py --check  # exit 1 if any is out of date
"""
import argparse
import ast
import collections
import importlib
import inspect
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
MARK = "Book: "
IMPORT = re.compile(r"from\s+(fr_lib(?:\.[\w.]+)?)\s+import\s+(\([^)]*\)|[^\n]+)")
ATTR = re.compile(r"\bfr_lib(?:\.\w+)+")
WIDTH = 88


def _cells(path):
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    for cell in nb["cells"]:
        src = cell["source"]
        yield cell["cell_type"], src if isinstance(src, str) else "".join(src)


def _title(path):
    for kind, src in _cells(path):
        if kind == "markdown":
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def _resolve(dotted):
    """The function or class a dotted fr_lib name refers to, or None."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
            if obj is None:
                return None
        break
    else:
        return None
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return None
    if not getattr(obj, "__module__", "").startswith("fr_lib"):
        return None
    if obj.__name__.startswith("_"):
        return None
    return obj


def _imported(listed):
    """(name, alias) of each item of a ``from ... import`` list."""
    items = re.sub(r"#[^\n]*", "", listed).strip().strip("()")
    for item in items.split(","):
        parts = item.split()
        if len(parts) == 3 and parts[1] == "as" and parts[0].isidentifier():
            yield parts[0], parts[2]
        elif len(parts) == 1 and parts[0].isidentifier():
            yield parts[0], parts[0]


def _is_module(dotted):
    """Whether the dotted fr_lib name is a module (or package); imported here,
    as fr_lib's lazy packages load their submodules on first use."""
    try:
        importlib.import_module(dotted)
    except ImportError:
        return False
    return True


def book_uses():
    """{(module, qualname): [(section, title), ...]} in _toc order."""
    import sync_notebooks
    uses = collections.OrderedDict()
    for entry in sync_notebooks.toc_files():
        path = os.path.join(ROOT, entry + ".ipynb")
        if not os.path.exists(path):
            continue
        code = "\n".join(src for kind, src in _cells(path) if kind == "code")
        names = set(ATTR.findall(code))
        for module, listed in IMPORT.findall(code):
            for name, alias in _imported(listed):
                names.add(f"{module}.{name}")
                if _is_module(f"{module}.{name}"):  # metrics.l2_normalize(...)
                    names.update(f"{module}.{name}.{attr}" for attr in
                                 re.findall(rf"(?<![\w.]){alias}\.(\w+)", code))
        section = entry.replace("book/", "", 1)
        for dotted in sorted(names):
            obj = _resolve(dotted)
            if obj is None:
                continue
            key = (obj.__module__, obj.__qualname__)
            places = uses.setdefault(key, [])
            if section not in [s for s, _ in places]:
                places.append((section, _title(path)))
    return uses


def _line(places, indent):
    section, title = places[0]
    text = f"{MARK}introduced in ``{section}``" + (f" ({title})." if title else ".")
    words, lines, line = text.split(" "), [], ""
    for word in words:
        if line and len(indent) + len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return [indent + l for l in lines]


def _docstring_node(tree, qualname):
    body, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef,
                                                       ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            return None
        body = node.body
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        return node, first
    return node, None


def rewrite(path, entries):
    """Source of ``path`` with the Book paragraph of each (qualname, places)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    tree = ast.parse("\n".join(lines))
    edits = []
    for qualname, places in entries:
        found = _docstring_node(tree, qualname)
        if found is None or found[1] is None:
            raise SystemExit(f"section_refs: {path}: {qualname} has no docstring")
        node, doc = found
        start, end = doc.lineno - 1, doc.end_lineno - 1
        edits.append((start, end, node.col_offset + 4, places))
    for start, end, col, places in sorted(edits, reverse=True):
        indent = " " * col
        block = lines[start:end + 1]
        # drop an existing Book paragraph (up to its blank line) and the
        # blank line before it
        out, skip = [], False
        for i, line in enumerate(block):
            stripped = line.strip()
            if i > 0 and stripped.startswith(MARK):
                skip = True
                if out and not out[-1].strip():
                    out.pop()
                continue
            if skip:
                if stripped and i < len(block) - 1:
                    continue
                skip = False
                if not stripped:
                    out.append(line)
                    continue
            out.append(line)
        block = out
        para = _line(places, indent)
        if len(block) == 1:  # """Summary."""  ->  summary, blank, Book, closing
            quote = block[0].lstrip()[:3] if block[0].lstrip()[:1] not in "rbuRBU" \
                else block[0].lstrip()[:4]
            text = block[0]
            close = text.rindex(quote[-3:])
            block = [text[:close], ""] + para + [indent + quote[-3:]]
        else:
            # after the summary paragraph: the first blank line, else before
            # the closing quotes
            blank = next((i for i in range(1, len(block) - 1) if not block[i].strip()),
                         None)
            if blank is None:
                last = block[-1]
                if last.strip() in ('"""', "'''"):
                    block = block[:-1] + [""] + para + [last]
                else:  # text and closing quotes on one line
                    close = last.rindex(last.rstrip()[-3:])
                    block = block[:-1] + [last[:close].rstrip(), ""] + para + \
                        [indent + last.rstrip()[-3:]]
            else:
                block = block[:blank] + [""] + para + block[blank:]
        lines[start:end + 1] = block
    return "\n".join(lines)


def plan():
    """{source file: [(qualname, places)]} for every object the book uses."""
    files = collections.defaultdict(list)
    for (module, qualname), places in book_uses().items():
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        path = inspect.getsourcefile(obj)
        files[path].append((qualname, places))
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="report out-of-date docstrings, change nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, entries in sorted(plan().items()):
        with open(path, encoding="utf-8") as f:
            before = f.read()
        after = rewrite(path, entries)
        if after != before:
            stale.append(os.path.relpath(path, ROOT))
            if not args.check:
                tmp = path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(after)
                os.replace(tmp, path)
    if args.check and stale:
        print("section_refs: out of date (run python scripts/section_refs.py):\n  "
              + "\n  ".join(stale))
        return 1
    if not args.check:
        print(f"section_refs: {len(stale)} file(s) updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
