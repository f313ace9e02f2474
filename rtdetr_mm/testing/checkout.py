"""Run Python children (tools, training subprocesses) on the checkout under
test, never on an installed copy of rtdetr_mm.

``checkout_env`` puts this checkout first on ``PYTHONPATH`` and
``rtdetr_mm/testing/child_site`` before it, whose ``sitecustomize`` makes
every child exit with status 97 if it imported ``rtdetr_mm`` from anywhere
else. A test whose children import its own module (``custom_imports``)
passes its folder in ``extra_paths``.
"""
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, Iterable, Optional, Sequence

from . import ROOT

CHILD_SITE = osp.join(osp.dirname(osp.abspath(__file__)), 'child_site')
EXIT_WRONG_CHECKOUT = 97


def checkout_env(threads: Optional[int] = 1, extra_paths: Iterable[str] = (),
                 drop: Sequence[str] = (), **extra: str) -> Dict[str, str]:
    """``os.environ`` for a child that must run this checkout.

    Args:
        threads (int, optional): ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
            (children share 2 cores with the test process); None keeps the
            caller's.
        extra_paths: More ``PYTHONPATH`` entries, after the checkout's.
        drop: Variables to remove (prefix match, e.g. ``'TORCH_FORCE'``).
        **extra: Variables to set.
    """
    env = {k: v for k, v in os.environ.items()
           if not any(k.startswith(prefix) for prefix in ('TORCH_FORCE', *drop))}
    paths = [CHILD_SITE, ROOT, *extra_paths]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env['RTDETR_MM_CHECKOUT'] = ROOT
    if threads is not None:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
    env.update(extra)
    return env


def run_python(args: Sequence[str], cwd: str = ROOT, timeout: float = 600,
               env: Optional[Dict[str, str]] = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """``python ARGS`` on this checkout; with ``check`` a non-zero exit fails
    the calling test with the end of the child's output."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, timeout=timeout, text=True,
                          env=checkout_env() if env is None else env, capture_output=True)
    if check:
        assert proc.returncode == 0, (f'exit {proc.returncode}: python {" ".join(args)}\n'
                                      + proc.stdout[-3000:] + proc.stderr[-5000:])
    return proc


def popen_python(args: Sequence[str], cwd: str = ROOT,
                 env: Optional[Dict[str, str]] = None, **kwargs) -> subprocess.Popen:
    """Started ``python ARGS`` on this checkout, output merged into stdout."""
    return subprocess.Popen([sys.executable, *args], cwd=cwd,
                            env=checkout_env() if env is None else env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)
