"""The operating-point report: a text table, a CSV, the precision-recall and
F1-versus-threshold curves and the confusion matrix (PNG and CSV).

Used by ``OperatingPointMetric`` (``out_dir``) and
``tools/analysis_tools/operating_point.py``. Figures are drawn on
matplotlib ``Figure`` objects with the Agg canvas: pyplot's global backend
and state are left alone.
"""
import csv
import math
import os
import os.path as osp
from typing import Dict, List

import numpy as np

from .functional.operating_point import OperatingPoint, OperatingPoints

#: the files :func:`write_report` writes in its folder
FILES = dict(csv='operating_points.csv', pr_curve='pr_curve.png', f1_curve='f1_curve.png',
             confusion_png='confusion_matrix.png', confusion_csv='confusion_matrix.csv')

_COLUMNS = ('class', 'gt', 'tp', 'fp', 'fn', 'precision', 'recall', 'f1', 'best_thr',
            'best_f1', 'best_precision', 'best_recall')


def _rows(ops: OperatingPoints) -> List[list]:
    """One row per class then ``all`` (pooled), in :data:`_COLUMNS` order."""
    def row(name: str, op: OperatingPoint) -> list:
        return [name, op.tp + op.fn, op.tp, op.fp, op.fn, op.precision, op.recall, op.f1,
                op.best_thr, op.best_f1, op.best_precision, op.best_recall]
    return [row(c, op) for c, op in zip(ops.classes, ops.per_class)] + [row('all', ops.overall)]


def format_table(ops: OperatingPoints) -> str:
    """The per-class table as text (``all``: every class pooled, one threshold)."""
    def cell(value) -> str:
        if isinstance(value, float):
            return '-' if math.isnan(value) else f'{value:.3f}'
        return str(value)

    header = (f'Operating points at score >= {ops.score_thr:g}, IoU >= {ops.iou_thr:g} '
              '(best: the threshold that maximises F1)')
    names = ('class', 'GT', 'TP', 'FP', 'FN', 'precision', 'recall', 'F1', 'best thr',
             'best F1', 'P@best', 'R@best')
    cells = [list(names)] + [[cell(v) for v in row] for row in _rows(ops)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(names))]
    lines = ['  '.join(v.ljust(w) if i == 0 else v.rjust(w)
                       for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, '-' * len(lines[0]))
    lines.insert(len(lines) - 1, '-' * len(lines[0]))
    return '\n'.join([header] + lines)


def write_report(ops: OperatingPoints, out_dir: str) -> Dict[str, str]:
    """Write :data:`FILES` into ``out_dir`` (created); returns their paths by key."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {key: osp.join(out_dir, name) for key, name in FILES.items()}
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(_COLUMNS)
        writer.writerows(_rows(ops))
    names = list(ops.classes) + ['background']
    with open(paths['confusion_csv'], 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['gt \\ predicted'] + names)
        for name, counts in zip(names, ops.confusion_matrix):
            writer.writerow([name] + [int(v) for v in counts])
    _plot_curves(ops, paths['pr_curve'], paths['f1_curve'])
    _plot_confusion(ops, names, paths['confusion_png'])
    return paths


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _plot_curves(ops: OperatingPoints, pr_path: str, f1_path: str) -> None:
    """Precision vs recall and F1 vs score threshold: one line per class
    (up to 20, then only ``all``) and ``all`` in black, the chosen
    ``score_thr`` and the best-F1 point marked."""
    curves = list(zip(ops.classes, ops.curves)) if len(ops.classes) <= 20 else []
    curves.append(('all', ops.overall_curve))
    pr, f1 = _figure(6, 5), _figure(6, 5)
    ax_pr, ax_f1 = pr.add_subplot(), f1.add_subplot()
    for name, curve in curves:
        style = dict(color='black', linewidth=2) if name == 'all' else dict(linewidth=1)
        ax_pr.plot(curve.recall, curve.precision, label=name, **style)
        # F1 at a threshold t holds for t in (next lower score, score]: a step
        ax_f1.plot(curve.thresholds[::-1], curve.f1[::-1], label=name, drawstyle='steps-pre',
                   **style)
    best = ops.overall
    if not math.isnan(best.best_thr):
        ax_pr.plot([best.best_recall], [best.best_precision], 'o', color='red',
                   label=f'best F1 {best.best_f1:.3f} at {best.best_thr:.3f}')
        ax_f1.plot([best.best_thr], [best.best_f1], 'o', color='red',
                   label=f'best F1 {best.best_f1:.3f} at {best.best_thr:.3f}')
    ax_f1.axvline(ops.score_thr, color='grey', linestyle='--',
                  label=f'score_thr {ops.score_thr:g}: F1 {ops.overall.f1:.3f}')
    for ax, (x, y) in ((ax_pr, ('recall', 'precision')), (ax_f1, ('score threshold', 'F1'))):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc='lower left')
    ax_pr.set_title(f'Precision-recall at IoU {ops.iou_thr:g}')
    ax_f1.set_title(f'F1 vs score threshold at IoU {ops.iou_thr:g}')
    pr.tight_layout()
    f1.tight_layout()
    pr.savefig(pr_path)
    f1.savefig(f1_path)


def _plot_confusion(ops: OperatingPoints, names: List[str], path: str) -> None:
    """Counts, coloured by the share of their GT row (as mmdet's plot)."""
    matrix = ops.confusion_matrix
    size = max(4.0, 0.6 * len(names) + 2)
    fig = _figure(size, size * 0.85)
    ax = fig.add_subplot()
    with np.errstate(invalid='ignore', divide='ignore'):
        share = matrix / matrix.sum(axis=1, keepdims=True)
    image = ax.imshow(np.nan_to_num(share), cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label='share of the row')
    ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel('predicted')
    ax.set_ylabel('ground truth')
    ax.set_title(f'Confusion matrix\nscore >= {ops.score_thr:g}, IoU >= {ops.iou_thr:g}',
                 fontsize=10)
    if len(names) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha='center', va='center', fontsize=7,
                    color='white' if share[i, j] > 0.5 else 'black')
    fig.tight_layout()
    fig.savefig(path)
