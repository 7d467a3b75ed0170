"""What a failed launched call said: the one line of its output that names what happened."""
from __future__ import annotations

import re

_ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupted|Exit)|[A-Z]{3,}\d? received)\b.*\S")
_NOISE = ("srun:", "slurmstepd:", "submitit ", "You can check", "or at paths", "- /", "---")


def last_error_line(text: str) -> str:
    """The last line of ``text`` that states an error (``SomeError: message``, ``SIGTERM received:
    ...``), without a module path; else its last line that is not SLURM's or submitit's own."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            head, sep, rest = line.partition(": ")
            return f"{head.rpartition('.')[2]}{sep}{rest}" if "." in head and " " not in head else line
    useful = [line for line in lines if not line.startswith(_NOISE) and not line.startswith("[")]
    return useful[-1] if useful else ""
