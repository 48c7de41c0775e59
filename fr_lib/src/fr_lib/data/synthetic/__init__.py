"""Synthetic face identities: procedurally drawn 112x112 RGB faces.

No installable package ships a multi-identity face data set, so tests, CI and
the book's quick mode train on *synthetic* identities. They are cartoons, not
faces: they exercise the whole pipeline (RecordIO, samplers, margin losses,
verification on a ``.bin``) on data with a real identity structure, and they
say nothing about accuracy on real faces.

- An **identity** is a fixed set of parameters drawn from a seeded generator:
  face shape (ellipse axes), skin tone, eye spacing, size, shape and colour,
  brows, nose, mouth width and lips, hair style/colour/hairline, ears, moles,
  and accessories (glasses, beard).
- An **image** of an identity adds nuisances drawn from a second generator:
  pose (rotation, scale, shift, shear as a small affine warp, plus a sideways
  shift of the features that mimics yaw), expression (smile, open mouth,
  raised brows, blink, gaze), background and clothes, a lighting gradient and
  colour cast, blur, sensor noise and, sometimes, an occluding rectangle.
- ``difficulty`` in [0, 1] scales both: nuisance strength grows with it and
  identities are drawn closer to the average face (the spread of every
  continuous parameter shrinks to 40 % at ``difficulty=1``).

Everything is a pure function of ``(seed, difficulty, identity, image)``: the
same seed gives byte-identical images and records, whatever the number of
worker processes. Features sit near the ArcFace 5-point template, so the

The package holds the drawing (:mod:`.faces`: :class:`SyntheticFaces`) and the
writing of a data set (:mod:`.writer`: :func:`write_dataset`); every name is
importable from here.
"""
from .faces import SIZE, SyntheticFaces, _rng  # noqa: F401
from .writer import render_jpegs, write_dataset, _val_pairs  # noqa: F401

__all__ = ["SyntheticFaces", "write_dataset"]
