"""Summaries of data sets: histograms, ``describe_rec``/``describe_bin``, contact sheets and the emore check."""
import os

import numpy as np


#: MS1M-ArcFace (``emore``, a.k.a. MS1MV2) as InsightFace distributes it.
EMORE_IDENTITIES = 85742
EMORE_IMAGES = 5822653
#: Pair counts of the verification sets shipped with it (and with the other
#: InsightFace training sets).
EMORE_BINS = {"lfw": 6000, "cfp_fp": 7000, "agedb_30": 6000, "calfw": 6000,
              "cplfw": 6000, "cfp_ff": 7000, "vgg2_fp": 5000}


# -- summaries and contact sheets --------------------------------------------------

def text_histogram(counts, width=40):
    """Lines of a text histogram of positive integers in power-of-two bins."""
    counts = np.asarray(counts, np.int64)
    if counts.size == 0:
        return ["  (empty)"]
    edges = [1]
    while edges[-1] <= counts.max():
        edges.append(edges[-1] * 2)
    hist = [int(((counts >= lo) & (counts < hi)).sum())
            for lo, hi in zip(edges[:-1], edges[1:])]
    top = max(hist)
    lines = []
    for lo, hi, n in zip(edges[:-1], edges[1:], hist):
        label = f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}"
        bar = "#" * int(round(width * n / top)) if n else ""
        lines.append(f"  {label:>11} | {bar:<{width}} {n}")
    return lines


def describe_rec(dataset, sample=16):
    """Summary lines of a :class:`~fr_lib.data.FaceRecordDataset`."""
    per_id = np.bincount(dataset.labels, minlength=dataset.num_classes) \
        if len(dataset) else np.zeros(0, np.int64)
    present = per_id[per_id > 0]
    sizes = {}
    for i in range(min(sample, len(dataset))):
        shape = tuple(dataset[i][0].shape)
        sizes[shape] = sizes.get(shape, 0) + 1
    lines = [f"rec        {dataset.rec_path}",
             f"layout     {dataset.layout}",
             f"images     {len(dataset):,}",
             f"classes    {dataset.num_classes:,} ({len(present):,} with images)"]
    if dataset.property is not None:
        c, h, w = dataset.property
        lines.append(f"property   {c},{h},{w}")
    else:
        lines.append("property   (no property file)")
    lines.append("image size " + ", ".join(
        f"{s[0]}x{s[1]}x{s[2]} ({n} of the first {min(sample, len(dataset))})"
        for s, n in sorted(sizes.items())))
    if len(present):
        lines.append(f"per class  min {present.min()}, mean {present.mean():.1f}, "
                     f"median {int(np.median(present))}, max {present.max()}")
        lines.append("images per identity:")
        lines += text_histogram(present)
    if dataset.bad_records:
        lines.append(f"bad records {len(dataset.bad_records)}")
    return lines


def describe_bin(vset):
    """Summary lines of a :class:`~fr_lib.data.VerificationSet`."""
    n = len(vset)
    same = int(vset.issame.sum())
    _, _, h, w = vset.images.shape
    return [f"bin        {vset.path}",
            f"pairs      {n:,} ({same:,} same, {n - same:,} different)",
            f"images     {2 * n:,} of {h}x{w}"]


