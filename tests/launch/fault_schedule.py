"""A test plugin: the ``fault`` schedule is linear, and halfway through training it fails on
purpose (``mode: 1`` raises; ``mode: 2`` SIGKILLs its own process once, while the file named by
$RFTBENCH_TEST_KILL_MARKER exists, removing it first, so the re-run goes through)."""
import os
import signal
from pathlib import Path

from rftbench.params import Param
from rftbench.scheduling import Schedule, register_schedule


@register_schedule("fault")
class Fault(Schedule):
    params = (Param("mode", 0, 0, 2, kind="int", help="0 fine, 1 raise, 2 SIGKILL once"),)

    def alpha(self, progress: float) -> float:
        mode = int(self.values["mode"])
        if progress >= 0.5 and mode == 1:
            raise RuntimeError("fault schedule: failing on purpose")
        marker = os.environ.get("RFTBENCH_TEST_KILL_MARKER")
        if progress >= 0.5 and mode == 2 and marker:
            try:
                Path(marker).unlink()  # only the process that removes it dies (two may race for it)
            except FileNotFoundError:
                return progress
            os.kill(os.getpid(), signal.SIGKILL)
        return progress
