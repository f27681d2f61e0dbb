"""The notebook chain, declared once (as a ploomber pipeline declares its tasks): which notebook runs
after which, and the parameters that carry one step's products to the next. Its paths are the
notebooks' own defaults when ``out = "outputs"``, so that a newcomer who runs the notebooks one after
another with their defaults gets the same chain; only the second ``03_train`` (a self-training round
warm-started from the first run, on ``06_pseudo_label``'s labels) has to name what it reads.

    01_eda → 02_labels_and_augment → 03_train ─→ 04_predict   (submission.csv)
                                        └──→ 06_pseudo_label → 03_train (round) → 05_ensemble

The main job (``kit.bench.demo``) runs the first four steps.
"""

from __future__ import annotations

from pathlib import Path

RUN_NAME = "demo"  # 03_train's default RUN_NAME, which 04 and 06 read by default
ROUND_NAME = "demo_round"  # the self-training round 05_ensemble reads by default, next to RUN_NAME


def chain(data: str = "data/demo", out: str | Path = "outputs") -> list[tuple[str, dict]]:
    """``(notebook, parameters)`` in order; every step writes below ``out``."""
    out = Path(out)
    runs, pseudo = str(out / "runs"), str(out / "pseudo" / RUN_NAME)
    return [
        ("01_eda", {"DATA_DIR": data, "OUTPUT_DIR": str(out / "eda")}),
        ("02_labels_and_augment", {"DATA_DIR": data, "OUTPUT_DIR": str(out / "labels_and_augment")}),
        ("03_train", {"DATA_DIR": data, "RUNS_DIR": runs, "RUN_NAME": RUN_NAME}),
        ("04_predict", {"DATA_DIR": data, "RUNS_DIR": runs, "RUN_NAME": RUN_NAME, "OUTPUT_DIR": str(out / "predict")}),
        ("06_pseudo_label", {"DATA_DIR": data, "RUNS_DIR": runs, "RUN_NAMES": [RUN_NAME], "OUTPUT_DIR": pseudo}),
        ("03_train", {"DATA_DIR": data, "RUNS_DIR": runs, "RUN_NAME": ROUND_NAME, "METHOD": "self_train",
                      "INIT_FROM": str(Path(runs) / RUN_NAME), "PSEUDO_SPLIT": pseudo}),
        ("05_ensemble", {"DATA_DIR": data, "RUNS_DIR": runs, "RUN_NAMES": [RUN_NAME, ROUND_NAME],
                         "OUTPUT_DIR": str(out / "ensemble")}),
    ]