def _label(tile, text):
    import cv2
    cv2.rectangle(tile, (0, tile.shape[0] - 14), (tile.shape[1], tile.shape[0]),
                  (0, 0, 0), -1)
    cv2.putText(tile, text, (2, tile.shape[0] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _tile(img, size):
    import cv2
    if hasattr(img, "asnumpy"):
        img = img.asnumpy()
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.uint8).copy()


def contact_sheet(dataset, identities=8, per_identity=8, size=112, gap=2):
    """An RGB grid: one row per identity (the first ``identities`` classes with
    images), its first ``per_identity`` images, each labelled with its class."""
    index = dataset.identity_index
    classes = sorted(index)[:identities]
    if not classes:
        raise ValueError(f"{dataset.rec_path}: no images to show")
    sheet = np.full((len(classes) * (size + gap) + gap,
                     per_identity * (size + gap) + gap, 3), 255, np.uint8)
    for r, c in enumerate(classes):
        for k, pos in enumerate(list(index[c])[:per_identity]):
            img, label = dataset[int(pos)]
            tile = _label(_tile(img, size), f"id {int(label)}")
            y, x = gap + r * (size + gap), gap + k * (size + gap)
            sheet[y:y + size, x:x + size] = tile
    return sheet


def pair_sheet(vset, pairs=8, columns=2, size=112, gap=2):
    """An RGB grid of the first ``pairs`` pairs of a ``.bin`` read with
    ``keep_raw=True``, side by side, labelled same/diff."""
    if vset.raw is None:
        raise ValueError("read the .bin with keep_raw=True to draw its pairs")
    n = min(pairs, len(vset))
    rows = (n + columns - 1) // columns
    pw = 2 * size + gap
    sheet = np.full((rows * (size + gap) + gap,
                     columns * (pw + 3 * gap) + gap, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = gap + r * (size + gap), gap + c * (pw + 3 * gap)
        tag = "same" if vset.issame[i] else "diff"
        sheet[y:y + size, x:x + size] = _label(_tile(vset.raw[2 * i], size),
                                               f"#{i} {tag}")
        sheet[y:y + size, x + size + gap:x + pw] = _label(
            _tile(vset.raw[2 * i + 1], size), f"#{i} {tag}")
    return sheet


# -- data set check ---------------------------------------------------------------

def check_dataset(folder, expect_identities=EMORE_IDENTITIES,
                  expect_images=EMORE_IMAGES, expect_bins=None, required_bins=None,
                  full=False, image_size=(112, 112), progress=False):
    """Check a training folder (``train.rec``, ``train.idx``, ``property``, ``.bin`` files).

    Parameters
    ----------
    folder : str
    expect_identities, expect_images : int or None
        Expected counts (None: not checked).
    expect_bins : dict or None
        ``{name: pairs}``; default :data:`EMORE_BINS`. Every ``.bin`` in the
        folder is read; those named here must have that many pairs.
    required_bins : iterable or None
        Names that must be present; default ``lfw, cfp_fp, agedb_30``.
    full : bool
        Decode every training image (slow) instead of checking headers.
    image_size : (h, w)

    Returns
    -------
    list of (name, ok, message)
    """
    from ..recordio import FaceRecordDataset
    from ..binfile import read_bin
    expect_bins = dict(EMORE_BINS if expect_bins is None else expect_bins)
    required = ["lfw", "cfp_fp", "agedb_30"] if required_bins is None \
        else list(required_bins)
    results = []

    def add(name, ok, message):
        results.append((name, bool(ok), message))

    if not os.path.isdir(folder):
        add("folder", False, f"{folder}: no such folder")
        return results
    for name in ("train.rec", "train.idx", "property"):
        path = os.path.join(folder, name)
        add(name, os.path.isfile(path),
            f"{path}: " + ("present" if os.path.isfile(path) else "missing"))
    if all(ok for _, ok, _ in results):
        try:
            ds = FaceRecordDataset(folder, check="full" if full else True,
                                   progress=progress)
        except Exception as err:  # report, do not crash: other checks still run
            add("records", False, f"{folder}: cannot read the records: {err}")
            ds = None
        if ds is not None:
            nc, h, w = ds.property
            labels = np.unique(ds.labels)
            add("layout", ds.layout == "insightface",
                f"layout {ds.layout} (expected insightface)")
            add("property size", (h, w) == tuple(image_size),
                f"property says {h}x{w}, expected {image_size[0]}x{image_size[1]}")
            span = f" ({labels[0]}..{labels[-1]})" if len(labels) else ""
            add("property vs records", nc == ds.num_classes == len(labels)
                and len(labels) and labels[0] == 0 and labels[-1] == nc - 1,
                f"property says {nc:,} classes; the records hold {len(labels):,} "
                f"distinct labels{span}")
            if ds.layout == "insightface":
                nid = len(ds._identity_keys)
                add("identity records", nid == nc,
                    f"{nid:,} identity records for {nc:,} classes")
            if expect_identities is not None:
                add("identities", nc == expect_identities,
                    f"{nc:,} identities, expected {expect_identities:,}")
            if expect_images is not None:
                add("images", len(ds) == expect_images,
                    f"{len(ds):,} images, expected {expect_images:,}")
    present = sorted(n[:-4] for n in os.listdir(folder) if n.endswith(".bin"))
    for name in required:
        if name not in present:
            add(f"{name}.bin", False, f"{os.path.join(folder, name + '.bin')}: "
                "missing")
    for name in present:
        path = os.path.join(folder, name + ".bin")
        try:
            vset = read_bin(path, image_size=tuple(image_size))
        except Exception as err:
            add(f"{name}.bin", False, f"{path}: {err}")
            continue
        want = expect_bins.get(name)
        add(f"{name}.bin", want is None or len(vset) == want,
            f"{len(vset):,} pairs ({int(vset.issame.sum()):,} same)"
            + (f", expected {want:,}" if want is not None else ""))
    return results
