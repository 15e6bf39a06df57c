"""`json` for the start path, without importing `json`.

The json package imports `re` (and through it enum, functools and collections): several
milliseconds of every pod start, and memory in every keeper, PID 1 and supervisor. The C
accelerator `_json` alone parses and escapes strings; this module puts the small rest
around it. loads/load/dumps/dump of plain documents work here; anything else (indent,
separators, hooks, cls, JSONDecodeError...) is handed to the real json package, so it
takes json's place (imported under its own name, so a reader knows which one runs).
"""
try:
    import _json
except ImportError:  # pragma: no cover - every CPython has it; others use json itself
    _json = None  # type: ignore[assignment]  # no accelerator: every function below hands over to json

_WS = " \t\n\r"


def _real():
    import json

    return json


class _Context:
    """What _json's scanner reads from a JSONDecoder: the defaults of json.loads."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity


# The scanner reads only these attributes of its context (typeshed wants a JSONDecoder).
_scan = _json.make_scanner(_Context()) if _json is not None else None  # type: ignore[arg-type]  # see above


def loads(s, **kw):
    """json.loads for str or UTF-8 bytes; a ValueError on bad input, as json raises."""
    if kw or _scan is None or not isinstance(s, (str, bytes, bytearray)):
        return _real().loads(s, **kw)
    if not isinstance(s, str):
        if s[:1] >= b"\x80" or b"\x00" in s[:4]:
            return _real().loads(s)  # a BOM, UTF-16 or UTF-32: json detects those
        s = s.decode("utf-8")
    start = len(s) - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, start)
    except StopIteration:
        return _real().loads(s)  # raises json's own JSONDecodeError with its message
    if s[end:].strip(_WS):
        return _real().loads(s)
    return obj


def load(fp, **kw):
    return loads(fp.read(), **kw)


def _encode(o, sort_keys, out):
    if isinstance(o, str):
        out.append(_json.encode_basestring_ascii(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        text = float.__repr__(o)
        if text in ("nan", "inf", "-inf"):
            raise _Unsupported  # json writes NaN, Infinity
        out.append(text)
    elif isinstance(o, dict):
        items = sorted(o.items()) if sort_keys else o.items()
        out.append("{")
        first = True
        for k, v in items:
            if not isinstance(k, str):
                raise _Unsupported  # json's key coercion rules: let it apply them
            if not first:
                out.append(", ")
            first = False
            out.append(_json.encode_basestring_ascii(k))
            out.append(": ")
            _encode(v, sort_keys, out)
        out.append("}")
    elif isinstance(o, (list, tuple)):
        out.append("[")
        for i, v in enumerate(o):
            if i:
                out.append(", ")
            _encode(v, sort_keys, out)
        out.append("]")
    else:
        raise _Unsupported


class _Unsupported(Exception):
    pass


def dumps(obj, sort_keys=False, **kw):
    """json.dumps with its default separators, ASCII output; other options go to json."""
    if kw or _json is None:
        return _real().dumps(obj, sort_keys=sort_keys, **kw)
    out = []  # type: list
    try:
        _encode(obj, sort_keys, out)
    except (_Unsupported, RecursionError, TypeError):
        return _real().dumps(obj, sort_keys=sort_keys)
    return "".join(out)


def dump(obj, fp, sort_keys=False, **kw):
    fp.write(dumps(obj, sort_keys=sort_keys, **kw))


def __getattr__(name):
    """Everything else (JSONDecodeError, JSONEncoder...) is json's own."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_real(), name)
