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
