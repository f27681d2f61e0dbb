"""kit.common.device: CPU thread defaults that survive a second busy process."""

import os

import cv2
import pytest
import torch

import kit.common.device


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_default_cpu_threads_is_half_the_usable_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert kit.common.device.default_cpu_threads() == expected


def test_set_cpu_threads_sets_torch_and_opencv(monkeypatch):
    before = torch.get_num_threads(), cv2.getNumThreads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    try:
        assert kit.common.device.set_cpu_threads() == 2 and torch.get_num_threads() == 2 and cv2.getNumThreads() == 2
        assert kit.common.device.set_cpu_threads(1) == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
