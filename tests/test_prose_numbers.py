"""Every number in a section's prose is computed, a setting, or explained.

The rule (see book/prose_numbers/*.yml for the allow-lists): a number literal in
a markdown cell, outside ``$math$``, code spans, roles and link targets, must be

(a) a ``{glue:...}`` role (then a ``glue('name', ...)`` call in the same
    notebook must produce that name), or
(b) a literal that appears in the notebook's code cells (a setting such as
    ``m=0.5``, ``112``, ``batch_size = 64``), or
(c) listed for that notebook in a ``book/prose_numbers/*.yml`` file with a reason
    (a paper's figure with its citation, a definition, arithmetic), or
(d) exempt: a year (1900-2099), ``第 N 章/节/步/层...`` ordinals, and
    integers 0-10 used as counts — unless the number carries a measurement
    unit (%, 倍, ×, °, 秒, s, ms, 个百分点), which is never exempt.

Notebooks under ``pending:`` in those files are expected to fail (strict xfail),
so progress is visible and a fixed notebook must leave the list.
"""
import json
import pathlib
import re

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / 'book'
ALLOW = BOOK / 'prose_numbers'   # one file per chapter (or per section)
NOTEBOOKS = sorted(p for p in BOOK.rglob('*.ipynb')
                   if '_build' not in p.parts and '.ipynb_checkpoints'
                   not in p.parts)

UNIT = r'(?:\s*(?:%|％|倍|×|x\b|°|度|秒|s\b|ms\b|个百分点|百分点|MB|GB|小时))'
NUM = re.compile(r'(?<![\w.])(\d+(?:\.\d+)?(?:e[-+]?\d+)?)(' + UNIT + r')?')
ORDINAL = re.compile(r'第\s*$')
ORDINAL_AFTER = re.compile(
    r'^\s*(?:章|节|步|层|个迭代周期|轮|维|行|列|张|类|列|部分)')
STRIP = [
    re.compile(r'\$\$.*?\$\$', re.S),          # display math
    re.compile(r'(?<!\\)\$[^$\n]+?\$'),        # inline math
    re.compile(r'\{[\w:-]+\}`[^`]*`'),        # MyST roles (glue, numref, cite)
    re.compile(r'```.*?```', re.S),            # fenced blocks
    re.compile(r'`[^`]*`'),                    # code spans
    re.compile(r'\]\([^)]*\)'),                # link targets
    re.compile(r'<[^>]+>'),                    # html tags
    re.compile(r'^\s*#+\s*[\d.]*', re.M),      # heading numbering
    re.compile(r'^\s*\d+\.\s', re.M),          # numbered list markers
    re.compile(r'\(\w[\w-]*\)='),              # MyST labels
    re.compile(r'arXiv[:\s]*\d+\.\d+', re.I),  # paper ids
    re.compile(r'[A-Za-z_][\w-]*\d[\w-]*'),    # names: iresnet50, fp16, R100
]
GLUE_ROLE = re.compile(r'\{glue(?::\w+)?\}`([^`:]+)')
GLUE_CALL = re.compile(r'''glue\(\s*(f?)['"]([^'"{]*)(\{?)[^'"]*['"]\s*(\+?)''')
# a measured quantity: after these words a number is a result, never exempt
CLAIM = re.compile(r'(?:约|大约|≈|(?<!方)差|误差|准确率|精度|达到|只有|仅|快(?!速)|慢)[^，。；\d]{0,6}$')


def _load_allow():
    """Merge every ``book/prose_numbers/*.yml``: a notebook may appear in one."""
    merged = {'notebooks': {}, 'pending': []}
    for path in sorted(ALLOW.glob('*.yml')):
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
        if not isinstance(data, dict):
            raise ValueError(f'{path}: expected a mapping')
        for rel, entries in (data.get('notebooks') or {}).items():
            if rel in merged['notebooks']:
                raise ValueError(f'{path}: {rel} is already listed in '
                                 'another prose_numbers file')
            merged['notebooks'][rel] = entries
        merged['pending'] += list(data.get('pending') or [])
    return merged


def _cells(nb_path):
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    for cell in nb['cells']:
        src = cell['source']
        yield cell['cell_type'], src if isinstance(src, str) else ''.join(src)


