"""The one error type a user sees: a single line naming the culprit and what to do."""


class UserError(Exception):
    """Bad input from the user (file, argument, dataset). The CLI prints it as one line, no traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def closest(name: str, choices, n: int = 3) -> str:
    """', did you mean X?' for an unknown name, or '' when nothing is close."""
    import difflib

    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f"; did you mean {', '.join(matches)}?" if matches else ""


def notice(message: str) -> str:
    """Tell the user, in one line on stderr, a rule that was applied to their input (e.g. how a CSV was read).

    Returns the line, so that the caller can also keep it (ImageTable.notices)."""
    import sys

    line = " ".join(str(message).split())
    print(f"notice: {line}", file=sys.stderr)
    return line


_NOTICED: set[str] = set()


def notice_once(message: str) -> str:
    """`notice`, printed the first time in this process only (a task loads its dataset again for a source, a
    validation task or a migration; a run draws episodes once per shots); returns the line either way."""
    line = " ".join(str(message).split())
    if line not in _NOTICED:
        _NOTICED.add(line)
        notice(line)
    return line
