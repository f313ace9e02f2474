"""Time rtdetr_mm's RT-DETRv2 against transformers' with the same weights.

Prints, for inference and for one training step (forward + backward +
AdamW step), the median time of each implementation, the ratio
ours / transformers (< 1 means we are faster) and peak memory (CUDA: peak
allocated; CPU: peak RSS growth of a fresh subprocess per measurement).

    python tools/analysis_tools/benchmark_vs_hf.py --size r18vd --batch 2 --image 640
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def _build(impl, size, device, workdir):
    import torch
    from rtdetr_mm.testing.hf_reference import SIZES, build_hf_model
    torch.manual_seed(0)
    hf = build_hf_model(size, seed=0)
    if impl == 'hf':
        return hf.to(device)
    import rtdetr_mm  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from rtdetr_mm.converters.rtdetrv2 import load_source
    init_default_scope('mmdet')
    hf.save_pretrained(osp.join(workdir, 'hf'))
    state, _, _ = load_source(osp.join(workdir, 'hf'))
    cfg = Config.fromfile(osp.join(ROOT, SIZES[size][2]))
    model = MODELS.build(cfg.model)
    model.load_state_dict(state, strict=False)
    return model.to(device)


def _inputs(impl, batch, image, device):
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, image, image, generator=gen).to(device)
    boxes, labels = [], []
    for _ in range(batch):
        xy = torch.rand(8, 2, generator=gen) * image * 0.6
        wh = torch.rand(8, 2, generator=gen) * image * 0.3 + 16
        boxes.append(torch.cat([xy, xy + wh], 1).to(device))
        labels.append(torch.randint(0, 80, (8,), generator=gen).to(device))
    if impl == 'hf':
        scale = torch.tensor([image] * 4, device=device, dtype=torch.float)
        targets = []
        for b, l in zip(boxes, labels):
            cxcywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1) / scale
            targets.append(dict(class_labels=l, boxes=cxcywh))
        return images, targets
    samples = []
    for b, l in zip(boxes, labels):
        ds = DetDataSample(metainfo=dict(img_shape=(image, image), batch_input_shape=(image, image),
                                         ori_shape=(image, image), scale_factor=(1.0, 1.0)))
        ds.gt_instances = InstanceData(bboxes=HorizontalBoxes(b), labels=l)
        samples.append(ds)
    return images, samples


def measure(impl, mode, size, batch, image, device, repeats):
    import torch
    with tempfile.TemporaryDirectory() as workdir:
        model = _build(impl, size, device, workdir)
    images, targets = _inputs(impl, batch, image, device)

    def step():
        if mode == 'inference':
            with torch.inference_mode():
                if impl == 'hf':
                    model(pixel_values=images)
                else:
                    model.predict(images, targets)
        else:
            if impl == 'hf':
                loss = model(pixel_values=images, labels=targets).loss
            else:
                losses = model.loss(images, targets)
                loss = sum(v for k, v in losses.items() if 'loss' in k)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    if mode == 'train':
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    else:
        model.eval()
    step()  # warm-up
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(median_s=statistics.median(times), peak_mb=peak_mb,
                base_rss_mb=base_rss / 1024)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', default='r18vd', choices=['r18vd', 'r34vd', 'r50vd', 'r101vd'])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--image', type=int, default=640)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    parser.add_argument('--one', nargs=2, metavar=('IMPL', 'MODE'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.size, args.batch, args.image,
                                 args.device, args.repeats)))
        return
    print(f'RT-DETRv2 {args.size}, batch {args.batch}, {args.image}x{args.image}, '
          f'device {args.device}, torch threads {torch.get_num_threads()}')
    print(f"{'mode':<10}{'ours (s)':>10}{'HF (s)':>10}{'ratio':>8}{'ours MB':>10}{'HF MB':>10}")
    for mode in ('inference', 'train'):
        res = {}
        for impl in ('ours', 'hf'):
            # One fresh process per measurement, so peak memory is not shared.
            cmd = [sys.executable, __file__, '--size', args.size, '--batch', str(args.batch),
                   '--image', str(args.image), '--repeats', str(args.repeats),
                   '--device', args.device, '--threads', str(args.threads), '--one', impl, mode]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONWARNINGS='ignore'))
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = res['ours']['median_s'] / res['hf']['median_s']
        print(f"{mode:<10}{res['ours']['median_s']:>10.3f}{res['hf']['median_s']:>10.3f}"
              f"{ratio:>8.2f}{res['ours']['peak_mb']:>10.0f}{res['hf']['peak_mb']:>10.0f}")


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == '__main__':
    main()
