"""Children started by the tests run the checkout under test.

Every command-line tool puts its own checkout first on ``sys.path``, so
``python tools/X.py`` never picks up an installed (or otherwise shadowing)
``rtdetr_mm``; and the tests' subprocess helper (rtdetr_mm/testing/checkout.py) makes a
child that imported ``rtdetr_mm`` from elsewhere fail with status 97.
"""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest

from rtdetr_mm.testing.checkout import CHILD_SITE, EXIT_WRONG_CHECKOUT, ROOT, checkout_env

TOOLS = sorted(p for p in glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True))


@pytest.fixture(scope='module')
def shadow(tmp_path_factory):
    """A folder holding a foreign ``rtdetr_mm`` that fails loudly on import."""
    path = tmp_path_factory.mktemp('shadow')
    (path / 'rtdetr_mm').mkdir()
    (path / 'rtdetr_mm' / '__init__.py').write_text(
        "raise ImportError('the shadowing rtdetr_mm was imported')\n")
    return str(path)


def test_helper_child_runs_this_checkout():
    env = checkout_env()
    proc = subprocess.run([sys.executable, '-c', 'import rtdetr_mm; print(rtdetr_mm.__file__)'],
                          cwd='/', env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert osp.realpath(proc.stdout.strip()) == osp.realpath(
        osp.join(ROOT, 'rtdetr_mm', '__init__.py'))


def test_helper_child_refuses_another_rtdetr_mm(tmp_path):
    """A child whose ``rtdetr_mm`` comes from another folder exits with 97
    and names both folders, even though its own code exited 0."""
    (tmp_path / 'rtdetr_mm').mkdir()
    (tmp_path / 'rtdetr_mm' / '__init__.py').write_text('')
    env = checkout_env()
    env['PYTHONPATH'] = os.pathsep.join([CHILD_SITE, str(tmp_path), env['PYTHONPATH']])
    proc = subprocess.run([sys.executable, '-c', 'import rtdetr_mm'], cwd='/', env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_WRONG_CHECKOUT, proc.stderr
    assert str(tmp_path) in proc.stderr and osp.join(ROOT, 'rtdetr_mm') in proc.stderr


def test_every_tool_puts_its_checkout_first(shadow):
    """``python tools/X.py --help`` with a shadowing ``rtdetr_mm`` first on
    PYTHONPATH (as an installed copy would be on sys.path): each tool imports
    the checkout's package, and the child check agrees."""
    assert len(TOOLS) >= 9, TOOLS
    env = checkout_env()
    env['PYTHONPATH'] = os.pathsep.join([CHILD_SITE, shadow, env['PYTHONPATH']])
    procs = {tool: subprocess.Popen([sys.executable, tool, '--help'], cwd='/', env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for tool in TOOLS}
    failed = {}
    for tool, proc in procs.items():
        out = proc.communicate(timeout=300)[0]
        if proc.returncode != 0 or 'usage' not in out:
            failed[osp.relpath(tool, ROOT)] = (proc.returncode, out[-1500:])
    assert not failed, failed
