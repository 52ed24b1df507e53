"""Plain JSON values in a config: bounded nesting, finite numbers, bounded integers, and ``short``
for quoting what a file holds in a one-line message."""
import math

__all__ = ["MAX_JSON_DEPTH", "MAX_INT_BITS", "check_depth", "check_json", "short"]

MAX_JSON_DEPTH = 64             # a model config nests 6 deep; meta is for small records
MAX_INT_BITS = 1024             # meta's ints (a PCG64 state is 128-bit)


def check_depth(value, what):
    """Refuses nesting deeper than MAX_JSON_DEPTH (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def check_json(value, where, depth=0):
    """Raises ValueError unless ``value`` is plain JSON that loads back equal to itself."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if type(value) is int:
        if value.bit_length() > MAX_INT_BITS:
            raise ValueError(f"{where} is an integer of {value.bit_length()} bits; at most "
                             f"{MAX_INT_BITS} are stored")
        return
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}; JSON holds finite numbers only (encode it, "
                             f"e.g. as the string {str(value)!r})")
        return
    if type(value) is list:
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]", depth + 1)
        return
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r} of type {type(key).__name__}; "
                                 f"JSON keys are strings")
            check_json(item, f"{where}[{key!r}]", depth + 1)
        return
    raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__name__}; expected "
                     f"plain JSON (None, bool, int, float, str, list, dict; arrays belong in "
                     f"the state)")


def short(value, limit=200):
    """repr(value) cut to ``limit`` characters (and safe for ints too long to print)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value) if not isinstance(value, BaseException) else str(value)
    except ValueError:
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit] + "..."
