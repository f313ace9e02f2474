"""Reference "seed script": fine-tune RT-DETRv2 with transformers' Trainer,
as our users' ``train_model_finetuned.py`` does. Not an rtdetr_mm config.

It is read, never run, by ``tools/misc/seed_to_config.py`` (which carries
its constants over to an rtdetr_mm config) and by the transformers baseline
of the README's "Coming from the transformers script" comparison. Its
constants are the "Seed script" column of the README's "Fine-tuning knobs"
table. Run it yourself with ``python reference_seed_script.py`` (needs
transformers, accelerate and pycocotools).

Deliberately kept as users write it: FOCAL_GAMMA, FOCAL_ALPHA,
LABEL_SMOOTHING_IN_MODEL, CLASS_LOSS_COEF and EOS_COEF are set on the model
config below, where transformers' RT-DETRv2 loss never reads them, and the
optimizer puts every parameter whose name contains "backbone" into the
backbone group. IMAGE_SIZE 255 is not a multiple of 32.

NOTE: mmengine's ``Config.fromfile`` loads every ``configs/*/*.py`` in the
tests; an import of a non-standard module (anywhere in the file) or a
``with`` statement would make it parse this file as a lazy-import config
and fail. The libraries are therefore imported with ``importlib`` where they
are used, and files are read without ``with``.
"""
import importlib
import json
import os
import pathlib

# ----------------------------------------------------------- the 18 knobs
TRAIN_BATCH = 2
VAL_BATCH = 2
GRAD_ACCUM = 2
EPOCHS = 60
LEARNING_RATE = 1e-5                 # head
BACKBONE_LR = LEARNING_RATE / 10     # 1e-6
WEIGHT_DECAY = 5e-3
WARMUP_RATIO = 0.1
USE_FP16 = False
USE_BF16 = True
IMAGE_SIZE = 255
EVAL_RATE_EPOCHS = 0.5
USE_FOCAL_LOSS = True
FOCAL_GAMMA = 1.0
FOCAL_ALPHA = 0.25
LABEL_SMOOTHING_IN_MODEL = 0.02
EOS_COEF = 1e-5
MATCHER_CLASS_COST = 2.0
MATCHER_BBOX_COST = 4.0
CLASS_LOSS_COEF = 2.0

# ----------------------------------------------------------- data and model
DATA_ROOT = 'data/shapes/'           # made by tools/misc/make_demo_data.py
TRAIN_ANN = 'annotations/instances_train.json'
TRAIN_IMG_DIR = 'images/train/'
VAL_ANN = 'annotations/instances_val.json'
VAL_IMG_DIR = 'images/val/'
CLASSES = ('circle', 'square', 'triangle', 'ring', 'cross')
MODEL_NAME = 'PekingU/rtdetr_v2_r18vd'
OUTPUT_DIR = 'work_dirs/hf_rtdetrv2_finetuned'
SEED = 42


class CocoDetection:
    """COCO json + image folder -> the processor's inputs and labels."""

    def __init__(self, root, ann_file, img_dir, processor, transform=None):
        coco = json.loads(pathlib.Path(root, ann_file).read_text())
        self.images = coco['images']
        self.annotations = {img['id']: [] for img in self.images}
        for ann in coco['annotations']:
            self.annotations[ann['image_id']].append(ann)
        # category ids -> contiguous labels in CLASSES order
        names = {c['id']: c['name'] for c in coco['categories']}
        self.label_of = {cid: CLASSES.index(name) for cid, name in names.items()}
        self.img_dir = os.path.join(root, img_dir)
        self.processor = processor
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        np = importlib.import_module('numpy')
        image_module = importlib.import_module('PIL.Image')
        info = self.images[index]
        image = np.asarray(image_module.open(
            os.path.join(self.img_dir, info['file_name'])).convert('RGB'))
        anns = self.annotations[info['id']]
        boxes = [a['bbox'] for a in anns]
        labels = [self.label_of[a['category_id']] for a in anns]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, category=labels)
            image, boxes, labels = out['image'], out['bboxes'], out['category']
        target = dict(image_id=info['id'], annotations=[
            dict(image_id=info['id'], category_id=label, bbox=list(box),
                 area=float(box[2] * box[3]), iscrowd=0)
            for box, label in zip(boxes, labels)])
        encoding = self.processor(images=image, annotations=target, return_tensors='pt')
        return dict(pixel_values=encoding['pixel_values'][0], labels=encoding['labels'][0])


def collate_fn(batch):
    torch = importlib.import_module('torch')
    return dict(pixel_values=torch.stack([b['pixel_values'] for b in batch]),
                labels=[b['labels'] for b in batch])


def main():
    torch = importlib.import_module('torch')
    transformers = importlib.import_module('transformers')
    transformers.set_seed(SEED)

    processor = transformers.AutoImageProcessor.from_pretrained(
        MODEL_NAME, size=dict(height=IMAGE_SIZE, width=IMAGE_SIZE))
    id2label = dict(enumerate(CLASSES))
    model = transformers.RTDetrV2ForObjectDetection.from_pretrained(
        MODEL_NAME, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
        # Set as users set them; transformers' RT-DETRv2 loss reads none of
        # these five names (see the module docstring): its VFL's alpha / gamma
        # are focal_loss_alpha / focal_loss_gamma, which the script never sets.
        use_focal_loss=USE_FOCAL_LOSS, focal_gamma=FOCAL_GAMMA,
        focal_alpha=FOCAL_ALPHA, label_smoothing=LABEL_SMOOTHING_IN_MODEL,
        eos_coefficient=EOS_COEF, class_loss_coefficient=CLASS_LOSS_COEF,
        matcher_class_cost=MATCHER_CLASS_COST, matcher_bbox_cost=MATCHER_BBOX_COST)

    train_set = CocoDetection(DATA_ROOT, TRAIN_ANN, TRAIN_IMG_DIR, processor)
    val_set = CocoDetection(DATA_ROOT, VAL_ANN, VAL_IMG_DIR, processor)

    backbone = [p for n, p in model.named_parameters() if 'backbone' in n]
    rest = [p for n, p in model.named_parameters() if 'backbone' not in n]
    optimizer = torch.optim.AdamW([dict(params=backbone, lr=BACKBONE_LR),
                                   dict(params=rest, lr=LEARNING_RATE)],
                                  weight_decay=WEIGHT_DECAY)

    steps_per_epoch = max(1, len(train_set) // (TRAIN_BATCH * GRAD_ACCUM))
    eval_steps = max(1, int(steps_per_epoch * EVAL_RATE_EPOCHS))
    args = transformers.TrainingArguments(
        output_dir=OUTPUT_DIR,
        per_device_train_batch_size=TRAIN_BATCH,
        per_device_eval_batch_size=VAL_BATCH,
        gradient_accumulation_steps=GRAD_ACCUM,
        num_train_epochs=EPOCHS,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
        fp16=USE_FP16,
        bf16=USE_BF16,
        eval_strategy='steps',
        eval_steps=eval_steps,
        save_strategy='steps',
        save_steps=eval_steps,
        save_total_limit=2,
        remove_unused_columns=False,
        dataloader_num_workers=2,
        seed=SEED,
        report_to='none')
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_set,
                                   eval_dataset=val_set, data_collator=collate_fn,
                                   processing_class=processor,
                                   optimizers=(optimizer, None))
    trainer.train()
    trainer.save_model(OUTPUT_DIR)


if __name__ == '__main__':
    main()
