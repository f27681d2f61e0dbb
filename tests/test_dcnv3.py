import pytest
import torch
import torch.nn.functional as F

from kit.models.dcnv3 import DCNv3, dcnv3_core


def unfold_reference(
    x: torch.Tensor, mask: torch.Tensor, kernel_size: int, stride: int, pad: int, dilation: int, group: int
) -> torch.Tensor:
    """Undeformed DCNv3 as an ordinary zero-padded k×k window sum: (B, H, W, G·Cg) -> (B, Ho, Wo, G·Cg).

    ``mask`` (B, Ho, Wo, G·K) weights the window points in the official x-major order, while
    ``F.unfold`` lists them y-major; the transpose below maps one onto the other.
    """
    b, h, w, c = x.shape
    cols = F.unfold(x.permute(0, 3, 1, 2), kernel_size, dilation=dilation, padding=pad, stride=stride)
    ho = (h + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1
    cols = cols.view(b, group, c // group, kernel_size, kernel_size, ho, wo)  # (B, G, Cg, ky, kx, Ho, Wo)
    weight = mask.view(b, ho, wo, group, kernel_size, kernel_size)  # (B, Ho, Wo, G, kx, ky)
    weight = weight.permute(0, 3, 5, 4, 1, 2)[:, :, None]  # (B, G, 1, ky, kx, Ho, Wo)
    out = (cols * weight).sum((3, 4))  # (B, G, Cg, Ho, Wo)
    return out.reshape(b, c, ho, wo).permute(0, 2, 3, 1)


def out_size(n: int, kernel_size: int, stride: int, pad: int, dilation: int) -> int:
    return (n + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1


GEOMETRIES = [  # kernel_size, stride, pad, dilation
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (3, 1, 2, 2),
    (3, 2, 2, 2),
    (5, 1, 2, 1),
]


@pytest.mark.parametrize("uniform", [True, False], ids=["uniform-mask", "random-mask"])
@pytest.mark.parametrize(("kernel_size", "stride", "pad", "dilation"), GEOMETRIES)
def test_zero_offset_is_a_weighted_window_sum(
    kernel_size: int, stride: int, pad: int, dilation: int, uniform: bool
) -> None:
    torch.manual_seed(0)
    b, h, w, group, cg = 2, 7, 9, 2, 3
    k = kernel_size * kernel_size
    ho, wo = out_size(h, kernel_size, stride, pad, dilation), out_size(w, kernel_size, stride, pad, dilation)
    x = torch.randn(b, h, w, group * cg, dtype=torch.float64)
    offset = torch.zeros(b, ho, wo, group * k * 2, dtype=torch.float64)
    if uniform:
        mask = torch.full((b, ho, wo, group * k), 1.0 / k, dtype=torch.float64)
    else:
        mask = torch.rand(b, ho, wo, group * k, dtype=torch.float64)
    out = dcnv3_core(x, offset, mask, kernel_size, stride, pad, dilation, group, cg, offset_scale=1.0)
    assert out.shape == (b, ho, wo, group * cg)
    torch.testing.assert_close(out, unfold_reference(x, mask, kernel_size, stride, pad, dilation, group))


def test_border_windows_average_zero_padding() -> None:
    x = torch.randn(1, 5, 6, 4, dtype=torch.float64)
    mask = torch.full((1, 5, 6, 9), 1.0 / 9, dtype=torch.float64)
    out = dcnv3_core(x, torch.zeros(1, 5, 6, 18, dtype=torch.float64), mask, 3, 1, 1, 1, 1, 4, offset_scale=1.0)
    # The corner's 3×3 window holds 4 pixels and 5 zeros of padding.
    torch.testing.assert_close(out[:, 0, 0], x[:, :2, :2].sum((1, 2)) / 9)


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (0, 1), (-1, 1)])
def test_integer_offset_shifts_the_samples(dx: int, dy: int) -> None:
    torch.manual_seed(2)
    b, h, w, group, cg, k = 1, 10, 12, 2, 2, 9
    x = torch.randn(b, h, w, group * cg, dtype=torch.float64)
    mask = torch.rand(b, h, w, group * k, dtype=torch.float64)
    offset = torch.tensor([dx, dy], dtype=torch.float64).repeat(b, h, w, group * k)  # Δp = (dx, dy) everywhere
    out = dcnv3_core(x, offset, mask, 3, 1, 1, 1, group, cg, offset_scale=1.0)
    shifted = torch.roll(x, shifts=(-dy, -dx), dims=(1, 2))  # shifted[y, x] = x[y + dy, x + dx]
    expected = unfold_reference(shifted, mask, 3, 1, 1, 1, group)
    interior = (slice(None), slice(2, h - 2), slice(2, w - 2))  # away from the borders and the roll's wrap
    torch.testing.assert_close(out[interior], expected[interior])


def test_gradcheck_input_offset_mask() -> None:
    torch.manual_seed(3)
    b, h, w, group, cg, k = 1, 4, 5, 2, 2, 9
    x = torch.randn(b, h, w, group * cg, dtype=torch.float64, requires_grad=True)
    # Fractional offsets away from integers: bilinear sampling is not differentiable on pixel centres.
    offset = (torch.rand(b, h, w, group * k * 2, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    mask = torch.rand(b, h, w, group * k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, offset, mask: dcnv3_core(x, offset, mask, 3, 1, 1, 1, group, cg, offset_scale=1.0),
        (x, offset, mask),
    )


def test_module_output_shape_and_initial_average() -> None:
    torch.manual_seed(4)
    layer = DCNv3(channels=16, group=4).eval()
    x = torch.randn(2, 7, 9, 16)  # (B, H, W, C)
    with torch.no_grad():
        out = layer(x)
        # At init the offsets are zero and the masks uniform: a 3×3 average between the projections.
        value = layer.input_proj(x)
        expected = layer.output_proj(unfold_reference(value, torch.full((2, 7, 9, 36), 1 / 9), 3, 1, 1, 1, 4))
    assert out.shape == (2, 7, 9, 16)
    torch.testing.assert_close(out, expected)


def test_group_mismatch_names_the_values() -> None:
    with pytest.raises(ValueError, match="channels = 10 is not divisible by group = 4"):
        DCNv3(channels=10, group=4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_sampling_grid_is_float32_whatever_the_input_dtype(dtype):
    """At 1920 columns a half-precision grid samples pixels away from where it should (bfloat16:
    steps of 3.75 px): on a pattern that changes every pixel, the result in the low precision must
    be the float32 result on the same (rounded) inputs, up to the rounding of the output alone."""
    w, kernel = 1920, 3
    columns = torch.arange(w, dtype=torch.float32)
    x = torch.sin(0.7 * columns).view(1, 1, w, 1).expand(1, 3, w, 2).contiguous().to(dtype)  # (B, H, W, C)
    offset = torch.full((1, 3, w, kernel * kernel * 2), 0.25).to(dtype)
    mask = torch.full((1, 3, w, kernel * kernel), 1.0 / (kernel * kernel)).to(dtype)
    args = dict(kernel_size=kernel, stride=1, pad=1, dilation=1, group=1, group_channels=2, offset_scale=1.0)
    low = dcnv3_core(x, offset, mask, **args)
    reference = dcnv3_core(x.float(), offset.float(), mask.float(), **args)
    assert low.dtype == dtype
    error = (low.float() - reference).abs().max().item()
    assert error <= 2 * torch.finfo(dtype).eps, error  # |values| ≤ 1: the output's own rounding
