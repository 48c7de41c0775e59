"""Matplotlib set-up for the book: Chinese labels and readable figures."""
import glob
import os

__all__ = ["CJK_FONTS", "use_chinese_font", "find_cjk_font_files"]

# Families tried in order; the first one installed is used. Simplified-Chinese
# fonts come first: matplotlib reads only the first face of a .ttc collection,
# which for Debian's Noto CJK file is the Japanese one (JP glyph shapes).
CJK_FONTS = ["Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
             "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei", "PingFang SC",
             "Heiti SC", "Noto Sans CJK JP", "Arial Unicode MS"]

_FONT_DIRS = ["/usr/share/fonts", "/usr/local/share/fonts",
              os.path.expanduser("~/.fonts"), os.path.expanduser("~/.local/share/fonts")]


def find_cjk_font_files():
    """Font files on this machine that look like CJK fonts (Noto CJK, WenQuanYi...)."""
    patterns = ["*NotoSansCJK*", "*NotoSerifCJK*", "*SourceHanSans*", "*wqy*",
                "*simhei*", "*msyh*"]
    found = []
    for root in _FONT_DIRS:
        for pattern in patterns:
            found += glob.glob(os.path.join(root, "**", pattern), recursive=True)
    return sorted(set(found))


def use_chinese_font():
    """Configure matplotlib so that Chinese text in figures renders.

    Book: introduced in ``chapter_introduction/face-recognition-task`` (人脸识别任务).

    Registers CJK font files installed after matplotlib built its font cache
    (e.g. ``apt-get install fonts-noto-cjk`` in a running Colab), then puts the
    first available CJK family in front of ``font.sans-serif``.

    Returns
    -------
    str or None
        The family used, or None when no CJK font is installed (a warning then
        says which package to install).
    """
    import matplotlib
    from matplotlib import font_manager
    for path in find_cjk_font_files():
        try:
            font_manager.fontManager.addfont(path)
        except (OSError, RuntimeError, ValueError):
            continue
    known = {f.name for f in font_manager.fontManager.ttflist}
    family = next((name for name in CJK_FONTS if name in known), None)
    if family is None:
        import warnings
        warnings.warn("no Chinese font found for matplotlib; install one, e.g. "
                      "`apt-get install fonts-wqy-microhei fonts-noto-cjk`", RuntimeWarning, stacklevel=2)
        return None
    sans = [family] + [f for f in matplotlib.rcParams["font.sans-serif"] if f != family]
    matplotlib.rcParams["font.sans-serif"] = sans
    matplotlib.rcParams["font.family"] = "sans-serif"
    # The CJK fonts have no U+2212 minus sign; use the ASCII hyphen.
    matplotlib.rcParams["axes.unicode_minus"] = False
    return family
