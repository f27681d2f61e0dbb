"""The real MiT / SegFormer through transformers, Cityscapes checkpoints as a start and zero-shot runs.

No weights can be downloaded here: every checkpoint is a random model of the published configuration
(or a tiny one) written in the published layout by ``save_pretrained``, or in the original SegFormer /
mmseg key names by a mapping written out in this file.
"""

import json

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
from scratch import SCRATCH
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    SegformerForSemanticSegmentation,
    SegformerModel,
    SwinConfig,
)

from kit.competition.cityscapes import (
    CITYSCAPES_ARCH,
    CITYSCAPES_CLASSES,
    TWO_WHEELERS,
    cityscapes_class_map,
    first_members,
)
from kit.competition.labels import BACKGROUND_CLASS, CLASSES, PSEUDO_LABEL_VALUES
from kit.competition.layout import read_image, read_label, read_split, read_split_file
from kit.models.cityscapes import map_classifier_rows
from kit.models.encoders import create_encoder, encoder_normalisation
from kit.models.hf_swin import hf_swin_config
from kit.models.model import create_model
from kit.models.segformer import MIT_VARIANTS, mit_config
from kit.predict.pseudo import make_pseudo_labels
from kit.predict.runs import load_run
from kit.predict.zero_shot import main as zero_shot_main
from kit.predict.zero_shot import write_zero_shot_run
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.recipes import build_model

CITYSCAPES_LABELS = dict(num_labels=19, id2label=dict(enumerate(CITYSCAPES_CLASSES)),
                         label2id={n: i for i, n in enumerate(CITYSCAPES_CLASSES)})
X = torch.randn(2, 3, 97, 130, generator=torch.Generator().manual_seed(0))  # odd, non-square


def _up(logits, size=X.shape[-2:]):
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def cityscapes_b0(tmp_path_factory):
    """A random SegFormer-B0 with Cityscapes' 19 classes, saved as the hub's checkpoints are."""
    torch.manual_seed(0)
    network = SegformerForSemanticSegmentation(mit_config("mit_b0", **CITYSCAPES_LABELS)).eval()
    folder = tmp_path_factory.mktemp("segformer-b0-cityscapes")
    network.save_pretrained(folder)
    return network, folder


# --------------------------------------------------------------------------- the class map


def test_cityscapes_classes_map_onto_the_competitions_by_the_documented_rule():
    by_name = dict(zip(CITYSCAPES_CLASSES, cityscapes_class_map()))
    index = {name: i for i, name in enumerate(CLASSES)}
    expected = {"road": "Road", "sidewalk": "Sidewalk", "building": "Construction", "wall": "Construction",
                "fence": "Fence", "pole": "Pole", "traffic light": "Traffic Light", "traffic sign": "Traffic Sign",
                "vegetation": "Nature", "terrain": "Nature", "sky": "Sky", "person": "Person", "rider": "Rider",
                "car": "Car", "truck": "Car", "bus": "Car", "train": "Car"}
    assert {k: v for k, v in by_name.items() if k in expected} == {k: index[v] for k, v in expected.items()}
    assert by_name["motorcycle"] == by_name["bicycle"] == BACKGROUND_CLASS
    assert dict(zip(CITYSCAPES_CLASSES, cityscapes_class_map("rider")))["bicycle"] == index["Rider"]
    assert dict(zip(CITYSCAPES_CLASSES, cityscapes_class_map("car")))["motorcycle"] == index["Car"]
    assert set(cityscapes_class_map()) == set(range(13))  # every competition class has a Cityscapes one
    with pytest.raises(ValueError, match="two_wheelers = 'bus': expected one of background, rider, car"):
        cityscapes_class_map("bus")
    # merged classes start from their largest member; background from a new row
    starts = {CLASSES[k]: CITYSCAPES_CLASSES[c] for k, c in first_members(cityscapes_class_map()).items()}
    assert starts["Construction"] == "building" and starts["Nature"] == "vegetation" and starts["Car"] == "car"
    assert BACKGROUND_CLASS not in first_members(cityscapes_class_map())
    # where the two-wheelers go changes the zero-shot sums, not which rows start a fine-tuned head
    assert all(first_members(cityscapes_class_map(w)) == first_members(cityscapes_class_map()) for w in TWO_WHEELERS)


