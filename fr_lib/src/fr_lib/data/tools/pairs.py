"""Verification pair lists: LFW's ``pairs.txt`` and CSV pair files."""
import os


# -- pair lists -------------------------------------------------------------------

def read_lfw_pairs(path, images_root, ext="jpg"):
    """Parse an LFW ``pairs.txt``.

    The first line is ``folds pairs_per_fold`` (``10 300``: each fold has 300
    same-person then 300 different-person lines) or a single count ``N`` (``N``
    same then ``N`` different, as in ``pairsDevTrain.txt``). Then
    ``name idx1 idx2`` (same person) or ``name1 idx1 name2 idx2`` (different
    people); image ``idx`` of ``name`` is ``images_root/name/name_000idx.jpg``.

    Returns
    -------
    list of (lineno, path1, path2, issame)

    Raises
    ------
    ValueError
        On a malformed header or line (the line number is named) or when the
        number of lines disagrees with the header.
    """
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty pairs file")
    try:
        header = [int(x) for x in lines[0].split()]
    except ValueError:
        header = []
    if len(header) not in (1, 2) or min(header) < 1:
        raise ValueError(f"{path}: line 1 is {lines[0]!r}; an LFW pairs file "
                         "starts with 'folds pairs_per_fold' (e.g. '10 300') or "
                         "a single pair count")
    expected = 2 * header[0] * (header[1] if len(header) == 2 else 1)

    def image(name, idx, lineno):
        try:
            n = int(idx)
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: image number {idx!r} is not "
                             "an integer") from None
        return os.path.join(images_root, name, f"{name}_{n:04d}.{ext}")

    pairs = []
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 3:
            pairs.append((lineno, image(fields[0], fields[1], lineno),
                          image(fields[0], fields[2], lineno), True))
        elif len(fields) == 4:
            pairs.append((lineno, image(fields[0], fields[1], lineno),
                          image(fields[2], fields[3], lineno), False))
        else:
            raise ValueError(f"{path}: line {lineno} has {len(fields)} fields "
                             f"({line!r}); expected 'name idx1 idx2' or "
                             "'name1 idx1 name2 idx2'")
    if len(pairs) != expected:
        raise ValueError(f"{path}: the header {lines[0]!r} announces {expected} "
                         f"pairs but the file has {len(pairs)}")
    return pairs


_TRUE = {"1", "true", "same", "yes", "genuine"}
_FALSE = {"0", "false", "different", "diff", "no", "impostor"}


def read_pair_csv(path, images_root=None):
    """Parse a CSV of ``path1,path2,label`` (label 1/0, true/false, same/different).

    A first line whose label is not one of these is taken as a header.
    Relative paths are relative to ``images_root`` (default: the CSV's folder).

    Returns
    -------
    list of (lineno, path1, path2, issame)
    """
    import csv
    root = images_root or os.path.dirname(os.path.abspath(path))
    pairs = []
    with open(path, "r", encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise ValueError(f"{path}: line {lineno} has {len(row)} fields "
                                 f"({','.join(row)!r}); expected path1,path2,label")
            a, b, label = (x.strip() for x in row)
            label = label.lower()
            if label in _TRUE or label in _FALSE:
                pairs.append((lineno, os.path.join(root, a), os.path.join(root, b),
                              label in _TRUE))
            elif lineno == 1 and not pairs:
                continue  # header
            else:
                raise ValueError(f"{path}: line {lineno}: label {row[2]!r} is not "
                                 "1/0, true/false or same/different")
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def read_pairs(path, images_root=None, fmt="auto", ext="jpg"):
    """LFW ``pairs.txt`` or CSV, by ``fmt`` or (``'auto'``) by the file name
    (``.csv``) and content (commas)."""
    if fmt == "auto":
        if path.lower().endswith(".csv"):
            fmt = "csv"
        else:
            with open(path, "r", encoding="utf-8") as f:
                first = f.readline()
            fmt = "csv" if "," in first else "lfw"
    if fmt == "csv":
        return read_pair_csv(path, images_root)
    if fmt == "lfw":
        return read_lfw_pairs(path, images_root or os.path.dirname(
            os.path.abspath(path)), ext)
    raise ValueError(f"format must be 'auto', 'lfw' or 'csv', got {fmt!r}")
