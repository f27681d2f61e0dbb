"""Cityscapes' 19 training classes and how they map onto the competition's 12 + background.

Models trained on Cityscapes (SegFormer, Mask2Former checkpoints on the Hugging Face hub) predict
these 19 classes, in this order (cityscapesScripts' ``trainId`` 0..18). Every competition class has
a Cityscapes counterpart, some merged:

    road → Road            sidewalk → Sidewalk           building, wall → Construction
    fence → Fence          pole → Pole                   traffic light → Traffic Light
    traffic sign → Traffic Sign                          vegetation, terrain → Nature
    sky → Sky              person → Person               rider → Rider
    car, truck, bus, train → Car

Motorcycle and bicycle have no clear home: Cityscapes labels the person on a two-wheeler as rider
and the machine apart; the competition's Car is four-wheeled. ``two_wheelers`` chooses: ``background``
(the kit's default: the competition names no such class), ``rider`` or ``car``. Cityscapes has no
background class; the competition's background gets only what ``two_wheelers`` sends there.
"""

from __future__ import annotations

from kit.competition.labels import BACKGROUND_CLASS, CLASSES

CITYSCAPES_ARCH = "cityscapes"  # a run's arch when it is a zero-shot Cityscapes model (kit.predict.zero_shot)
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# competition class ← Cityscapes classes; the first member is the group's largest in Cityscapes (its
# pixel share, REFERENCE §6), whose classifier row starts the merged class (kit.models.cityscapes)
COMPETITION_FROM_CITYSCAPES: dict[str, tuple[str, ...]] = {
    "Road": ("road",),
    "Sidewalk": ("sidewalk",),
    "Construction": ("building", "wall"),
    "Fence": ("fence",),
    "Pole": ("pole",),
    "Traffic Light": ("traffic light",),
    "Traffic Sign": ("traffic sign",),
    "Nature": ("vegetation", "terrain"),
    "Sky": ("sky",),
    "Person": ("person",),
    "Rider": ("rider",),
    "Car": ("car", "truck", "bus", "train"),
}
TWO_WHEELERS = ("background", "rider", "car")  # where motorcycle and bicycle go
_TWO_WHEELER_CLASSES = ("motorcycle", "bicycle")


def cityscapes_class_map(two_wheelers: str = "background") -> tuple[int, ...]:
    """For each of the 19 Cityscapes classes, the competition output it counts towards: 0..11, or
    :data:`BACKGROUND_CLASS` (12)."""
    if two_wheelers not in TWO_WHEELERS:
        raise ValueError(f"two_wheelers = {two_wheelers!r}: expected one of {', '.join(TWO_WHEELERS)}")
    target = {name: CLASSES.index(group) for group, names in COMPETITION_FROM_CITYSCAPES.items() for name in names}
    home = {"background": BACKGROUND_CLASS, "rider": CLASSES.index("Rider"), "car": CLASSES.index("Car")}[two_wheelers]
    target.update(dict.fromkeys(_TWO_WHEELER_CLASSES, home))
    return tuple(target[name] for name in CITYSCAPES_CLASSES)


def first_members(class_map: tuple[int, ...]) -> dict[int, int]:
    """Competition class (0..11) → the Cityscapes class whose classifier row starts it when a
    Cityscapes head is fine-tuned: the first Cityscapes class that maps there (in
    :data:`CITYSCAPES_CLASSES` order, the group's largest). Background is left out: its row starts
    new, since what the competition calls background (the ego vehicle, the area outside the fisheye
    disc) is no Cityscapes class."""
    first: dict[int, int] = {}
    for cityscapes, output in enumerate(class_map):
        if output != BACKGROUND_CLASS:
            first.setdefault(output, cityscapes)
    return first


# Share of all pixels of Cityscapes' finely annotated images per training class, in percent, as tabulated
# from the gtFine labels in github.com/m-birke/automotive-segmentation-datasets (cityscapes.md, "pixel-wise
# occ"); the rest of the pixels (≈ 11.6%) are void classes (ego vehicle, out of roi, static, ground, ...).
# REFERENCE §6 quotes the same figures as shares of the labelled pixels (road 37%, building 23%, ...).
CITYSCAPES_PIXEL_PERCENT: dict[str, float] = {
    "road": 32.7, "sidewalk": 5.3, "building": 20.1, "wall": 0.59, "fence": 0.77, "pole": 1.1243,
    "traffic light": 0.1823, "traffic sign": 0.5015, "vegetation": 14.3, "terrain": 0.98, "sky": 3.5,
    "person": 1.1, "rider": 0.1295, "car": 6.0, "truck": 0.2406, "bus": 0.2271, "train": 0.1907,
    "motorcycle": 0.0848, "bicycle": 0.4030,
}


def cityscapes_class_shares(two_wheelers: str = "rider") -> dict[str, float]:
    """Each competition class's share (0..1) of the pixels that Cityscapes labels with one of the 12,
    its classes merged as :data:`COMPETITION_FROM_CITYSCAPES`. ``two_wheelers`` as in
    :func:`cityscapes_class_map`; ``rider`` (the default here) matches the synthetic city, whose Rider
    labels the person and the machine alike."""
    class_map = cityscapes_class_map(two_wheelers)
    totals = dict.fromkeys(CLASSES, 0.0)
    for name, output in zip(CITYSCAPES_CLASSES, class_map):
        if output != BACKGROUND_CLASS:
            totals[CLASSES[output]] += CITYSCAPES_PIXEL_PERCENT[name]
    labelled = sum(totals.values())
    return {name: value / labelled for name, value in totals.items()}