def test_classifier_rows_are_copied_by_the_map_and_background_keeps_its_new_row():
    cityscapes = {"weight": torch.arange(19.0)[:, None].repeat(1, 4), "bias": torch.arange(19.0) * 10}
    fresh = {"weight": torch.full((13, 4), -1.0), "bias": torch.full((13,), -5.0)}
    mapped = map_classifier_rows(cityscapes, fresh, cityscapes_class_map())
    # hand-written: Road 0 ← road 0, Construction 2 ← building 2, Fence 3 ← fence 4, ..., Car 11 ← car 13
    rows = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13]
    assert mapped["bias"].tolist() == [10.0 * r for r in rows] + [-5.0]
    assert mapped["weight"][:, 0].tolist() == [float(r) for r in rows] + [-1.0]
    assert fresh["bias"].eq(-5).all()  # not changed in place


# --------------------------------------------------------------------------- the encoders


@pytest.mark.slow
def test_mit_variants_have_the_published_sizes():
    # SegFormer paper (Xie et al. 2021), table 1: parameters (millions) of the encoder and of the whole
    # model with its all-MLP head (256 channels for B0/B1, 768 for B2…B5; 19 Cityscapes classes)
    published = {"mit_b0": (3.4, 3.8), "mit_b1": (13.1, 13.7), "mit_b2": (24.2, 27.5), "mit_b3": (44.0, 47.3),
                 "mit_b4": (60.8, 64.1), "mit_b5": (81.4, 84.7)}
    for name, (encoder_millions, total_millions) in published.items():
        model = create_model("segformer", name, num_classes=19, channels=MIT_VARIANTS[name][2])
        encoder, total = (sum(p.numel() for p in m.parameters()) / 1e6 for m in (model.encoder, model))
        assert abs(encoder - encoder_millions) / encoder_millions < 0.03, (name, encoder)
        assert abs(total - total_millions) / total_millions < 0.03, (name, total)
        assert model.encoder.channels == list(MIT_VARIANTS[name][0]) and model.encoder.reductions == [4, 8, 16, 32]
    features = create_encoder("mit_b0").eval()(X)
    assert [tuple(f.shape) for f in features] == [(2, 32, 25, 33), (2, 64, 13, 17), (2, 160, 7, 9), (2, 256, 4, 5)]
    assert encoder_normalisation("mit_b0") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_a_save_pretrained_mit_loads_with_every_tensor(tmp_path):
    torch.manual_seed(1)
    original = SegformerModel(mit_config("mit_b0")).eval()
    original.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "model.safetensors")
    assert "encoder.block.0.0.attention.self.query.weight" in stored  # the published (hub) layout
    encoder = create_encoder("mit_b0", weights=str(tmp_path)).eval()
    assert encoder.model.state_dict().keys() == original.state_dict().keys()
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in encoder.model.state_dict().items())
    with pytest.raises(ValueError, match=r"widths \[32, 64, 160, 256\] and depths \[2, 2, 2, 2\], not mit_b1"):
        create_encoder("mit_b1", weights=str(tmp_path))
    del stored["encoder.block.1.0.mlp.dense1.weight"]
    from safetensors.torch import save_file

    save_file(stored, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing keys: \['stages.1.blocks.0.mlp.fc1.weight'\]"):
        create_encoder("mit_b0", weights=str(tmp_path))


def test_weights_paths_are_read_as_paths_and_other_layouts_refused(cityscapes_b0, tmp_path, monkeypatch):
    network, folder = cityscapes_b0
    monkeypatch.setenv("HOME", str(folder.parent))
    model = create_model("segformer", "mit_b0", channels=256, weights=f"~/{folder.name}")  # a folder, not a hub id
    assert torch.equal(model.decode_head.linear_fuse.weight, network.decode_head.linear_fuse.weight)
    with pytest.raises(FileNotFoundError, match="weights 'no/such/segformer.pth' not found"):
        create_model("segformer", "mit_b0", channels=256, weights="no/such/segformer.pth")
    torch.save({"backbone.layers.0.0.projection.weight": torch.zeros(32, 3, 7, 7)}, tmp_path / "mmseg1.pth")
    with pytest.raises(ValueError, match=r"mmsegmentation 1.x's MiT names \(backbone.layers.\*\)"):
        create_encoder("mit_b0", weights=str(tmp_path / "mmseg1.pth"))


def test_without_internet_a_hub_id_fails_with_what_to_pass_instead(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="(?s)could not read SegFormer weights 'nvidia/mit-b0'.*without internet pass a local folder"):
        create_encoder("mit_b0", pretrained=True)
    with pytest.raises(FileNotFoundError, match="weights 'missing/mit.pth' not found"):
        create_encoder("mit_b0", weights="missing/mit.pth")


def _original_names(network: SegformerForSemanticSegmentation) -> dict[str, torch.Tensor]:
    """The network's weights under the original SegFormer / mmseg names (NVlabs/SegFormer's
    ``mix_transformer.py`` and ``segformer_head.py``), written out from transformers' module names."""
    out = {}
    for key, tensor in network.state_dict().items():
        if key.startswith("decode_head."):
            part = key.removeprefix("decode_head.")
            for theirs, ours in (("linear_projections.{}.proj", "linear_c{}.proj"),):
                for i in range(4):
                    part = part.replace(theirs.format(i), ours.format(i + 1))
            part = part.replace("linear_fuse.weight", "linear_fuse.conv.weight").replace("batch_norm.", "linear_fuse.bn.")
            out["decode_head." + part.replace("classifier.", "linear_pred.")] = tensor
            continue
        parts = key.removeprefix("segformer.").split(".")  # stages.i.<...>
        stage, rest = int(parts[1]) + 1, parts[2:]
        if rest[0] == "patch_embeddings":
            name = f"patch_embed{stage}." + ".".join(rest[1:]).replace("layer_norm", "norm")
        elif rest[0] == "layer_norm":
            name = f"norm{stage}." + rest[1]
        else:  # blocks.j.<module>
            block, module = rest[1], ".".join(rest[2:])
            module = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.q_proj": "attn.q",
                      "attention.o_proj": "attn.proj", "attention.sequence_reduction.sequence_reduction": "attn.sr",
                      "attention.sequence_reduction.layer_norm": "attn.norm"}.get(module.rsplit(".", 1)[0],
                                                                                  module.rsplit(".", 1)[0])
            name = f"block{stage}.{block}.{module}.{key.rsplit('.', 1)[1]}"
            if "attention.k_proj" in key or "attention.v_proj" in key:
                continue  # fused below
        out[f"backbone.{name}"] = tensor
    state = network.state_dict()
    for key in [k for k in state if "attention.k_proj" in k]:
        parts = key.removeprefix("segformer.").split(".")
        stage, block, kind = int(parts[1]) + 1, parts[3], parts[-1]
        out[f"backbone.block{stage}.{block}.attn.kv.{kind}"] = torch.cat([state[key], state[key.replace("k_proj", "v_proj")]])
    out["backbone.head.weight"] = torch.zeros(1000, 256)  # an ImageNet classifier, which is no part of the encoder
    return out


