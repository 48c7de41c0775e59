"""The financial functions of NumPy <= 1.19 (``numpy.lib.financial``), which
NumPy 1.20 removed and MXNet 1.9.1's ``mxnet.numpy.fallback`` still re-exports.

:mod:`fr_numpy_compat` puts them back into ``numpy`` as ``np.fv``, ``np.pmt``,
... . The same formulas and conventions as NumPy 1.17: ``when='end'`` is 0,
``'begin'`` is 1; cash paid out is negative. They live on in the
numpy-financial package; this file exists so that no extra package is needed.
Imported only when NumPy is (never at interpreter start).
"""
import sys

__all__ = ["fv", "pmt", "ipmt", "ppmt", "pv", "npv", "mirr", "rate"]


def _np():
    return sys.modules["numpy"]


def _when(when):
    if isinstance(when, str):
        return {"end": 0, "begin": 1, "e": 0, "b": 1, "finish": 0,
                "start": 1}[when]
    return when


def _fv(rate, nper, pmt, pv, when="end"):
    """Future value: ``fv + pv*(1+r)**n + pmt*(1+r*when)/r*((1+r)**n - 1) = 0``."""
    np = _np()
    when = _when(when)
    rate, nper, pmt, pv, when = np.broadcast_arrays(
        *map(np.asarray, (rate, nper, pmt, pv, when)))
    temp = (1.0 + rate) ** nper
    with np.errstate(divide="ignore", invalid="ignore"):
        fact = np.where(rate == 0, nper,
                        (1 + rate * when) * (temp - 1) / np.where(rate == 0, 1, rate))
    out = -(pv * temp + pmt * fact)
    return out[()] if out.ndim == 0 else out


def _pmt(rate, nper, pv, fv=0, when="end"):
    """Payment per period that brings ``pv`` to ``fv`` in ``nper`` periods."""
    np = _np()
    when = _when(when)
    rate, nper, pv, fv, when = np.broadcast_arrays(
        *map(np.asarray, (rate, nper, pv, fv, when)))
    temp = (1.0 + rate) ** nper
    mask = rate == 0
    safe = np.where(mask, 1.0, rate)
    fact = np.where(mask, nper, (1 + safe * when) * (temp - 1) / safe)
    out = -(fv + pv * temp) / fact
    return out[()] if out.ndim == 0 else out


def _ipmt(rate, per, nper, pv, fv=0, when="end"):
    """Interest part of the payment in period ``per`` (1-based)."""
    np = _np()
    when = _when(when)
    rate, per, nper, pv, fv, when = np.broadcast_arrays(
        *map(np.asarray, (rate, per, nper, pv, fv, when)))
    total = _pmt(rate, nper, pv, fv, when)
    ipmt = np.asarray(_fv(rate, per - 1, total, pv, when) * rate, dtype=float)
    # interest is paid at the end of the period; with when='begin' the first
    # period has none and the others are discounted by one period
    ipmt = np.where(when == 1, ipmt / (1 + rate), ipmt)
    ipmt = np.where(np.logical_and(when == 1, per == 1), 0.0, ipmt)
    return ipmt[()] if ipmt.ndim == 0 else ipmt


def _ppmt(rate, per, nper, pv, fv=0, when="end"):
    """Principal part of the payment in period ``per``: ``pmt - ipmt``."""
    return _pmt(rate, nper, pv, fv, when) - _ipmt(rate, per, nper, pv, fv, when)


def _pv(rate, nper, pmt, fv=0, when="end"):
    """Present value of a series of payments and a final value."""
    np = _np()
    when = _when(when)
    rate, nper, pmt, fv, when = np.broadcast_arrays(
        *map(np.asarray, (rate, nper, pmt, fv, when)))
    temp = (1 + rate) ** nper
    mask = rate == 0
    safe = np.where(mask, 1.0, rate)
    fact = np.where(mask, nper, (1 + safe * when) * (temp - 1) / safe)
    out = -(fv + pmt * fact) / temp
    return out[()] if out.ndim == 0 else out


def _npv(rate, values):
    """Net present value; the first value is at time 0 (NumPy's convention)."""
    np = _np()
    values = np.asarray(values)
    return (values / (1 + rate) ** np.arange(0, len(values))).sum(axis=0)


def _mirr(values, finance_rate, reinvest_rate):
    """Modified internal rate of return (NaN without both signs)."""
    np = _np()
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    pos = values > 0
    neg = values < 0
    if not (pos.any() and neg.any()):
        return np.nan
    numer = np.abs(_npv(reinvest_rate, values * pos))
    denom = np.abs(_npv(finance_rate, values * neg))
    return (numer / denom) ** (1.0 / (n - 1)) * (1 + reinvest_rate) - 1


def _rate(nper, pmt, pv, fv, when="end", guess=0.10, tol=1e-6, maxiter=100):
    """Interest rate per period, by Newton's method on the ``fv`` equation
    (NaN where it does not converge)."""
    np = _np()
    when = _when(when)
    nper, pmt, pv, fv, when = map(np.asarray, (nper, pmt, pv, fv, when))
    rn = np.asarray(guess, dtype=np.float64)
    for _ in range(maxiter):
        t1 = (rn + 1) ** nper
        t2 = (rn + 1) ** (nper - 1)
        g = fv + t1 * pv + pmt * (t1 - 1) * (rn * when + 1) / rn
        dg = (nper * t2 * pv - pmt * (t1 - 1) * (rn * when + 1) / rn ** 2
              + nper * pmt * t2 * (rn * when + 1) / rn + pmt * (t1 - 1) * when / rn)
        step = g / dg
        rn = rn - step
        if np.all(np.abs(step) < tol):
            return rn[()] if rn.ndim == 0 else rn
    out = np.full_like(rn, np.nan)
    return out[()] if out.ndim == 0 else out


# NumPy's names; inside, the functions call the underscored ones, which NumPy's
# argument names (fv, pmt, pv, rate) would shadow
fv, pmt, ipmt, ppmt, pv = _fv, _pmt, _ipmt, _ppmt, _pv
npv, mirr, rate = _npv, _mirr, _rate
