"""``python -m rftbench.launch.child IN OUT``: run the pickled call in IN, pickle its Outcome to OUT."""
from __future__ import annotations

import pickle
import sys
import traceback


def main(src: str, dst: str) -> int:
    from . import Outcome, call_in_worker

    with open(src, "rb") as f:
        fn, args, options = pickle.load(f)
    try:
        out = Outcome(value=call_in_worker(fn, args, options))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this call's outcome
        traceback.print_exc()
        out = Outcome(error=f"{type(exc).__name__}: {exc}")
    with open(dst + ".tmp", "wb") as f:
        pickle.dump(out, f)
    import os

    os.replace(dst + ".tmp", dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
