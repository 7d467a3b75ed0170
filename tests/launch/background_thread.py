"""A module that starts a Python thread when imported: a local-launcher worker that preloads it
holds two threads, so its calls must be spawned, not forked (tests/launch/test_local_launcher.py)."""
import threading
import time

THREAD = threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="background-for-tests")
THREAD.start()
