"""Class names a reader can tell apart: what every user-labelled dataset and `bench map`'s labels must hold.

A class name is shown in tables, legends and reports. One holding a character that does not show (a
zero-width space, a direction mark, a control character, a non-breaking space) would be a class that looks
like another, or like nothing; two names that differ only by case, Unicode form (a precomposed `é` against
`e` and a combining accent, full-width letters) or spacing are one class spelled twice, or two classes no
reader can tell apart. Both are refused in one line, never merged silently.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict

from common.errors import UserError

# Unicode categories whose characters show nothing of their own: controls, format characters (zero-width
# space, joiners, direction marks, soft hyphen, byte-order mark), surrogates, private use, unassigned, line and
# paragraph separators. Space separators other than the plain space are refused too: they look like one.
HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def hidden_characters(name: str) -> list[str]:
    """The characters of `name` that do not show, or show as a plain space but are not one."""
    return [ch for ch in name if unicodedata.category(ch) in HIDDEN or (unicodedata.category(ch) == "Zs" and ch != " ")]


def look(name: str) -> str:
    """What a reader sees of a name: its compatibility form, case-folded, with runs of spaces as one."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def check_class_names(what: str, kind: str, names) -> None:
    """A one-line UserError naming `what` when a class name holds a character that does not show, or two look
    alike (see the module docstring); `kind`: what the names are ("labels", "class folders")."""
    names = list(dict.fromkeys(names))
    for name in names:
        hidden = hidden_characters(name)
        if hidden:
            ch = hidden[0]
            described = f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}"
            raise UserError(
                f"{what}: {kind[:-1] if kind.endswith('s') else kind} {name!r} holds a character "
                f"that does not show ({described}); rename it without it"
            )
    by_look = defaultdict(list)
    for name in names:
        by_look[look(name)].append(name)
    clash = sorted(n for same in by_look.values() if len(same) > 1 for n in same)
    if clash:
        how = (
            "case"
            if all(len({n.casefold() for n in same}) == 1 for same in by_look.values() if len(same) > 1)
            else "case, Unicode form or spacing"
        )
        raise UserError(
            f"{what}: {kind} {', '.join(repr(c) for c in clash)} differ only by {how}; spell each "
            "class one way (rename or merge them)"
        )