def test_an_original_segformer_checkpoint_loads_encoder_and_head(cityscapes_b0, tmp_path):
    network, _ = cityscapes_b0
    original = _original_names(network)
    assert "backbone.block1.0.attn.kv.weight" in original and "decode_head.linear_fuse.bn.running_var" in original
    torch.save({"state_dict": original}, tmp_path / "segformer_b0_cityscapes.pth")  # mmseg's checkpoint form
    torch.save({f"module.{k}": v for k, v in original.items()}, tmp_path / "dataparallel.pth")
    dataparallel = create_model("segformer", "mit_b0", channels=256, weights=str(tmp_path / "dataparallel.pth"))
    assert torch.equal(dataparallel.decode_head.linear_fuse.weight, network.decode_head.linear_fuse.weight)
    model = create_model("segformer", "mit_b0", channels=256, weights=str(tmp_path / "segformer_b0_cityscapes.pth")).eval()
    with torch.no_grad():
        reference, ours = _up(network(pixel_values=X).logits), model(X)
    rows = list(first_members(cityscapes_class_map()).items())
    assert torch.allclose(ours[:, [k for k, _ in rows]], reference[:, [c for _, c in rows]], atol=1e-5)
    # the encoder alone from the same file, under any head
    encoder = create_encoder("mit_b0", weights=str(tmp_path / "segformer_b0_cityscapes.pth"))
    assert all(torch.equal(v, network.segformer.state_dict()[k]) for k, v in encoder.model.state_dict().items())


