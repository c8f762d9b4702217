"""A sweep folder is code: ``resume`` unpickles Ray Tune's state from it.

Tune's experiment state holds pickled objects (the searcher, the scheduler, the callback, each
trial), and ``pickle`` runs whatever a crafted file tells it to. So whoever can write a sweep
folder can run code as the user who resumes it. :func:`check_private` refuses a local folder
that other users can write, as ``ssh`` refuses a key file others can read, unless the user says
they trust it (``pdsweep resume --trust``). A remote runs dir (``s3://``, ``gs://``) cannot be
checked from here: its bucket policy is what protects it (README, "Resuming").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pdsweep.errors import PdsweepError

__all__ = ["check_private", "loose_path"]


def loose_path(folder: Path) -> tuple[Path, str] | None:
    """The first path that lets another user change what ``folder`` holds, and why; None if none.

    Checked: ``folder`` (links resolved) and everything in it, and what a link inside points to
    when that lies outside it (not writable by group or others, owned by this user or root), and
    the folder above it (others may not rename the sweep folder away and put another in its
    place: owned by this user or root, and not writable by others unless sticky, as ``/tmp``).
    Group write is fine where the group is the user's own private group (umask 002 on Debian,
    Ubuntu and Fedora gives every new file that bit).
    """
    folder = folder.resolve()
    try:
        parent = folder.parent.stat()
        if parent.st_uid not in (os.geteuid(), 0):
            return folder.parent, f"it belongs to another user (uid {parent.st_uid}), who can replace the sweep folder in it"
        if _writable_by_others(parent) and not parent.st_mode & stat.S_ISVTX:
            return folder.parent, "others can write it, so they can replace the sweep folder inside it"
        return _first_loose(folder, folder, set())
    except PermissionError as error:
        raise PdsweepError(f"cannot check the sweep folder {folder} ({error}); resume as its owner.") from None


def _first_loose(path: Path, root: Path, seen: set[Path]) -> tuple[Path, str] | None:
    for entry in (path, *_walk(path)):
        try:
            info = entry.lstat()
        except FileNotFoundError:  # a temporary file a running driver removed meanwhile
            continue
        if stat.S_ISLNK(info.st_mode):
            target = entry.resolve()
            if target.is_relative_to(root) or target in seen or not target.exists():
                continue  # checked where it lies (a dangling link runs nothing)
            seen.add(target)
            found = _first_loose(target, root, seen)
            if found is not None:
                return found
            continue
        if info.st_uid not in (os.geteuid(), 0):
            return entry, f"it belongs to another user (uid {info.st_uid})"
        if _writable_by_others(info):
            return entry, "group or others can write it"
    return None


def _writable_by_others(info: os.stat_result) -> bool:
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _private_group(info.st_gid)


def _private_group(gid: int) -> bool:
    """The user's own group: their primary group, named after them, with no other members."""
    import grp
    import pwd

    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.geteuid())
    except KeyError:
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _walk(folder: Path):
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            yield Path(root) / name


def check_private(folder: Path) -> None:
    """Refuse to go on if another user could have changed the sweep folder ``folder``."""
    found = loose_path(folder)
    if found is None:
        return
    path, why = found
    if "another user" in why:
        fix = f"sudo chown -R $USER {path}"
    else:
        fix = f"chmod go-w {path}" if path == folder.resolve().parent else f"chmod -R go-w {folder}"
    raise PdsweepError(
        f"will not resume from {folder}: {path} is not private ({why}), and resume unpickles Ray Tune's "
        f"state from this folder, which can run code; make it yours alone (`{fix}`), or "
        "pass --trust if everyone who can write it is trusted."
    )
