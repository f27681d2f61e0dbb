"""Predictions to look at: a run's student and EMA teacher on a few labelled fisheye images
(``03_train``'s last figure), and the rows of the prediction grids of ``04_predict`` / ``05_ensemble``
(image, prediction, truth and the fisheye border where there are labels).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from kit.common.device import resolve_device
from kit.competition.labels import IGNORE_INDEX
from kit.competition.layout import evenly_spread, has_split, read_image, read_label, read_split
from kit.data.border import Border
from kit.predict.runs import RunConfig, load_checkpoint, model_from_config
from kit.predict.splits import to_label_map
from kit.predict.tta import InferenceSettings, predict_run


@torch.no_grad()
def predict_examples(run_dir: str | Path, count: int = 4, checkpoint: str = "last.pt",
                     device: str = "auto") -> list[dict]:
    """Whole-image predictions of a run's student (and EMA teacher) on ``count`` fisheye images, on
    ``device`` (``"auto"``: the GPU where there is one, as the run trained).

    Images (evenly spread) come from the run's labelled fisheye evaluation split when the dataset
    has one, else from ``train_target``. Each example: ``id``, ``image`` uint8 (H, W, 3) at the run's target size,
    ``student`` and ``teacher`` uint8 (H, W) label maps (255 = background; teacher pixels below the
    pseudo-label threshold are 255 too; ``teacher`` None for runs without one) and ``truth`` (or None).
    """
    device = resolve_device(device)
    state = load_checkpoint(Path(run_dir) / checkpoint, device)
    config = RunConfig.from_dict(state["config"], source=f"{run_dir}/{checkpoint}")
    root = Path(config.data_dir)
    labelled = config.fisheye_eval_split is not None and has_split(root, config.fisheye_eval_split)
    split = config.fisheye_eval_split if labelled else "train_target"
    th, tw = config.target_size
    networks = {}
    for name, weights in (("student", state["model"]), ("teacher", state["teacher"])):
        if weights is not None:
            networks[name] = model_from_config(config).to(device).eval()
            networks[name].load_state_dict(weights)
    examples = []
    for row in evenly_spread(read_split(root, split), count).itertuples():
        image = read_image(row.img_path)
        has_truth = hasattr(row, "gt_path")
        truth = cv2.resize(read_label(row.gt_path), (tw, th), interpolation=cv2.INTER_NEAREST) if has_truth else None
        resized = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
        example = {"id": row.id, "image": resized, "student": None, "teacher": None, "truth": truth}
        for name, model in networks.items():
            probs = predict_run((model, config), image, InferenceSettings(mode="whole"))
            example[name] = to_label_map(probs)
            if name == "teacher":  # as a pseudo-label: only confident pixels
                example[name][(probs.max(dim=0).values <= config.pseudo_threshold).cpu().numpy()] = IGNORE_INDEX
        examples.append(example)
    return examples


def prediction_rows(frame: pd.DataFrame, predictions: Mapping[str, np.ndarray], border: Border | None) -> list[dict]:
    """One ``kit.report.grids.PredictionRow`` per row of ``frame`` (``id``, ``img_path``, and ``gt_path``
    on a labelled split): the image, ``predictions[id]`` (``uint8 (H, W)``), its truth and the inside
    of ``border`` at the image's size, so that the errors panel sets the border apart."""
    rows = []
    for item in frame.itertuples():
        image = read_image(item.img_path)
        row = {"image": image, "prediction": predictions[item.id]}
        if "gt_path" in frame.columns:
            row["truth"] = read_label(item.gt_path)
            if border is not None:
                row["inside"] = border.mask((image.shape[1], image.shape[0]))
        rows.append(row)
    return rows
