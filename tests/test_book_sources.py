"""The book's sources: TOC <-> files, clean notebooks, generated set-up cell."""
import json
import os
import re

import pytest

import sync_notebooks as sync

ROOT = sync.ROOT


def existing(entry):
    for suffix in (".md", ".ipynb"):
        if os.path.exists(os.path.join(ROOT, entry + suffix)):
            return entry + suffix
    return None


def test_every_toc_entry_exists():
    missing = [e for e in sync.toc_files() if existing(e) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_notebook_and_page_is_in_the_toc():
    listed = {existing(e) for e in sync.toc_files()}
    pages = set(sync.book_notebooks())
    for dirpath, _, names in os.walk(os.path.join(ROOT, "book")):
        pages |= {os.path.relpath(os.path.join(dirpath, n), ROOT)
                  for n in names if n.endswith(".md")}
    unlisted = sorted(p for p in pages if p not in listed)
    assert not unlisted, f"not in _toc.yml: {unlisted}"


def test_toc_has_the_whole_plan():
    with open(os.path.join(ROOT, "_toc.yml"), encoding="utf-8") as f:
        toc = f.read()
    for slug in ["preface", "install", "introduction", "loss", "data", "backbone",
                 "evaluation", "training", "deployment"]:
        assert f"book/chapter_{slug}/index" in toc
    assert "book/chapter_appendix/api" in toc and "book/chapter_appendix/recipes" in toc
    assert toc.count("numbered: true") == 3


def test_chapter_one_has_two_sections():
    sections = [e for e in sync.toc_files() if e.startswith("book/chapter_introduction/")
                and not e.endswith("/index")]
    assert len(sections) >= 2
    assert all(existing(s).endswith(".ipynb") for s in sections)


@pytest.mark.parametrize("path", sync.book_notebooks())
def test_notebook_is_clean(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        nb = json.load(f)
    assert sync.problems(path, nb, sync.setup_cell_source()) == []
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", sync.book_notebooks())
def test_notebook_follows_the_style(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        nb = json.load(f)
    cells = nb["cells"]
    first = sync._source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and re.match(r"\(sec-[\w-]+\)=\n# ", first), \
        "a section starts with a MyST label and its title"
    text = "\n".join(sync._source(c) for c in cells if c["cell_type"] == "markdown")
    assert "## 小结" in text and "## 练习" in text
    assert "完整设置" in text, "say what the full setting is beside the quick one"
    assert "您" not in text
    for i, cell in enumerate(cells[1:], 1):
        if cell["cell_type"] != "code":
            continue
        lines = sync._source(cell).splitlines()
        assert len(lines) <= 15, f"cell {i} has {len(lines)} lines"
        long = [l for l in lines if len(l) > 78]
        assert not long, f"cell {i} has lines over 78 characters: {long}"


def test_setup_cell_uses_the_configured_repository():
    cell = sync.setup_cell_source()
    assert f"os.getenv('FR_REPO_URL', '{sync.read_config_url()}')" in cell
    assert "quick_mode()" in cell
    assert len(cell.splitlines()) <= 15
    assert max(len(l) for l in cell.splitlines()) <= 78
    # plain Python (no IPython `!` lines), ending on an assignment: nothing shown
    compile(cell, "setup-cell", "exec")
    assert cell.splitlines()[-1].startswith("QUICK = ")


def test_config_keeps_execution_strict():
    with open(os.path.join(ROOT, "_config.yml"), encoding="utf-8") as f:
        config = f.read()
    # Every scripts/book.sh build executes every notebook: the build reads the
    # Jupyter cache that book.sh empties and then fills (scripts/execute_book.py).
    assert "execute_notebooks: cache" in config
    assert "cache: _build/.jupyter_cache" in config
    with open(os.path.join(ROOT, "scripts", "book.sh"), encoding="utf-8") as f:
        book_sh = f.read()
    empties = book_sh.index("rm -rf _build/html _build/jupyter_execute _build/.jupyter_cache")
    assert empties < book_sh.index("scripts/execute_book.py") < book_sh.index(
        "jupyter-book\" build")
    assert "allow_errors: false" in config
    assert "nb_execution_raise_on_error: true" in config
    assert "colab_url:" in config and "binderhub_url:" in config


def test_sections_run_alone_exist():
    """The sections execute_book.py keeps apart are real sections of the toc."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "execute_book", os.path.join(ROOT, "scripts", "execute_book.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    docs = set(module.toc_files())
    assert module.ALONE and module.ALONE <= docs, module.ALONE - docs
    # a section that times code says so with perf_counter: it must run alone
    for doc in docs:
        path = os.path.join(ROOT, doc + ".ipynb")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                if "perf_counter" in f.read():
                    assert doc in module.ALONE, doc


def test_cell_timeout_fits_the_mode(monkeypatch):
    """A hung cell costs minutes in quick mode, not half an hour; full-mode
    cells (minutes of training each) keep 1800 s; FR_CELL_TIMEOUT overrides."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "execute_book", os.path.join(ROOT, "scripts", "execute_book.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("FR_CELL_TIMEOUT", raising=False)
    monkeypatch.setenv("FR_QUICK", "1")
    assert module.cell_timeout() == 300
    monkeypatch.setenv("FR_QUICK", "0")
    assert module.cell_timeout() == 1800
    monkeypatch.setenv("FR_CELL_TIMEOUT", "42")
    assert module.cell_timeout() == 42
