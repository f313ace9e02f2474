"""Which checkpoint an automatic ``--resume`` resumes: ``last_checkpoint``
read relative to the work dir it sits in.

mmengine's ``find_latest_checkpoint`` returns the absolute path written into
``<work_dir>/last_checkpoint`` when the file was saved. After the work dir is
moved that path no longer exists (resume fails), and after it is copied the
path names the *original* work dir's file (the copy silently resumes, and
then trains on, the original's weights). :func:`resolve_latest_checkpoint`
keeps the recorded path only while it lies in the work dir (or in the
checkpoint hook's ``out_dir`` for this work dir); otherwise it takes the file
of the same name in the work dir.
"""
import glob
import os.path as osp
from typing import Iterable, Optional

LAST_CHECKPOINT = 'last_checkpoint'


class LatestCheckpointError(FileNotFoundError):
    """``last_checkpoint`` names no checkpoint this work dir can resume from."""


def _inside(path: str, folder: str) -> bool:
    return osp.dirname(osp.realpath(path)) == osp.realpath(folder)


def resolve_latest_checkpoint(work_dir: str,
                              checkpoint_dirs: Iterable[str] = ()) -> Optional[str]:
    """The checkpoint an automatic resume of ``work_dir`` must load.

    Args:
        work_dir (str): The run's work dir, holding ``last_checkpoint``.
        checkpoint_dirs (Iterable[str]): Other folders this run writes its
            checkpoints to (a checkpoint hook's ``out_dir`` joined with the
            work dir's name, as mmengine does).

    Returns:
        str or None: None without a ``last_checkpoint`` file (mmengine then
        starts from scratch); the recorded path when it exists and lies in
        ``work_dir`` or ``checkpoint_dirs``, or is a URL; else the file of the
        same name in ``work_dir`` (then ``checkpoint_dirs``): the work dir was
        moved or copied.

    Raises:
        LatestCheckpointError: the recorded file is missing and so is the one
            of that name in the work dir (both paths named), or it exists only
            outside the work dir (a copied work dir without its checkpoint),
            or ``last_checkpoint`` is empty.
    """
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        recorded = f.read().strip()
    if not recorded:
        raise LatestCheckpointError(
            f'{pointer} is empty: it should hold the path of the latest checkpoint. '
            f'Resume from a checkpoint with --resume PATH{_have(work_dir)}.')
    if '://' in recorded:  # a remote backend: mmengine's business
        return recorded
    folders = [work_dir, *checkpoint_dirs]
    if not osp.isabs(recorded):
        recorded = osp.join(work_dir, recorded)
    if osp.isfile(recorded) and any(_inside(recorded, d) for d in folders):
        return recorded
    name = osp.basename(recorded)
    for folder in folders:
        own = osp.join(folder, name)
        if osp.isfile(own):
            return own
    own = osp.join(work_dir, name)
    if osp.isfile(recorded):
        raise LatestCheckpointError(
            f'{pointer} records {recorded}, which lies outside this work dir, and the work '
            f'dir has no {name} of its own ({own} does not exist): was the work dir copied '
            f'from {osp.dirname(recorded)}? An automatic resume never continues another work '
            f"dir's run. To resume from that file on purpose, pass --resume {recorded}"
            f'{_have(work_dir)}.')
    raise LatestCheckpointError(
        f'{pointer} records {recorded}, which does not exist, and neither does {own} (the '
        f'file of that name in this work dir). Resume from a checkpoint with --resume PATH'
        f'{_have(work_dir)}, or delete {pointer} to start from scratch.')


def _have(work_dir: str) -> str:
    """``' (checkpoints in <work_dir>: epoch_1.pth, ...)'`` or ``''``."""
    names = sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))
    return f' (checkpoints in {work_dir}: {", ".join(names)})' if names else ''
