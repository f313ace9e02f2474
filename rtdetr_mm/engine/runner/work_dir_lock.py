"""A work dir belongs to one training at a time: the lock file ``train.lock``.

``RTDETRv2Runner.train`` takes it on the main process (rank 0) before anything
is loaded or written and releases it when ``train`` returns or raises
(``finally``: normal end, exception, Ctrl-C). A run killed without unwinding
(SIGKILL, power loss) leaves the file behind; the next run on the same host
finds its pid gone and takes it over with a warning.

The file is JSON::

    {"pid": 1234, "host": "node3", "started": "2025-01-31 14:02:11 +0100",
     "proc_start": 123456789, "command": "tools/train.py cfg.py ...",
     "token": "<uuid4 hex>"}

``proc_start`` is the process's start time in clock ticks since boot
(``/proc/<pid>/stat`` field 22, Linux; None elsewhere): a pid reused by
another process after a crash does not count as the holder. ``token`` tells
this lock from another one of the same process.

A holder on another host cannot be checked from here: such a lock is always
refused, and the message says to delete the file if that run is gone.
"""
import datetime
import json
import os
import os.path as osp
import socket
import sys
import time
import uuid
from typing import Optional

from mmengine.logging import print_log

LOCK_NAME = 'train.lock'
#: a lock file still empty or half-written after this long is not being written
_WRITE_GRACE_S = 2.0


class WorkDirLockedError(RuntimeError):
    """Another training holds the work dir's lock file."""


def lock_path(work_dir: str) -> str:
    """The lock file of ``work_dir``."""
    return osp.join(osp.abspath(work_dir), LOCK_NAME)