def test_a_whole_cityscapes_segformer_starts_the_kits_model(cityscapes_b0):
    network, folder = cityscapes_b0
    model = create_model("segformer", "mit_b0", channels=256, weights=str(folder)).eval()
    # every tensor of the checkpoint is used: one kit tensor per checkpoint tensor, equal but the classifier
    theirs = network.state_dict()
    ours = {k.replace("encoder.model.", "segformer.", 1): v for k, v in model.state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if "classifier" not in k)
    with torch.no_grad():
        reference, logits = _up(network(pixel_values=X).logits), model(X)
    for output, cityscapes in first_members(cityscapes_class_map()).items():
        assert torch.allclose(logits[:, output], reference[:, cityscapes], atol=1e-5), CLASSES[output]
    assert not torch.allclose(logits[:, BACKGROUND_CLASS], reference[:, 17], atol=1e-2)  # background: a new row
    with pytest.raises(ValueError, match="decode head is 256 channels wide, the run's is 64: set HEAD_CHANNELS = 256"):
        create_model("segformer", "mit_b0", channels=64, weights=str(folder))
    # under another head only the encoder loads
    daformer = create_model("daformer", "mit_b0", channels=32, weights=str(folder))
    assert all(torch.equal(v, network.segformer.state_dict()[k]) for k, v in daformer.encoder.model.state_dict().items())


def test_a_run_trains_from_a_cityscapes_segformer_and_predicts_from_its_folder(cityscapes_b0, tiny, tmp_path):
    network, folder = cityscapes_b0
    config = TrainConfig(**{**SCRATCH, "data_dir": str(tiny), "runs_dir": str(tmp_path), "run_name": "city",
                            "method": "fisheye_tf", "arch": "segformer", "encoder": "mit_b0", "head_channels": 256,
                            "weights": str(folder), "normalization": "encoder", "source_size": (48, 96),
                            "target_size": (54, 96), "crop_size": (32, 32), "epochs": 1, "steps_per_epoch": 2,
                            "batch_size": 2, "warmup_steps": 1, "eval_limit": 2, "progress": False})
    start = build_model(config)
    assert all(torch.equal(v, network.segformer.state_dict()[k]) for k, v in start.encoder.model.state_dict().items())
    train(config)
    model, run = load_run(tmp_path / "city", "last.pt", device="cpu")  # rebuilt without the checkpoint it started from
    assert (run.arch, run.encoder) == ("segformer", "mit_b0")
    trained = model.encoder.model.state_dict()
    assert not all(torch.equal(v, network.segformer.state_dict()[k]) for k, v in trained.items())  # it trained
    with torch.no_grad():
        assert model(X).shape == (2, 13, *X.shape[-2:])


