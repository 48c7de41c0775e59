"""Keep the book's notebooks consistent.

    python scripts/sync_notebooks.py          # rewrite: set-up cell, no outputs
    python scripts/sync_notebooks.py --check  # report problems, exit 1 if any

Every notebook's first code cell is generated from ``_config.yml`` (the
repository URL is set there only; ``FR_REPO_URL`` overrides it when the cell
runs, e.g. ``file:///path/to/clone`` in ``scripts/colab_sim.py``). On Colab it
pip-installs fr_lib when its ``fr_colab`` module is missing (checking pip's
exit status) and calls ``fr_colab.setup()``, which completes the install with
``fr_install --colab`` only while ``fr_install --check --colab`` fails; it
prints nothing elsewhere. Then it sets the OpenMP threads explicitly
(``fr_lib.configure_threads()``) and reads the quick-mode switch ``FR_QUICK``.
Notebooks are committed without outputs.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "# 本书每节的第一个代码单元"

SETUP_CELL = """\
# 本书每节的第一个代码单元：在 Colab 上补装 fr_lib 等包；设置线程；读 FR_QUICK。
import importlib.util, os, subprocess, sys
if 'google.colab' in sys.modules:
    REPO = os.getenv('FR_REPO_URL', '{url}')
    pip = f'pip install -q --no-deps git+{{REPO}}#subdirectory=fr_lib'
    if not importlib.util.find_spec('fr_colab'):
        r = subprocess.run([sys.executable, '-m', *pip.split()],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f'{{r.stderr}}\\n安装 fr_lib 失败，请运行 !{{pip}}')
        importlib.invalidate_caches()
    __import__('fr_colab').setup()
import fr_lib
fr_lib.configure_threads()  # 每个 CPU 核一个 OpenMP 线程
QUICK = fr_lib.utils.quick_mode()"""

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python",
              "name": "python3"}


def _load_yaml(root, name):
    import yaml  # PyYAML comes with jupyter-book
    with open(os.path.join(root, name), encoding="utf-8") as f:
        return yaml.safe_load(f)


def read_config_url(root=ROOT):
    """The repository URL from ``_config.yml`` (``repository: url:``)."""
    url = (_load_yaml(root, "_config.yml").get("repository") or {}).get("url")
    if not url:
        raise SystemExit("_config.yml has no repository: url: setting")
    return url


def setup_cell_source(root=ROOT):
    return SETUP_CELL.format(url=read_config_url(root))


def toc_files(root=ROOT):
    """Paths (without suffix) listed in ``_toc.yml``, in order."""
    files = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    files.append(node[key])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []):
                    walk(child)

    walk(_load_yaml(root, "_toc.yml"))
    return files


def book_notebooks(root=ROOT):
    """Every ``.ipynb`` under ``book/`` (relative paths, sorted)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "book")):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        found += [os.path.relpath(os.path.join(dirpath, n), root)
                  for n in filenames if n.endswith(".ipynb")]
    return sorted(found)


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def problems(path, nb, expected_setup):
    """What is wrong with one notebook (an empty list when nothing is)."""
    found = []
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    if not code or _source(code[0]) != expected_setup:
        found.append(f"{path}: first code cell is not the generated set-up cell")
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and (cell.get("outputs")
                                                 or cell.get("execution_count")):
            found.append(f"{path}: cell {i} has outputs or an execution count")
    return found


def sync(path, nb, expected_setup):
    code = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    if code and _source(code[0]).startswith(MARKER):
        code[0]["source"] = expected_setup
    else:
        first_code = next((i for i, c in enumerate(nb["cells"])
                           if c.get("cell_type") == "code"), len(nb["cells"]))
        nb["cells"].insert(first_code, {"cell_type": "code", "metadata": {},
                                        "source": expected_setup, "outputs": [],
                                        "execution_count": None})
    used = {c.get("id") for c in nb["cells"]}
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.setdefault("metadata", {})
        if not cell.get("id"):  # nbformat 4.5 requires unique cell ids
            n = i
            while f"cell-{n}" in used:
                n += 1000
            cell["id"] = f"cell-{n}"
            used.add(cell["id"])
    nb["nbformat"], nb["nbformat_minor"] = 4, max(5, nb.get("nbformat_minor", 5))
    nb.setdefault("metadata", {})["kernelspec"] = KERNELSPEC
    nb["metadata"].setdefault("language_info", {"name": "python"})
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    expected = setup_cell_source()
    errors = []
    for path in book_notebooks():
        full = os.path.join(ROOT, path)
        with open(full, encoding="utf-8") as f:
            nb = json.load(f)
        if args.check:
            errors += problems(path, nb, expected)
            continue
        text = json.dumps(sync(path, nb, expected), ensure_ascii=False, indent=1) + "\n"
        tmp = full + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, full)
        print(f"synced {path}")
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
