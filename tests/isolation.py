"""What a test that runs the kit's entry points in the test's own process gives back: a training or a
notebook sets torch's and OpenCV's threads (``kit.common.device.set_cpu_threads``) and seeds the global
random generators (``kit.train.recipes.seed_all``), which would otherwise carry over into later tests."""

import random
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import torch


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Restore torch's and OpenCV's thread counts and the ``random``, numpy and torch generators after."""
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    generators = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.random.set_rng_state(generators[2])