def _process_start(pid: int) -> Optional[int]:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after it
    try:
        return int(stat[stat.rindex(')') + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process recorded in ``holder`` (on this host) still runs."""
    pid = holder.get('pid')
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    recorded, current = holder.get('proc_start'), _process_start(pid)
    if recorded is not None and current is not None and recorded != current:
        return False  # the pid now belongs to another process
    return True


def describe(holder: dict) -> str:
    """``pid 1234 on host node3, started 2025-01-31 14:02:11 +0100 (command: ...)``."""
    text = (f"pid {holder.get('pid')} on host {holder.get('host')}, "
            f"started {holder.get('started')}")
    if holder.get('command'):
        text += f" (command: {holder['command']})"
    return text


class WorkDirLock:
    """The lock file of one work dir, held by this process.

    Args:
        work_dir (str): The run's work dir (created if missing).

    Use :meth:`acquire` / :meth:`release`, or the object as a context manager.
    """

    def __init__(self, work_dir: str):
        self.work_dir = osp.abspath(work_dir)
        self.path = lock_path(self.work_dir)
        self.held = False
        self.record = dict(
            pid=os.getpid(), host=socket.gethostname(),
            started=datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %z'),
            proc_start=_process_start(os.getpid()),
            command=' '.join(sys.argv), token=uuid.uuid4().hex)

    # -- reading -------------------------------------------------------------
    def read_holder(self) -> Optional[dict]:
        """The lock file's record; None when there is no lock file.

        Raises:
            WorkDirLockedError: the file stays unreadable (not JSON with a
                pid and a host) for longer than a writer needs.
        """
        deadline = time.monotonic() + _WRITE_GRACE_S
        while True:
            try:
                with open(self.path) as f:
                    text = f.read()
            except FileNotFoundError:
                return None
            try:
                holder = json.loads(text)
                if isinstance(holder, dict) and 'pid' in holder and 'host' in holder:
                    return holder
            except ValueError:
                pass
            if time.monotonic() > deadline:  # not a writer in progress
                raise WorkDirLockedError(
                    f'{self.path}: the work dir lock file is unreadable (expected JSON with '
                    f'"pid" and "host", got {text[:200]!r}). If no training runs in '
                    f'{self.work_dir}, delete {self.path} and start again.')
            time.sleep(0.1)

    def live_holder(self) -> Optional[dict]:
        """The record of another process that holds the lock and may still
        run (on another host: always), else None."""
        try:
            holder = self.read_holder()
        except WorkDirLockedError:
            return None
        if holder is None or holder.get('token') == self.record['token']:
            return None
        if holder.get('host') == self.record['host'] and not _alive(holder):
            return None
        return holder

    def refuse_if_held(self) -> None:
        """Raise :class:`WorkDirLockedError` when another training that may
        still run holds the lock. A read-only check for a command line to
        stop before it builds anything; :meth:`acquire` (in the runner's
        ``train``) remains the atomic one."""
        holder = self.live_holder()
        if holder is not None:
            self._refuse(holder)

    # -- taking and giving back ----------------------------------------------
    def acquire(self) -> Optional[dict]:
        """Take the lock, atomically (``O_CREAT | O_EXCL``).

        Returns:
            dict or None: The record of a stale lock taken over (its process
            no longer runs on this host; a warning is logged), else None.

        Raises:
            WorkDirLockedError: another run holds the lock (its pid, host,
                start time and the lock file are named), or a stale lock is
                being taken over by another run at the same moment.
        """
        if self.held:
            return None
        os.makedirs(self.work_dir, exist_ok=True)
        if self._create():
            return None
        holder = self.read_holder()
        if holder is None:  # released in between
            if self._create():
                return None
            holder = self.read_holder() or {}
        if holder.get('host') != self.record['host'] or _alive(holder):
            self._refuse(holder)
        self._take_over(holder)
        print_log(f'{self.path}: took over the stale lock of {describe(holder)}: that process '
                  f'no longer runs on this host (killed, or the machine restarted). Check that '
                  f'its files in {self.work_dir} are complete.', logger='current', level=30)
        return holder

    def release(self) -> None:
        """Delete the lock file if it is still this process's own."""
        if not self.held:
            return
        self.held = False
        try:
            holder = self.read_holder()
        except WorkDirLockedError:
            return
        if holder is not None and holder.get('token') == self.record['token']:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> 'WorkDirLock':
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals -------------------------------------------------------------
    def _create(self) -> bool:
        """Create the lock file holding this process's record; False if it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as f:
            json.dump(self.record, f)
            f.flush()
            os.fsync(f.fileno())
        self.held = True
        return True

    def _take_over(self, stale: dict) -> None:
        """Replace the stale lock ``stale`` by ours. Two runs finding the same
        stale lock at once: only the one that creates ``train.lock.takeover``
        (``O_EXCL``) goes on; it removes the stale file only if it still holds
        the stale record."""
        guard = self.path + '.takeover'
        fd = _create_guard(guard)
        if fd is None:
            raise WorkDirLockedError(
                f'{self.work_dir}: another run is taking over the stale lock {self.path} of '
                f'{describe(stale)} right now ({guard} exists). Wait for it, or use another '
                '--work-dir.')
        try:
            os.write(fd, str(os.getpid()).encode())
            current = self.read_holder()
            if current is not None and current != stale:
                self._refuse(current)
            if current is not None:
                os.remove(self.path)
            if not self._create():
                self._refuse(self.read_holder() or {})
        finally:
            os.close(fd)
            os.remove(guard)

    def _refuse(self, holder: dict) -> None:
        same_host = holder.get('host') == self.record['host']
        gone = ('' if same_host else
                f'; if that run is gone (it runs on another host, so this one cannot check), '
                f'delete {self.path}')
        raise WorkDirLockedError(
            f'{self.work_dir} is in use by another training: {describe(holder)}; lock file '
            f'{self.path}. Wait for that run to finish, or train in another --work-dir{gone}.')


def _create_guard(path: str) -> Optional[int]:
    """Create ``path`` exclusively; None if another process holds it. A
    guard older than a minute was left by a run killed while taking over: it
    is replaced."""
    for _ in range(2):
        try:
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - osp.getmtime(path) < 60:
                    return None
                os.remove(path)
            except FileNotFoundError:
                pass
    return None