@pytest.mark.slow
def test_a_whole_cityscapes_mask2former_starts_the_mask2former_cityscapes_preset(tmp_path):
    """facebook/mask2former-swin-tiny-cityscapes-semantic's configuration (transformers' Mask2Former
    defaults: 256 channels, 100 queries, 10 decoder predictions, 6 deformable layers) on Swin-T."""
    torch.manual_seed(3)
    network = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=hf_swin_config("hf_swin_tiny"), **CITYSCAPES_LABELS)).eval()
    network.save_pretrained(tmp_path)
    model = build_model(TrainConfig.from_preset("mask2former_cityscapes", weights=str(tmp_path))).eval()
    theirs = {k: v for k, v in network.state_dict().items() if k != "criterion.empty_weight"}  # a setting, not learnt
    assert len(model.state_dict()) == len(theirs)  # every tensor of the checkpoint has its place
    x = X[:1, :, :64, :96]
    with torch.no_grad():
        out, predictions = network(pixel_values=x), model.decode_head(model.encoder(x))
    assert torch.allclose(predictions.masks[-1], out.masks_queries_logits, atol=1e-4)
    rows = list(first_members(cityscapes_class_map()).items())
    assert torch.allclose(predictions.classes[-1][..., [k for k, _ in rows]],
                          out.class_queries_logits[..., [c for _, c in rows]], atol=1e-5)
    assert torch.allclose(predictions.classes[-1][..., -1], out.class_queries_logits[..., -1], atol=1e-5)  # no object
    with pytest.raises(ValueError, match=r"set HEAD_CHANNELS = 256 and HEAD_OPTIONS = \{'layers': 9, 'queries': 100"):
        create_model("mask2former", "hf_swin_tiny", weights=str(tmp_path), channels=256)  # 200 queries: solution B's
    # its backbone alone, under another head
    encoder = create_model("daformer", "hf_swin_tiny", weights=str(tmp_path), channels=16).encoder
    backbone = network.model.pixel_level_module.encoder.state_dict()
    assert all(torch.equal(v, backbone[k]) for k, v in encoder.model.state_dict().items())


def test_a_head_of_other_classes_is_refused(tmp_path):
    SegformerForSemanticSegmentation(mit_config("mit_b0", num_labels=150)).save_pretrained(tmp_path)  # ADE20K's
    with pytest.raises(ValueError, match="predicts 150 classes, not Cityscapes' 19"):
        create_model("segformer", "mit_b0", channels=256, weights=str(tmp_path))


# --------------------------------------------------------------------------- zero-shot


def _summed(probs19: torch.Tensor, class_map) -> torch.Tensor:
    return torch.stack([probs19[:, [c for c in range(19) if class_map[c] == k]].sum(1) for k in range(13)], 1)


def test_a_zero_shot_segformer_run_gives_the_summed_cityscapes_probabilities(cityscapes_b0, tiny, tmp_path):
    network, folder = cityscapes_b0
    run_dir = write_zero_shot_run(str(folder), tiny, "zs", tmp_path / "runs", size=(64, 96), two_wheelers="rider")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == CITYSCAPES_ARCH and config["target_size"] == [64, 96] and config["two_wheelers"] == "rider"
    model, run = load_run(run_dir, device="cpu")  # rebuilt from config.json alone, weights from best.pt
    with torch.no_grad():
        probs, reference = model(X).softmax(1), _up(network(pixel_values=X).logits).softmax(1)
    assert torch.allclose(probs, _summed(reference, cityscapes_class_map("rider")), atol=1e-6)
    assert probs[:, BACKGROUND_CLASS].max() < 1e-6  # with two-wheelers on Rider no Cityscapes class is background
    with pytest.raises(FileExistsError, match="OVERWRITE"):
        write_zero_shot_run(str(folder), tiny, "zs", tmp_path / "runs", size=(64, 96))


