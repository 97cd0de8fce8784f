"""How a count reads in a message: the one place that knows "1 frame" from "2 frames"."""


def count(n: int, noun: str, the: str = "") -> str:
    """'1 frame', '2 frames'; `the` ('the ') goes before a count over one: 'the 2 frames'."""
    return f"1 {noun}" if n == 1 else f"{the}{n} {noun}s"
