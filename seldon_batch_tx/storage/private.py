"""The staging directory: one the run owns and no other local user can read, change or plant in.

A shared temp directory would let another user who created the staging directory first read the
staged lines, add one that is then uploaded, or plant a link a download writes through. So the
directory used is checked: a real directory (not a symbolic link), owned by the effective user,
with no permission for group or others. ``--staging-dir`` (or ``SELDON_BATCH_STAGING_DIR``) that
is missing is created so (mode 0700); one that exists but is not private (an ``emptyDir``
volume, ``/tmp``, a link) gets a per-user subdirectory, ``seldon-batch-staging-UID``, checked the same way. The
default is that subdirectory of the temp directory. Every directory above the one used must be the
user's or root's: another user's could have it renamed away and replaced after the check. A
directory that fails the check is refused in one line naming it and why (exit 2): nothing is read
from it or written to it.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile

from .paths import StorageError

#: Where staging files go unless told: ``SELDON_BATCH_STAGING_DIR`` or the temp directory.
STAGING_ENV = "SELDON_BATCH_STAGING_DIR"


class StagingRefused(StorageError):
    """A staging directory that is not the run's own (a link, another owner, shared access)."""


def _user_dir(root: str) -> str:
    return os.path.join(root, f"seldon-batch-staging-{os.geteuid()}")


def default_staging_dir() -> str:
    """The staging root when none is given (see :func:`private_dir` for the directory used)."""
    return os.environ.get(STAGING_ENV) or tempfile.gettempdir()


def _problem(path: str, st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"belongs to uid {st.st_uid}, not to this run's user (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"is open to other users (mode {stat.S_IMODE(st.st_mode):04o}; it must be 0700)"
    return None


def _checked(path: str) -> str:
    """``path`` when it is private (see the module), else :class:`StagingRefused`."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise StagingRefused(f"the staging directory {path}: {e.strerror}") from None
    problem = _problem(path, st)
    if problem is not None:
        raise StagingRefused(f"the staging directory {path} {problem}; staged outputs must be private "
                             "(give --staging-dir a directory of your own with mode 0700)")
    return path


def _make(path: str) -> bool:
    """Create ``path`` with mode 0700 (its parents as needed); False when it was already there."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        raise StagingRefused(f"the staging directory {path}: cannot create it ({e.strerror})") from None
    os.chmod(path, 0o700)  # mkdir's mode is less the umask; 0700 is what the check wants
    return True


def _ancestors_problem(path: str) -> str | None:
    """Why a directory inside ``path``'s ancestors is not safe: one owned by another user (not root)
    may rename the run's directory away and put its own in its place after the check. A symbolic
    link on the way is followed: the directories it leads to are the ones checked."""
    current = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            owner = os.stat(current).st_uid
        except OSError as e:
            return f"its parent directory {current}: {e.strerror}"
        if owner not in (os.geteuid(), 0):
            return (f"is inside {current}, which belongs to uid {owner}: that user could replace it "
                    "(give --staging-dir a directory inside your own or root's directories)")
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def private_dir(staging_dir: str | None = None) -> str:
    """The directory staging files of this run go to, created and checked (blocking, local).

    ``staging_dir`` (else the default root): used itself when it is the run's own or did not exist;
    a shared one (other users may write or read it) holds a per-user subdirectory instead.
    """
    root = staging_dir or default_staging_dir()
    created = _make(root)
    problem = _ancestors_problem(root)
    if problem is not None:
        raise StagingRefused(f"the staging directory {root} {problem}")
    if created:
        return root
    try:
        st = os.lstat(root)
    except OSError as e:
        raise StagingRefused(f"the staging directory {root}: {e.strerror}") from None
    if _problem(root, st) is None:
        return root
    if not stat.S_ISDIR(os.stat(root).st_mode):
        _checked(root)  # raises: a file is never a staging directory
    user = _user_dir(root)
    problem = _ancestors_problem(user)  # the shared directory itself (not sticky /tmp, an emptyDir) is another's
    if problem is not None:
        raise StagingRefused(f"the staging directory {user} {problem}")
    _make(user)
    return _checked(user)
