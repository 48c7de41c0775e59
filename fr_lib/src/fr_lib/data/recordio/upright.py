"""JPEGs stored rotated (an EXIF orientation other than 1): finding them in a
rec (:func:`find_rotated_jpegs`) and writing an upright copy (:func:`write_upright_rec`)."""
import os

from ..transforms import decode_image, encode_jpeg
from .format import _parse_header
from .dataset import FaceRecordDataset
from .writer import write_face_rec

__all__ = ["find_rotated_jpegs", "write_upright_rec"]


def find_rotated_jpegs(dataset, prefix=4096):
    """The image records holding a JPEG with an EXIF orientation other than 1.

    Such a JPEG is stored on its side (or upside down, or mirrored) and only
    a decoder that applies the tag shows it upright: OpenCV (the Gluon path)
    does; MXNet's ``imdecode`` and DALI 1.35's decoders do not. ``fr-data
    folder2rec`` never writes one; recs from other tools may hold some.

    Parameters
    ----------
    dataset : FaceRecordDataset
    prefix : int
        Bytes of each payload read to find the tag (it sits in the first
        segments of the file).

    Returns
    -------
    list of (key, orientation)
    """
    from ..tools import jpeg_orientation
    out = []
    rec, path = dataset._rec, dataset.rec_path
    for key, off in zip(dataset.keys.tolist(), dataset._offsets.tolist()):
        where = dataset._where(key)
        head, _ = rec.read_prefix(off, where, prefix)
        start = _parse_header(head, path, where)[3]
        orientation = jpeg_orientation(head[start:])
        if orientation != 1:
            out.append((key, orientation))
    return out


def write_upright_rec(src, out_dir, quality=95, progress=False):
    """Copy a training set with every EXIF-rotated JPEG stored upright.

    Records whose JPEG carries an EXIF orientation other than 1 are decoded
    (OpenCV applies the tag) and re-encoded upright; all others keep their
    bytes. The layout, the order and the class ids are kept (array labels of
    a plain rec become their class id).

    Parameters
    ----------
    src : FaceRecordDataset or str
    out_dir : str
    quality : int
        JPEG quality of the re-encoded images.
    progress : bool

    Returns
    -------
    dict
        As :func:`write_face_rec`, plus ``rotated``: the number of images
        turned upright.
    """
    from ..tools import jpeg_orientation
    ds = src if isinstance(src, FaceRecordDataset) else FaceRecordDataset(src)
    if os.path.abspath(os.path.expanduser(out_dir)) == \
            os.path.dirname(os.path.abspath(ds.rec_path)):
        raise ValueError(f"{out_dir}: write the upright copy to another folder")
    turned = [0]

    def items():
        for i in range(len(ds)):
            raw = ds.read_raw(i)
            data = raw.data
            if data[:3] == b"\xff\xd8\xff" and jpeg_orientation(data) != 1:
                data = encode_jpeg(decode_image(data), quality)
                turned[0] += 1
            yield raw.label, data

    info = write_face_rec(out_dir, items(), layout=ds.layout,
                          num_classes=ds.num_classes, progress=progress)
    info["rotated"] = turned[0]
    return info