def test_a_zero_shot_mask2former_run_reads_out_as_transformers_does(tiny, tmp_path, capsys):
    torch.manual_seed(2)
    backbone = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    network = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(
        backbone_config=backbone, hidden_dim=32, feature_size=32, mask_feature_size=32, num_queries=10,
        decoder_layers=2, encoder_layers=1, dim_feedforward=64, encoder_feedforward_dim=64, num_attention_heads=2,
        **CITYSCAPES_LABELS)).eval()
    with torch.no_grad():  # mask logits of several units, where resizing before or after the sigmoid differs
        for parameter in network.model.transformer_module.decoder.mask_predictor.mask_embedder.parameters():
            parameter.mul_(30)
    network.save_pretrained(tmp_path / "m2f")
    zero_shot_main([str(tmp_path / "m2f"), "--data-dir", str(tiny), "--run-name", "zs", "--runs-dir", str(tmp_path / "runs")])
    assert "RUN_NAME = 'zs'" in capsys.readouterr().out
    model, run = load_run(tmp_path / "runs" / "zs", "last.pt", device="cpu")
    assert run.target_size == tuple(read_image(read_split(tiny, "test").img_path[0]).shape[:2])  # the images' own
    # transformers' own read-out, which takes the input to be its processor's 384×384
    x = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        probs, out = model(x).softmax(1), network(pixel_values=x)
    assert out.masks_queries_logits.std() > 3  # where resizing before or after the sigmoid differs
    scores = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        out, target_sizes=[(384, 384)], return_segmentation_scores=True)[0].segmentation_scores[None]
    scores = scores.clamp_min(1e-6)  # a pixel no query claims: uniform (the kit's rule), not 0 / 0
    assert torch.allclose(probs, _summed(scores / scores.sum(1, keepdim=True), cityscapes_class_map()), atol=1e-5)


def test_a_zero_shot_run_pseudo_labels_like_a_trained_one(cityscapes_b0, tiny, tmp_path):
    _, folder = cityscapes_b0
    run = load_run(write_zero_shot_run(str(folder), tiny, "zs", tmp_path / "runs", size=(64, 96)), device="cpu")
    pseudo = make_pseudo_labels([run], tiny, tmp_path / "pseudo", progress=False)
    rows = read_split_file(pseudo.csv)
    assert list(rows.id) == list(read_split(tiny, "train_target").id)
    for path, image in zip(rows.gt_path, rows.img_path):
        label = read_label(path, PSEUDO_LABEL_VALUES)
        assert label.shape == read_image(image).shape[:2]


class _KitSegFormerHeadBefore(torch.nn.Module):
    """The kit's own SegFormer head before it became transformers' (kit/models/heads.py at 58a004a)."""

    def __init__(self, in_channels, num_classes, channels=256, dropout=0.1):
        from kit.models.heads import ClassifierHead, ConvBNReLU, LevelEmbedding

        super().__init__()
        self.embed = LevelEmbedding(in_channels, channels)
        self.fuse = ConvBNReLU(channels * len(in_channels), channels, 1)
        self.classifier = ClassifierHead(channels, num_classes, dropout)

    def forward(self, features):
        return self.classifier(self.fuse(self.embed(features)))


def test_a_run_of_the_kits_earlier_segformer_head_still_loads():
    from kit.models.model import SegmentationModel

    torch.manual_seed(4)
    before = SegmentationModel(create_encoder("resnet18"), _KitSegFormerHeadBefore([64, 128, 256, 512], 13, 16)).eval()
    with torch.no_grad():
        for bn in (before.decode_head.fuse[1],):  # statistics of a trained run, not the initial 0 / 1
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    after = create_model("segformer", "resnet18", channels=16).eval()
    after.load_state_dict(before.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(after(X), before(X), atol=1e-5)
