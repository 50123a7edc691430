"""A development sealing key kept in a local file, so ``make run`` needs no configuration.

Production never reaches this module: settings refuse to start without ``SEALING_KEYS``
when ``DEBUG`` is off.
"""

import base64
import os
from pathlib import Path


def dev_sealing_keys(path: Path) -> list[str]:
    """Return the sealing keys stored in ``path``, creating one random key on first use.

    The file holds ``key_id:base64(32 bytes)`` entries, one per line, first one sealing,
    the same format as the ``SEALING_KEYS`` variable. It is created with mode 0600 and
    ``O_EXCL``, so two processes starting at once agree on one key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        entry = "dev1:" + base64.b64encode(os.urandom(32)).decode("ascii") + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(entry)
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]
