"""Plant each known bug of the mutation catalogue, one at a time, and check
that the tests named for it catch it.

    python tools/dev/mutation_check.py [--only NAME ...] [--list] [--keep]
    make mutation-check

The catalogue is ``tests/mutations/catalog.py``: each mutation is a list of
exact-string replacements in the package (or configs / tools) and the test
node ids that must fail with it. The working tree (tracked and untracked,
not ignored files; uncommitted changes included) is copied to a scratch
folder once; there each mutation is applied, its tests run with pytest on
that copy (``PYTHONPATH`` = the copy, no bytecode cache, so a mutation of
the same length in the same second is never hidden by a stale ``.pyc``),
and the file is restored. First, every test named in the catalogue must
pass on the unmutated copy.

Prints a caught / missed table (Markdown) and exits 1 if any mutation was
missed, could not be applied (its old string is not in the file exactly
once) or broke the test run itself (pytest exit code other than 0 or 1),
or if the unmutated copy fails a test.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_catalog(root):
    """The ``MUTATIONS`` list of ``tests/mutations/catalog.py`` in ``root``."""
    namespace = {}
    path = osp.join(root, 'tests', 'mutations', 'catalog.py')
    with open(path) as f:
        exec(compile(f.read(), path, 'exec'), namespace)
    mutations = namespace['MUTATIONS']
    names = [m.name for m in mutations]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SystemExit(f'{path}: duplicated mutation names {duplicated}')
    return mutations


def copy_tree(src, dst):
    """Tracked and untracked-but-not-ignored files of the checkout ``src``."""
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                           cwd=src, check=True, capture_output=True).stdout.decode().split('\0')
    for rel in filter(None, files):
        if not osp.isfile(osp.join(src, rel)):  # deleted but still tracked
            continue
        os.makedirs(osp.dirname(osp.join(dst, rel)), exist_ok=True)
        shutil.copy2(osp.join(src, rel), osp.join(dst, rel))


def run_pytest(scratch, tests, timeout):
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}
    env.update(PYTHONPATH=scratch, PYTHONDONTWRITEBYTECODE='1')
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
                               *tests], cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=timeout)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 'timeout', str(e.stdout or '')
    return code, out, time.time() - start


def apply(scratch, mutation):
    """Apply every edit of ``mutation``; returns the originals to restore,
    or raises ValueError naming the edit whose old string is not unique."""
    originals = {}
    for path, old, new in mutation.edits:
        full = osp.join(scratch, path)
        with open(full) as f:
            text = f.read()
        originals.setdefault(full, text)
        if text.count(old) != 1:
            raise ValueError(f'{path}: the old string occurs {text.count(old)} times, not once: '
                             f'{old!r}')
        with open(full, 'w') as f:
            f.write(text.replace(old, new))
    return originals


def restore(originals):
    for full, text in originals.items():
        with open(full, 'w') as f:
            f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='+', help='run only these mutations (names)')
    parser.add_argument('--list', action='store_true', help='list the mutations and exit')
    parser.add_argument('--timeout', type=float, default=900,
                        help='seconds for the tests of one mutation')
    parser.add_argument('--keep', action='store_true', help='keep the scratch copy')
    parser.add_argument('--skip-baseline', action='store_true',
                        help='do not run the named tests on the unmutated copy first')
    args = parser.parse_args(argv)

    mutations = load_catalog(ROOT)
    if args.only:
        unknown = set(args.only) - {m.name for m in mutations}
        if unknown:
            parser.error(f'unknown mutation(s): {sorted(unknown)}')
        mutations = [m for m in mutations if m.name in args.only]
    if args.list:
        for m in mutations:
            print(f'{m.name}: {m.claim} -> {", ".join(m.tests)}')
        return 0

    scratch = tempfile.mkdtemp(prefix='rtdetr_mm_mutation_')
    print(f'scratch copy: {scratch}', flush=True)
    copy_tree(ROOT, scratch)
    failed = False
    try:
        if not args.skip_baseline:
            tests = sorted({t for m in mutations for t in m.tests})
            code, out, seconds = run_pytest(scratch, tests, args.timeout * 2)
            print(f'baseline (unmutated): {len(tests)} test ids, exit {code}, {seconds:.0f} s',
                  flush=True)
            if code != 0:
                print(out[-5000:])
                print('the unmutated copy fails its tests: no mutation result would mean '
                      'anything')
                return 1
        rows = []
        for m in mutations:
            try:
                originals = apply(scratch, m)
            except ValueError as e:
                rows.append((m, 'NOT APPLIED', 0.0, str(e)))
                print(f'{m.name}: NOT APPLIED ({e})', flush=True)
                failed = True
                continue
            try:
                code, out, seconds = run_pytest(scratch, m.tests, args.timeout)
            finally:
                restore(originals)
            if code == 1:
                result = 'caught'
            elif code == 0:
                result, failed = 'MISSED', True
            else:
                result, failed = f'ERROR (pytest exit {code})', True
            detail = '' if code in (0, 1) else out[-2000:]
            rows.append((m, result, seconds, detail))
            print(f'{m.name}: {result} ({seconds:.0f} s)', flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print('\n| mutation | claim | caught by | result | s |\n|---|---|---|---|---|')
    for m, result, seconds, _ in rows:
        tests = '<br>'.join(t.replace('tests/', '') for t in m.tests)
        print(f'| {m.name} | {m.claim} | {tests} | {result} | {seconds:.0f} |')
    caught = sum(r[1] == 'caught' for r in rows)
    print(f'\n{caught} caught, {len(rows) - caught} not caught, of {len(rows)} mutations')
    for m, result, _, detail in rows:
        if detail:
            print(f'\n--- {m.name}: {result}\n{detail}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
