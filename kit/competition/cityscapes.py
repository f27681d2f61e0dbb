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
