"""Output files written the way a careful user expects: atomically (a temporary name in the target's
directory, then a rename) and with the permissions the umask gives a newly created file.

``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 for safety while a file is private; an output
renamed into place keeps that mode unless it is reset, so a shared results directory would end up
unreadable to the group. ``publish_mode`` resets it to 0666 / 0777 minus the umask, what ``open`` /
``os.mkdir`` would have given.
"""
from __future__ import annotations

import os
import tempfile

__all__ = ["umask", "publish_mode", "atomic_write"]


def umask():
    """The process umask (os.umask can only be read by setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path):
    """chmod ``path`` (and, for a directory, everything under it) to what a new file or directory
    gets from the umask: 0666 & ~umask for files, 0777 & ~umask for directories."""
    mask = umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    if not os.path.isdir(path):
        os.chmod(path, file_mode)
        return
    os.chmod(path, dir_mode)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), dir_mode)
        for f in files:
            os.chmod(os.path.join(root, f), file_mode)


def atomic_write(path, data):
    """Write bytes to ``path`` through a temporary file in the same directory and a rename, so that
    ``path`` holds either its old content or all of ``data``, never a part."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".lmref-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
