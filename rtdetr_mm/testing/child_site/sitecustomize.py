"""Imported at start-up by every Python child that the tests start through
``checkout.checkout_env`` (this folder is first on its ``PYTHONPATH``).

It makes the child prove that it ran the checkout under test: when the child
exits, if it imported ``rtdetr_mm`` from anywhere but
``$RTDETR_MM_CHECKOUT/rtdetr_mm`` (an installed copy, another clone), it
prints both paths and exits with status 97, so the test that started it
fails instead of silently testing other code. Grandchildren (torchrun
workers, dataloader workers) inherit the environment and check themselves.

NOTE: a ``sitecustomize`` that the environment itself provides is shadowed
for these children; this machine's has none.
"""
import atexit
import os
import sys

EXIT_WRONG_CHECKOUT = 97


def _check_checkout() -> None:
    root = os.environ.get('RTDETR_MM_CHECKOUT')
    module = sys.modules.get('rtdetr_mm')
    if not root or module is None or getattr(module, '__file__', None) is None:
        return
    expected = os.path.realpath(os.path.join(root, 'rtdetr_mm'))
    actual = os.path.realpath(os.path.dirname(module.__file__))
    if actual != expected:
        sys.stderr.write(f'rtdetr_mm was imported from {actual}, not from the checkout under '
                         f'test ({expected}): check sys.path / PYTHONPATH\n')
        sys.stderr.flush()
        os._exit(EXIT_WRONG_CHECKOUT)


atexit.register(_check_checkout)
