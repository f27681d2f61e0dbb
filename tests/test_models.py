import cv2
import pytest
import torch
from matplotlib import cbook

from kit.data.stats import IMAGENET_MEAN, IMAGENET_STD
from kit.models.encoders import create_encoder, encoder_normalisation
from kit.models.heads import HEADS
from kit.models.model import create_model
from kit.models.weights import BUNDLED_WEIGHTS, bundled_state_dict
from kit.train.losses import cross_entropy

ENCODERS = ["pvt_v2_b0", "mobilenetv3_small_100"]  # a transformer (MiT-B0 stand-in) and a CNN


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: a second intra-op thread only adds overhead, and thrashes on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("arch", sorted(HEADS))
def test_logits_at_input_size_for_odd_sizes(arch, encoder):
    torch.manual_seed(0)
    model = create_model(arch, encoder, channels=32)
    train_logits = model.train()(torch.randn(2, 3, 97, 131))
    with torch.no_grad():
        eval_logits = model.eval()(torch.randn(1, 3, 97, 131))
    assert train_logits.shape == (2, 13, 97, 131)
    assert eval_logits.shape == (1, 13, 97, 131)
    assert torch.isfinite(train_logits).all()


@pytest.mark.parametrize("arch", sorted(HEADS))
def test_batch_of_one_trains(arch):
    # the pooled 1×1 branches (UPerNet's PPM scale 1) must not use BatchNorm: it refuses one value per channel
    torch.manual_seed(0)
    model = create_model(arch, "mobilenetv3_small_100", channels=16).train()
    image, label = torch.randn(1, 3, 64, 64), torch.randint(0, 13, (1, 64, 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = cross_entropy(model(image), label)
        optimizer.zero_grad()
        loss.backward()
        if not losses:  # the first backward reaches every parameter, finite
            missed = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not missed, f"no gradient reaches {missed}"
            assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[2] < losses[1] < losses[0], losses


@pytest.mark.parametrize("arch, stride", [("daformer", 4), ("daformer_up2", 2), ("segformer", 4), ("upernet", 4)])
def test_head_output_stride(arch, stride):
    model = create_model(arch, "mobilenetv3_small_100", channels=16).eval()
    with torch.no_grad():
        logits = model.decode_head(model.encoder(torch.randn(1, 3, 64, 96)))
    assert logits.shape == (1, 13, 64 // stride, 96 // stride)


def test_encoder_gives_four_levels_with_strides_4_to_32():
    encoder = create_encoder("mobilenetv3_small_100")  # 5 timm levels: the stride-2 one is dropped
    features = encoder(torch.randn(1, 3, 64, 64))
    assert encoder.reductions == [4, 8, 16, 32]
    assert [f.shape[1] for f in features] == encoder.channels
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]


def test_everything_outside_the_encoder_is_the_decoder():
    model = create_model("daformer", "pvt_v2_b0", channels=32)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    others = [name for name, p in model.named_parameters() if id(p) not in encoder_ids]
    assert others and all(name.startswith("decode_head.") for name in others)


@pytest.mark.slow
@pytest.mark.parametrize("arch, encoder", [("daformer", "pvt_v2_b0"), ("upernet", "mobilenetv3_small_100")])
def test_overfits_one_batch(arch, encoder):
    torch.manual_seed(0)
    label = torch.zeros(2, 64, 64, dtype=torch.long)
    label[:, :, 32:] = 1  # left half class 0, right half class 1
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    label[0][(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 2  # a blob of class 2 in each image
    label[1][(yy - 40) ** 2 + (xx - 45) ** 2 < 100] = 2
    colour = torch.stack([label - 1.0, 1.0 - label, 0.5 * label], dim=1)  # (B, 3, H, W)
    image = colour + 0.5 * torch.randn(2, 3, 64, 64)
    model = create_model(arch, encoder, channels=32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = cross_entropy(model(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] / losses[-1] > 5, losses


def test_unknown_arch_lists_the_heads():
    with pytest.raises(ValueError, match="unknown arch 'deeplab'") as error:
        create_model("deeplab", "resnet18")
    for name in HEADS:
        assert name in str(error.value)


def test_unknown_encoder_explains_and_suggests():
    with pytest.raises(ValueError, match="unknown encoder 'pvt_v2_b9'") as error:
        create_model("daformer", "pvt_v2_b9")
    message = str(error.value)
    assert "features_only" in message and "internimage" in message
    assert "close timm names" in message and "'pvt_v2_b5'" in message


def test_bundled_weights_for_other_encoders_list_the_ones_that_have_them():
    with pytest.raises(ValueError, match="no bundled weights for encoder 'resnet18'.*tf_efficientnet_lite0"):
        create_model("daformer", "resnet18", pretrained="bundled")


def test_weights_path_loads_a_prefixed_checkpoint(tmp_path):
    torch.manual_seed(0)
    trained = create_model("segformer", "resnet18", channels=16)
    path = tmp_path / "encoder.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.encoder.state_dict().items()}}, path)
    loaded = create_model("segformer", "resnet18", channels=16, weights=path)
    for key, value in trained.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value), key


def test_weights_path_takes_the_encoder_of_a_whole_model_checkpoint(tmp_path):
    torch.manual_seed(0)
    trained = create_model("segformer", "resnet18", channels=16)
    path = tmp_path / "model.pth"
    torch.save({"model": trained.state_dict()}, path)
    loaded = create_encoder("resnet18", weights=path)
    for key, value in trained.encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("damage, message", [("shape", "shape mismatches.*layer1.0.conv1.weight"), ("missing", "1 missing")])
def test_weights_that_do_not_fit_name_the_file_and_keys(tmp_path, damage, message):
    state = create_encoder("resnet18").model.state_dict()
    if damage == "shape":
        state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    else:
        del state["layer4.1.bn2.running_var"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        create_encoder("resnet18", weights=path)


def test_normalisation_follows_the_weights():
    assert encoder_normalisation("tf_efficientnet_lite0", "bundled") == ((0.5,) * 3, (0.5,) * 3)
    assert encoder_normalisation("pvt_v2_b0") == (IMAGENET_MEAN, IMAGENET_STD)


MILITARY_UNIFORM = 652  # ImageNet class index


def test_bundled_lite0_classifies_a_real_photo():
    # Grace Hopper in US Navy uniform, a photo matplotlib ships; ImageNet models say "military uniform"
    import timm

    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(bundled_state_dict("tf_efficientnet_lite0"))
    image = cv2.cvtColor(cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))), cv2.COLOR_BGR2RGB)
    h, w = image.shape[:2]
    side = min(h, w)  # centre square, then 224×224
    image = image[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2]
    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_CUBIC)
    mean, std = encoder_normalisation("tf_efficientnet_lite0", "bundled")
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        probs = model(x[None]).softmax(dim=1)[0]  # (1000,)
    assert probs.argmax().item() == MILITARY_UNIFORM
    assert probs[MILITARY_UNIFORM] > 0.3  # measured 0.40; an untrained model gives ~0.001


def test_bundled_encoder_holds_the_classifier_weights():
    encoder = create_encoder("tf_efficientnet_lite0", pretrained="bundled")
    full = bundled_state_dict("tf_efficientnet_lite0")
    own = encoder.model.state_dict()
    assert len(own) > 250  # stem + all blocks; only conv_head/bn2/classifier stay behind
    for key, value in own.items():
        assert torch.equal(value, full[key]), key
    assert set(full) - set(own) == {k for k in full if k.split(".")[0] in ("conv_head", "bn2", "classifier")}
    assert set(BUNDLED_WEIGHTS) >= {"tf_efficientnet_lite0"}
