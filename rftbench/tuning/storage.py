"""The study's Optuna storage (an RDB URL), opened the same way by the study, its report and
the retraining of the winners."""
from __future__ import annotations

from pathlib import Path

import optuna


def open_storage(url: str, attempts: int = 8) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage; retries when several workers create its schema at the same moment
    (PostgreSQL then reports a duplicate type or table to all but one of them)."""
    import random
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    if url.startswith("sqlite:///"):  # one creator at a time; the others wait, then find the schema
        from ..paths import file_lock

        db = Path(url[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(db.with_name(db.name + ".lock")):
            return optuna.storages.RDBStorage(url, heartbeat_interval=None)
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")
