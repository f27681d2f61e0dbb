"""Pictures of label maps: legends (which classes, in which colours), error maps (what counts as
wrong, the border apart) and the grids' panels, titles and legends read back from their figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.legend  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from PIL import Image  # noqa: E402

from kit.report import grids, palette, viz  # noqa: E402

ROAD, SIDEWALK, CONSTRUCTION = (128, 64, 128), (244, 35, 232), (70, 70, 70)
SKY, PERSON, CAR = (70, 130, 180), (220, 20, 60), (0, 0, 142)
WRONG, RIGHT, VOID, OUTSIDE = (255, 0, 0), (48, 48, 48), (128, 128, 128), (160, 190, 230)
ERROR_KEY = ["wrong", "right", "void (not scored)", "outside the disc"]


def _image(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _label(values, h: int = 24, w: int = 32) -> np.ndarray:
    """A label map of vertical bands, one per value."""
    bands = np.array_split(np.arange(w), len(values))
    label = np.empty((h, w), np.uint8)
    for value, columns in zip(values, bands):
        label[:, columns] = value
    return label


# --- Legend entries ------------------------------------------------------------------------------


def test_legend_entries_list_the_present_classes_in_class_order_with_their_colours():
    label = np.array([[11, 8, 8], [0, 11, 0]], np.uint8)
    assert palette.legend_entries([label]) == [("Road", ROAD), ("Sky", SKY), ("Car", CAR)]


def test_legend_entries_add_background_and_void_only_when_present():
    assert palette.legend_entries([np.array([[1, 255]], np.uint8)]) == [
        ("Sidewalk", SIDEWALK), ("background", (0, 0, 0))]
    assert palette.legend_entries([np.array([[254, 9]], np.uint8)]) == [("Person", PERSON), ("void (ignored)", VOID)]
    # several maps: their union, background before void; a stray value is drawn black, so it is background
    maps = [np.array([[254, 2]], np.uint8), np.array([[200, 0]], np.uint8)]
    assert palette.legend_entries(maps) == [
        ("Road", ROAD), ("Construction", CONSTRUCTION), ("background", (0, 0, 0)), ("void (ignored)", VOID)]
    assert palette.legend_entries([]) == []


# --- Error maps ----------------------------------------------------------------------------------

# 3 × 4, scored as the competition does: background (255) is a class, void (254) is not scored
TRUTH = np.array([[0, 1, 255, 254],
                  [2, 2, 255, 0],
                  [8, 8, 8, 255]], np.uint8)
PRED = np.array([[0, 2, 3, 5],  # right | wrong | a class on background: wrong | void: not scored
                 [2, 2, 255, 255],  # right | right | background on background: right | background on a class: wrong
                 [8, 9, 8, 11]], np.uint8)  # outside (right) | outside (wrong) | right | outside (wrong)
INSIDE = np.array([[1, 1, 1, 1],
                   [1, 1, 1, 1],
                   [0, 0, 1, 0]], bool)


def test_error_map_colours_each_pixel():
    expected = np.array([[RIGHT, WRONG, WRONG, VOID],
                         [RIGHT, RIGHT, RIGHT, WRONG],
                         [OUTSIDE, OUTSIDE, RIGHT, OUTSIDE]], np.uint8)
    got = palette.error_map(PRED, TRUTH, INSIDE)
    assert got.dtype == np.uint8 and got.shape == (3, 4, 3)
    np.testing.assert_array_equal(got, expected)
    assert len({WRONG, RIGHT, VOID, OUTSIDE}) == 4  # four colours that tell the cases apart


def test_error_map_without_a_border_scores_every_pixel():
    got = palette.error_map(PRED, TRUTH)
    np.testing.assert_array_equal(got[2], np.array([RIGHT, WRONG, RIGHT, WRONG], np.uint8))
    assert not (got == OUTSIDE).all(axis=-1).any()


def test_error_share_counts_wrong_scored_pixels_inside_the_disc():
    # inside and not void: 12 − 3 outside − 1 void = 8 pixels, of which 3 are wrong
    assert palette.error_share(PRED, TRUTH, INSIDE) == pytest.approx(3 / 8)
    assert palette.error_share(PRED, TRUTH) == pytest.approx(5 / 11)  # no border: 11 scored, 5 wrong
    assert np.isnan(palette.error_share(PRED, np.full_like(TRUTH, 254)))


def test_error_map_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same"):
        palette.error_map(PRED, TRUTH[:, :3])
    with pytest.raises(ValueError, match="inside"):
        palette.error_map(PRED, TRUTH, INSIDE[:2])


def test_error_entries_name_the_colours_an_error_map_shows():
    assert [name for name, _ in palette.error_entries([palette.error_map(PRED, TRUTH, INSIDE)])] == ERROR_KEY
    assert palette.error_entries([palette.error_map(TRUTH, TRUTH)]) == [("right", RIGHT), ("void (not scored)", VOID)]


# --- Figures: panels, titles, legends ------------------------------------------------------------


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as picture:
        return picture.size


def _legend_fits_under_the_panels(figure) -> None:
    """Every legend lies inside the figure and below every picture panel: it covers no image."""
    renderer = FigureCanvasAgg(figure).get_renderer()  # the saved figure is closed: a canvas to measure on
    width = figure.get_figwidth() * figure.dpi
    lowest_panel = min(axis.get_window_extent(renderer).y0 for axis in figure.axes if axis.images)
    legends = figure.findobj(matplotlib.legend.Legend)
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width, (box, width)
        assert box.y1 <= lowest_panel + 1, (box, lowest_panel)


def test_prediction_grid_has_four_panels_with_truth_and_two_without(tmp_path):
    with_truth = {"image": _image(3, 4), "prediction": PRED, "truth": TRUTH, "inside": INSIDE}
    image_only = {"image": _image(3, 4, seed=1), "prediction": _label([0, 11], 3, 4)}
    figure = grids.save_prediction_grid(tmp_path / "grid.png", [with_truth, image_only], titles=["a", "b"])
    assert viz.panel_titles(figure) == [["a", "prediction", "truth", "errors: 37.5% wrong in the disc"],
                                        ["b", "prediction"]]
    # the classes of the predictions and truths, then the error key
    assert viz.legend_names(figure) == [
        "Road", "Sidewalk", "Construction", "Fence", "Traffic Light", "Sky", "Person", "Car", "background",
        "void (ignored)", *ERROR_KEY]
    assert _png_size(tmp_path / "grid.png")[0] == 1000  # 10 inches at 100 dpi
    _legend_fits_under_the_panels(figure)


def test_prediction_grid_of_image_only_rows_has_two_columns(tmp_path):
    rows = [{"image": _image(), "prediction": _label([8, 255])}, {"image": _image(seed=2), "prediction": _label([1])}]
    figure = grids.save_prediction_grid(tmp_path / "grid.png", rows)
    assert viz.panel_titles(figure) == [["image", "prediction"], ["image", "prediction"]]
    assert viz.legend_names(figure) == ["Sidewalk", "Sky", "background"]  # no error key without truth
    assert len([axis for axis in figure.axes if axis.images]) == 4
    # without truth there is no border to set apart: "errors" says it counts the whole image
    row = {"image": _image(3, 4), "prediction": PRED, "truth": TRUTH}
    figure = grids.save_prediction_grid(tmp_path / "grid.png", [row])
    assert viz.panel_titles(figure)[0][-1] == "errors: 45.5% wrong of the image"
    with pytest.raises(ValueError, match="titles"):
        grids.save_prediction_grid(tmp_path / "grid.png", rows, titles=["only one"])


def test_members_grid_has_a_column_per_member_and_truth_when_given(tmp_path):
    images = [_image(), _image(seed=1)]
    members = {"run_a": [_label([0]), _label([0, 8])], "run_b": [_label([11]), _label([8])],
               "ensemble": [_label([0, 11]), _label([8])]}
    figure = grids.save_members_grid(tmp_path / "members.png", images, members, titles=["x", "y"],
                                     truths=[_label([0, 254]), None])
    assert viz.panel_titles(figure) == [["x", "run_a", "run_b", "ensemble", "truth"],
                                        ["y", "run_a", "run_b", "ensemble"]]
    assert viz.legend_names(figure) == ["Road", "Sky", "Car", "void (ignored)"]
    _png_size(tmp_path / "members.png")
    _legend_fits_under_the_panels(figure)
    figure = grids.save_members_grid(tmp_path / "members.png", images, members)
    assert viz.panel_titles(figure) == [["image", "run_a", "run_b", "ensemble"]] * 2
    with pytest.raises(ValueError, match="run_b"):
        grids.save_members_grid(tmp_path / "members.png", images, {**members, "run_b": members["run_b"][:1]})


def test_save_grid_draws_overlays_with_the_legend_of_their_classes(tmp_path):
    figure = viz.save_grid(tmp_path / "grid.png", [(_image(), _label([0, 255])), (_image(seed=1), _label([9, 254]))],
                           titles=["one", "two"])
    assert viz.panel_titles(figure) == [["one", ""], ["two", ""]]
    # overlays leave background pixels as the image, and the legend says so
    assert viz.legend_names(figure) == ["Road", "Person", "background (not coloured)", "void (ignored)"]
    _legend_fits_under_the_panels(figure)
    figure = viz.save_grid(tmp_path / "grid.png", [(_image(), _label([0]))], legend=False)
    assert viz.legend_names(figure) == []


def test_save_comparison_legend_wraps_to_fit_a_narrow_figure(tmp_path):
    every = _label([*range(12), 255, 254], w=56)
    rows = [(_image(w=56), {"prediction": every, "truth": _label([3], w=56)})]
    figure = viz.save_comparison(tmp_path / "cmp.png", rows, titles=["row"], width_inches=4.0)
    assert viz.panel_titles(figure) == [["row", "prediction", "truth"]]
    assert viz.legend_names(figure) == [*palette.CLASSES, "background", "void (ignored)"]
    (legend,) = figure.findobj(matplotlib.legend.Legend)
    assert legend._ncols < 14  # wrapped
    _legend_fits_under_the_panels(figure)
    wide = viz.save_comparison(tmp_path / "cmp.png", rows, width_inches=16.0)
    assert wide.findobj(matplotlib.legend.Legend)[0]._ncols == 14  # one row when it fits


def test_step_view_lists_the_classes_of_the_shown_samples():
    images = np.stack([_image(), _image(seed=1), _image(seed=2)])
    labels = np.stack([_label([0]), _label([8]), _label([11])])
    panels = {"source": (images, labels), "target": (images, None)}
    figure = viz.step_view_figure(panels, count=2)
    assert viz.panel_titles(figure) == [["source", "target"], ["", ""]]  # column names on the first row
    assert viz.legend_names(figure) == ["Road", "Sky"]  # Car is in the third sample, not shown
    assert viz.step_view_png(panels, count=2)[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataset_preview_has_a_legend(tiny, tmp_path):
    figure = viz.save_dataset_preview(tiny, tmp_path / "preview.png", indices=(0,))
    assert len(viz.panel_titles(figure)) == 2  # one source, one target row
    names = viz.legend_names(figure)
    assert names and set(names) <= {*palette.CLASSES, "background (not coloured)", "void (ignored)"}
    assert "Road" in names
