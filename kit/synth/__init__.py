"""Synthetic "fisheye city": ray-cast street scenes seen by a pinhole and a fisheye camera.

Writes a dataset in the 2023 Samsung AI Challenge layout (REFERENCE.md §1, via ``kit.data``) plus
held-out fisheye labels (``train_target_gt``, ``test_gt``), so adaptation methods can be scored on
labelled fisheye images, which the competition never had. Every scene is a random 3-D street
built from planes, boxes, cylinders and spheres; each pixel's ray is intersected with them in
vectorised NumPy, so labels are exact and both cameras see the same kind of world. The domain gap
follows the competition's: geometry (pinhole 2:1 front camera vs ~200° equidistant fisheye, 16:9,
mounted front or rear, dark border labelled 255) and appearance (the target is darker, has more
contrast, vignetting and sensor noise; REFERENCE.md §2 gives the real statistics). The source
frames reproduce the real data's label defect: the ego bonnet is labelled Sky unless turned off.

    python -m kit.synth --out data/demo --preset demo [--seed N] [--workers N]

The modules, each importing only those above it:

    geometry   label ids, shapes that intersect rays, materials and texture kinds, things, scenes, noise
    things     cars, people, riders, trees, street lights, signs and signals; their colours
    city       scene sampling: the street, buildings, street furniture and traffic, placed where the cameras see them
    cameras    ``Cameras``, the geometric knobs of the domain gap, and the rigs on the ego car
    raycast    ray casting and shading: ``render`` gives linear RGB and exact labels
    looks      the per-domain camera looks, the appearance knobs of the domain gap
    dataset    layout, presets, ``render_sample``, ``generate`` with its CSVs and statistics, the CLI
    census     per-class pixel shares against Cityscapes', frames holding each class, object sizes

This package re-exports their public names, so ``from kit.synth import generate`` and the like work.
"""

from __future__ import annotations

from kit.synth.cameras import Cameras, Pose, source_rig, target_rig
from kit.synth.city import Street, sample_scene
from kit.synth.dataset import (
    CSVS,
    LAYOUT,
    OUTPUTS,
    PRESETS,
    SOURCE_SPLITS,
    SPLITS,
    Preset,
    SplitLayout,
    format_report,
    generate,
    main,
    render_sample,
    sample_id,
    write_csvs,
)
from kit.synth.geometry import (
    CABIN,
    CAR,
    CONSTRUCTION,
    EPS,
    FACADE,
    FAR,
    FENCE,
    FENCE_BARS,
    FOLIAGE,
    GROUND,
    LAMPS,
    LIGHT,
    NATURE,
    NOISE,
    PAINT,
    PAVING,
    PERSON,
    PLAIN,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    SIGN_FACE,
    SKY,
    Box,
    Cylinder,
    Material,
    Scene,
    Shape,
    Sphere,
    Thing,
    noise,
)
from kit.synth.looks import SOURCE_GAIN, SOURCE_LIFT, TARGET_GAIN, TARGET_LIFT, source_look, target_look
from kit.synth.raycast import GLASS_COLOURS, RAY_CHUNK, camera_rays, cast, render
from kit.synth.things import CAR_COLOURS, CLOTHES, FACADE_COLOURS, HOUSINGS, SIGN_COLOURS, SKIN
