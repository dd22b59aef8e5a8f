"""Path patterns of the cards: globs with ``**``, and ``{name}`` templates filled from regex groups."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def glob_to_regex(glob: str) -> str:
    """Translate a path glob: ``**`` any depth (``a/**/b`` also matches ``a/b``), ``*`` and ``?``
    inside one path segment, ``[abc]``/``[!abc]`` character classes.

    (fnmatch lets ``*`` cross ``/`` and has no ``**``; glob.translate arrives only in Python 3.13.)
    """
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**", i):
            at_start = i == 0 or glob[i - 1] == "/"
            i += 2
            if at_start and i < n and glob[i] == "/":
                out.append("(?:.*/)?")
                i += 1
            elif at_start and i == n and out and out[-1] == "/":
                out[-1] = "(?:/.*)?"
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 2 if i + 1 < n and glob[i + 1] in "!^" else i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                negate = body[:1] in ("!", "^")
                body = body[1:] if negate else body
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^' if negate else ''}{body}]")
                i = end
        elif c == "/":
            out.append("/")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_glob(glob: str) -> re.Pattern[str]:
    return re.compile(glob_to_regex(glob))


def template_names(text: str) -> set[str]:
    """The ``{name}`` placeholders in ``text``."""
    return set(_PLACEHOLDER.findall(text))


def fill_template(text: str, groups: Mapping[str, str]) -> str:
    """Replace each ``{name}`` by the regex group of that name (left as is when there is none)."""
    return _PLACEHOLDER.sub(lambda m: groups.get(m.group(1), m.group(0)), text)
