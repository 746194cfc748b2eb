"""``json.dumps(obj, indent=n)``, the same text, about twice as fast (the check's reports).

With an ``indent`` the standard library encodes in pure Python, one generator per container
and one yielded piece per value; a report with hundreds of thousands of violations spent
seconds there. :func:`dumps_indented` writes the same characters (``ensure_ascii``,
``allow_nan``, separators ``","`` and ``": "``, keys in insertion order, floats as
``float.__repr__``, ``NaN``/``Infinity``) with one recursive function and one list of
pieces; ``tests/test_jsontext.py`` compares it with ``json.dumps`` on random documents and
on real reports.
"""

from __future__ import annotations

from json.encoder import encode_basestring_ascii
from typing import Any

_INF = float("inf")


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _key(k: Any) -> str:
    """A dict key as ``json`` converts it (then quoted)."""
    if isinstance(k, str):
        return k
    if isinstance(k, float):
        return _float(k)
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def dumps_indented(obj: Any, indent: int = 1) -> str:
    """``json.dumps(obj, indent=indent)``: the same text.

    Parameters
    ----------
    obj:
        Dicts, lists, tuples, strings, numbers, booleans and ``None`` (subclasses encoded as
        ``json`` encodes them); no cycles.
    indent:
        Spaces per level (``≥ 0``).

    Returns
    -------
    str
        The JSON text (``TypeError`` for a value ``json`` cannot encode).
    """
    out: list[str] = []
    app = out.append
    pads = [" " * (indent * n) for n in range(64)]
    esc = encode_basestring_ascii

    def pad(level: int) -> str:
        return pads[level] if level < len(pads) else " " * (indent * level)

    def enc(o: Any, level: int) -> None:
        t = type(o)
        if t is str:
            app(esc(o))
        elif t is float:
            app(_float(o))
        elif t is int:
            app(int.__repr__(o))
        elif t is dict:
            enc_dict(o, level)
        elif t is list:
            enc_list(o, level)
        elif isinstance(o, str):
            app(esc(o))
        elif o is None:
            app("null")
        elif o is True:
            app("true")
        elif o is False:
            app("false")
        elif isinstance(o, int):
            app(int.__repr__(o))
        elif isinstance(o, float):
            app(_float(o))
        elif isinstance(o, (list, tuple)):
            enc_list(o, level)
        elif isinstance(o, dict):
            enc_dict(o, level)
        else:
            raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")

    def enc_list(o: Any, level: int) -> None:
        if not o:
            app("[]")
            return
        inner = pad(level + 1)
        app("[\n" + inner)
        sep = ",\n" + inner
        first = True
        for v in o:
            if first:
                first = False
            else:
                app(sep)
            enc(v, level + 1)
        app("\n" + pad(level) + "]")

    def enc_dict(o: dict, level: int) -> None:
        if not o:
            app("{}")
            return
        inner = pad(level + 1)
        app("{\n" + inner)
        sep = ",\n" + inner
        first = True
        for k, v in o.items():
            if first:
                first = False
            else:
                app(sep)
            app(esc(k if type(k) is str else _key(k)) + ": ")
            enc(v, level + 1)
        app("\n" + pad(level) + "}")

    enc(obj, 0)
    return "".join(out)