def _norm(num):
    try:
        return repr(float(num))
    except ValueError:
        return num


def _code_numbers(code):
    return {_norm(m.group(1)) for m in re.finditer(
        r'(?<![\w.])(\d+(?:\.\d+)?(?:e[-+]?\d+)?)', code)}


def prose_findings(nb_path, allowed=()):
    """Return the unexplained numbers and the unknown glue keys of a notebook."""
    md = [s for t, s in _cells(nb_path) if t == 'markdown']
    code = '\n'.join(s for t, s in _cells(nb_path) if t == 'code')
    in_code = _code_numbers(code)
    allowed = {_norm(str(a)) for a in allowed}
    glued, prefixes = set(), set()
    for f, key, brace, plus in GLUE_CALL.findall(code):
        (prefixes if (f and brace) or plus else glued).add(key)
    used = {k.strip() for s in md for k in GLUE_ROLE.findall(s)}
    missing = sorted(k for k in used - glued
                     if not any(k.startswith(p) for p in prefixes))
    bad = []
    for text in md:
        for pat in STRIP:
            text = pat.sub(' ', text)
        for m in NUM.finditer(text):
            num, unit = m.group(1), m.group(2)
            value = float(num)
            before, after = text[:m.start()], text[m.end():]
            if _norm(num) in allowed:
                continue
            claim = CLAIM.search(before[-12:])
            if not unit and not claim:
                if '.' not in num and 1900 <= value <= 2099:
                    continue
                if ORDINAL.search(before[-3:]) or ORDINAL_AFTER.match(after):
                    continue
                if '.' not in num and value <= 10:
                    continue
                if _norm(num) in in_code:
                    continue
            elif unit and _norm(num) in in_code and unit.strip() not in (
                    '%', '％', '倍', '×', 'x', '秒', 's', 'ms', '个百分点',
                    '百分点'):
                continue
            line = text[max(0, m.start() - 25):m.end() + 10]
            bad.append(f'{num}{(unit or "").strip()}  …{" ".join(line.split())}…')
    return bad, missing


def _ids():
    return [str(p.relative_to(BOOK)) for p in NOTEBOOKS]


def _params():
    allow = _load_allow()
    pending = set(allow.get('pending') or [])
    out = []
    for p in NOTEBOOKS:
        rel = str(p.relative_to(BOOK))
        marks = [pytest.mark.xfail(strict=True, reason='pending rewrite')] \
            if rel in pending else []
        out.append(pytest.param(p, id=rel, marks=marks))
    return out


@pytest.mark.parametrize('nb_path', _params())
def test_prose_numbers(nb_path):
    allow = _load_allow()
    rel = str(nb_path.relative_to(BOOK))
    entries = (allow.get('notebooks') or {}).get(rel) or {}
    for number, reason in entries.items():
        assert isinstance(reason, str) and reason.strip(), (
            f'{ALLOW}/*.yml: {rel} -> {number} needs a reason')
    bad, missing = prose_findings(nb_path, entries.keys())
    assert not missing, (f'{rel}: {{glue}} keys without a glue() call: '
                         f'{missing}')
    assert not bad, (f'{rel}: numbers in prose neither glued, in code, nor in '
                     f'book/prose_numbers/*.yml ({len(bad)}):\n' + '\n'.join(bad))


def test_rule_catches_examples():
    """The rule flags a quoted output, a unit figure, and a missing glue."""
    import tempfile
    nb = {'cells': [
        {'cell_type': 'code', 'source': 'm = 0.5\nx = 0.6\nglue("a", 1)\nglue(f"c_{k}", 2)'},
        {'cell_type': 'markdown', 'source':
         '余弦从 0.6 变成了约 0.134，最大绝对差都是 0，快约 1.8–2.1 倍，m 取 0.5，'
         '标准差约 2.6 个百分点，第 3 章，{glue:text}`b:.2f`，{glue:text}`c_d:.1f`，$x=0.7$'},
    ], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d) / 'x.ipynb'
        p.write_text(json.dumps(nb), encoding='utf-8')
        bad, missing = prose_findings(p)
    flagged = {b.split()[0] for b in bad}
    assert flagged == {'0.134', '1.8', '2.1倍', '2.6个百分点', '0'}, bad
    assert missing == ['b']
