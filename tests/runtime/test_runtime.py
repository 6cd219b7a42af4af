"""Model runtime: tokenizer, tiny checkpoint, loader errors, image inference exactness, video.

Pure runtime tests: no database, no Redis, no server. They use the tiny random SAM3 written by
``write_tiny_checkpoint`` and loaded through the real loader; thresholds are lowered because a
random model scores everything near 0.25.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.runtime import ModelLoadError, build_clip_tokenizer, engine, load_sam3, write_small_bpe_file
from inference.runtime.mask_postprocessing import fill_interactive_holes
from inference.runtime.tiny import TINY_MARKER_FILE, tiny_video_config, write_tiny_checkpoint
from inference.runtime.tokenizer import SMALL_VOCAB_WORDS, BpeFileError
from inference.runtime.video import ConceptVideoSession, InteractiveVideoSession, LazyFrames


@pytest.fixture(autouse=True)
def _fresh_redis_and_dirs():
    """Replaces tests/conftest.py's autouse Redis/upload-dir reset: nothing here needs them."""
    yield


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("sam3-tiny"))


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_sam3(tiny_dir, None, "cpu")


def _test_image(height: int = 150, width: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    image[30:90, 40:120] = (220, 40, 40)
    image[60:140, 130:190] = (30, 30, 200)
    noise = rng.integers(0, 30, size=image.shape, dtype=np.uint8)
    return image + noise


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _test_image()


@pytest.fixture(scope="module")
def features(loaded, image):
    return engine.compute_image_features(loaded, image)


# --------------------------------------------------------------------------- tokenizer


def _openai_vocab(bpe_path: Path) -> dict[str, int]:
    """DESIGN.md §4 formula, written independently of the module under test."""
    with gzip.open(bpe_path) as file:
        merges = file.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges if m]
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return dict(zip(tokens, range(len(tokens))))


def test_small_bpe_tokenizer_matches_openai_formula(tmp_path):
    bpe = write_small_bpe_file(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    tokenizer = build_clip_tokenizer(bpe)
    vocab = _openai_vocab(bpe)

    assert tokenizer.is_fast
    assert len(tokenizer) == len(vocab)
    ids = tokenizer("a dog").input_ids
    assert ids == [vocab["<|startoftext|>"], vocab["a</w>"], vocab["dog</w>"], vocab["<|endoftext|>"]]
    assert ids[1] == 320  # byte-level "a</w>": same id as with the real 49408-token file
    assert ids[0] == len(vocab) - 2 and ids[-1] == len(vocab) - 1
    for word in ("cat", "person", "bus", "visual"):
        assert tokenizer.convert_ids_to_tokens(tokenizer(word).input_ids)[1:-1] == [f"{word}</w>"]
    # Unknown words still tokenize, byte by byte; case and spacing are normalized like CLIP.
    assert tokenizer("Yellow  School BUS").input_ids == tokenizer("yellow school bus").input_ids
    assert len(tokenizer("zebra").input_ids) > 3
    padded = tokenizer("a dog", padding="max_length", max_length=32)
    assert len(padded.input_ids) == 32 and sum(padded.attention_mask) == 4


def test_small_bpe_file_is_deterministic(tmp_path):
    a = write_small_bpe_file(tmp_path / "a.txt.gz").read_bytes()
    b = write_small_bpe_file(tmp_path / "b.txt.gz").read_bytes()
    assert a == b


@pytest.mark.parametrize("content", [b"not gzip and not utf8 \xff\xfe", gzip.compress(b"#version\nonly-one-field\n")])
def test_bad_bpe_file_is_rejected(tmp_path, content):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(content)
    with pytest.raises(BpeFileError):
        build_clip_tokenizer(path)


# --------------------------------------------------------------------------- checkpoint + loader


def test_tiny_checkpoint_has_published_layout(tiny_dir):
    from safetensors import safe_open

    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= names
    assert {"bpe_simple_vocab_16e6.txt.gz", TINY_MARKER_FILE} <= names
    assert json.loads((tiny_dir / "config.json").read_text())["model_type"] == "sam3_video"
    with safe_open(tiny_dir / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert any(k.startswith("tracker_model.mask_decoder.") for k in keys)
    assert not any(k.startswith("tracker_model.tracker_model.") for k in keys)
    assert any(k.startswith("detector_model.vision_encoder.backbone.") for k in keys)


def test_tiny_config_sizes():
    config = tiny_video_config()
    assert config.image_size == 224
    assert config.detector_config.detr_decoder_config.num_queries == 20
    assert config.tracker_config.vision_config.backbone_feature_sizes == [[64, 64], [32, 32], [16, 16]]
    assert config.tracker_config.memory_attention_rope_feat_sizes == [16, 16]


def test_load_from_directory(loaded, tiny_dir):
    assert loaded.is_tiny_random
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert loaded.resolution == 224
    identity = loaded.identity
    assert identity["tiny_random"] is True and identity["path"] == str(tiny_dir)
    assert identity["parameters"] == sum(p.numel() for p in loaded.model.parameters()) > 0
    assert identity["dtype"] == "float32" and identity["device"] == "cpu"
    assert type(loaded.model).__name__ == "Sam3VideoModel"
    assert loaded.tracker.vision_encoder is None  # one backbone only


def test_load_from_file_inside_directory(loaded, tiny_dir):
    for inside in (tiny_dir / "model.safetensors", tiny_dir / "config.json", tiny_dir / "sam3.pt"):
        other = load_sam3(inside, None, "cpu")
        assert other.checkpoint_dir == tiny_dir
        reference = loaded.model.state_dict()
        assert all(torch.equal(reference[k], v) for k, v in other.model.state_dict().items())


def test_tokenizer_from_explicit_bpe_path(tiny_dir, tmp_path):
    bpe = write_small_bpe_file(tmp_path / "custom.txt.gz")
    assert load_sam3(tiny_dir, bpe, "cpu").identity["tokenizer"] == str(bpe)
    # A configured path that does not exist falls back to the checkpoint directory.
    fallback = load_sam3(tiny_dir, tmp_path / "missing.txt.gz", "cpu")
    assert fallback.identity["tokenizer"].endswith("bpe_simple_vocab_16e6.txt.gz")


def test_half_is_ignored_on_cpu(tiny_dir):
    assert load_sam3(tiny_dir, None, "cpu", half=True).dtype == torch.float32


def _copy_checkpoint(tiny_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, target)
    return target


def _expect_load_error(path, *, bpe=None, device="cpu", **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_sam3(path, bpe, device, **kwargs)
    reason = info.value.reason
    assert isinstance(reason, str) and reason and "Traceback" not in reason and "\n" not in reason
    return reason


def test_missing_checkpoint(tmp_path):
    assert "not found" in _expect_load_error(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "config.json" in _expect_load_error(tmp_path / "empty")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "sam3.pt").write_bytes(b"x")
    assert "sam3.pt" in _expect_load_error(tmp_path / "meta" / "sam3.pt")


def test_missing_weights(tiny_dir, tmp_path):
    ckpt = _copy_checkpoint(tiny_dir, tmp_path)
    (ckpt / "model.safetensors").unlink()
    assert "model.safetensors" in _expect_load_error(ckpt)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights(tiny_dir, tmp_path, damage):
    ckpt = _copy_checkpoint(tiny_dir, tmp_path)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 100)
    assert "model.safetensors" in _expect_load_error(ckpt)


def test_weights_not_matching_config(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    ckpt = _copy_checkpoint(tiny_dir, tmp_path)
    state = load_file(ckpt / "model.safetensors")
    dropped = [k for k in state if k.startswith("detector_model.mask_decoder.")]
    save_file({k: v for k, v in state.items() if k not in dropped}, ckpt / "model.safetensors")
    assert "missing keys" in _expect_load_error(ckpt)

    state["detector_model.text_projection.weight"] = torch.zeros(3, 3)
    save_file(state, ckpt / "model.safetensors")
    _expect_load_error(ckpt)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: {**c, "model_type": "sam3"}, "image-only"),
        (lambda c: {**c, "model_type": "bert"}, "model_type"),
        (None, "not valid JSON"),
    ],
)
def test_wrong_config(tiny_dir, tmp_path, edit, expected):
    ckpt = _copy_checkpoint(tiny_dir, tmp_path)
    config_path = ckpt / "config.json"
    if edit is None:
        config_path.write_text("{ not json")
    else:
        config_path.write_text(json.dumps(edit(json.loads(config_path.read_text()))))
    assert expected in _expect_load_error(ckpt)


def test_bpe_file_too_large_for_model(tiny_dir, tmp_path):
    words = (*SMALL_VOCAB_WORDS, "hippopotamus", "crocodile", "kangaroo", "penguin")
    bigger = write_small_bpe_file(tmp_path / "big.txt.gz", words=words)
    assert "BPE file" in _expect_load_error(tiny_dir, bpe=bigger)


def test_bad_device_and_resolution(tiny_dir):
    if not torch.cuda.is_available():
        assert "CUDA" in _expect_load_error(tiny_dir, device="cuda:0")
    assert "device" in _expect_load_error(tiny_dir, device="tpu")
    assert "resolution" in _expect_load_error(tiny_dir, resolution=100)


def test_custom_resolution(tiny_dir, image):
    small = load_sam3(tiny_dir, None, "cpu", resolution=140)
    assert small.resolution == 140 and small.identity["resolution"] == 140
    features = engine.compute_image_features(small, image)
    assert features.fpn[2].shape[-1] == 10
    result = engine.segment_concept(small, features, text="dog", threshold=0.0)
    assert result.masks.shape[1:] == image.shape[:2]
    assert len(engine.segment_interactive(small, features, points=[(20, 30)])) == 1


# --------------------------------------------------------------------------- image inference


def _check_instances(result, image, *, n=None):
    h, w = image.shape[:2]
    count = len(result)
    if n is not None:
        assert count == n
    assert result.scores.dtype == torch.float32 and result.scores.shape == (count,)
    assert result.boxes.dtype == torch.float32 and result.boxes.shape == (count, 4)
    assert result.masks.dtype == torch.bool and result.masks.shape == (count, h, w)
    assert result.masks.device == torch.device("cpu")
    assert torch.all(result.scores[:-1] >= result.scores[1:])
    if count:
        assert torch.all(result.boxes[:, 0::2] >= 0) and torch.all(result.boxes[:, 0::2] <= w)
        assert torch.all(result.boxes[:, 1::2] >= 0) and torch.all(result.boxes[:, 1::2] <= h)


@pytest.mark.parametrize(
    "prompt",
    [
        {"text": "a dog"},
        {"text": None, "boxes": [[40, 30, 120, 90]]},
        {"text": "person", "boxes": [[40, 30, 120, 90], [130, 60, 190, 140]], "box_labels": [1, 0]},
    ],
    ids=["text", "box", "mixed"],
)
def test_concept_prompts_return_instances(loaded, features, image, prompt):
    result = engine.segment_concept(loaded, features, threshold=0.0, **prompt)
    _check_instances(result, image, n=20)  # every query passes threshold 0
    assert result.image_size == image.shape[:2]
    strict = engine.segment_concept(loaded, features, threshold=float(result.scores[2]), **prompt)
    assert len(strict) == 2  # strictly above the third best score
    _check_instances(engine.segment_concept(loaded, features, threshold=1.0, **prompt), image, n=0)


def test_concept_prompt_validation(loaded, features):
    with pytest.raises(ValueError):
        engine.segment_concept(loaded, features, text="  ", threshold=0.5)
    with pytest.raises(ValueError):
        engine.segment_concept(loaded, features, text="dog", boxes=[[1, 2, 3, 4]], box_labels=[1, 1], threshold=0.5)
    with pytest.raises(ValueError):
        engine.segment_concept(loaded, features, text=None, boxes=[[10, 10, 5, 20]], threshold=0.5)
    with pytest.raises(ValueError):
        engine.segment_concept(loaded, features, text=None, boxes=[[1, 2, 3, 4]], box_labels=[2], threshold=0.5)


@pytest.mark.parametrize(
    "prompt, n",
    [
        ({"points": [(60, 50)]}, 1),
        ({"points": [(60, 50), (150, 100)], "point_labels": [1, 0]}, 1),
        ({"box": (40, 30, 120, 90)}, 1),
        ({"points": [(60, 50)], "box": (40, 30, 120, 90)}, 1),
        ({"points": [(60, 50)], "multimask": True}, 3),
    ],
    ids=["point", "pos-neg", "box", "point+box", "multimask"],
)
def test_interactive_prompts_return_instances(loaded, features, image, prompt, n):
    result = engine.segment_interactive(loaded, features, **prompt)
    _check_instances(result, image, n=n)
    assert 0.0 <= result.object_score <= 1.0
    assert torch.equal(result.boxes, engine.masks_to_boxes(result.masks))


def test_interactive_prompt_validation(loaded, features, image):
    with pytest.raises(ValueError):
        engine.segment_interactive(loaded, features)
    with pytest.raises(ValueError):
        engine.segment_interactive(loaded, features, points=[(1, 2)], point_labels=[1, 0])
    no_tracker = engine.compute_image_features(loaded, image, include_tracker=False)
    with pytest.raises(ValueError):
        engine.segment_interactive(loaded, no_tracker, points=[(1, 2)])


def test_image_validation(loaded):
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8)):
        with pytest.raises(ValueError):
            engine.compute_image_features(loaded, bad)


def test_masks_to_boxes():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 9, 11] = True
    boxes = engine.masks_to_boxes(masks)
    assert boxes.tolist() == [[3, 2, 6, 4], [11, 9, 11, 9], [0, 0, 0, 0]]


# --------------------------------------------------------------------------- exactness


@pytest.fixture(scope="module")
def reference_detector(tiny_dir):
    from transformers import Sam3Model, Sam3Processor

    return Sam3Processor.from_pretrained(tiny_dir), Sam3Model.from_pretrained(tiny_dir).eval()


@pytest.fixture(scope="module")
def reference_tracker(tiny_dir):
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    return Sam3TrackerProcessor.from_pretrained(tiny_dir), Sam3TrackerModel.from_pretrained(tiny_dir).eval()


@pytest.mark.parametrize(
    "prompt",
    [
        {"text": "a dog"},
        {"text": None, "boxes": [[40, 30, 120, 90]]},
        {"text": "yellow school bus", "boxes": [[40, 30, 120, 90], [130, 60, 190, 140]], "box_labels": [1, 0]},
    ],
    ids=["text", "box", "mixed"],
)
@pytest.mark.parametrize("threshold", [0.0, 0.25])
def test_concept_bit_identical_to_transformers(loaded, features, image, reference_detector, prompt, threshold):
    """Features once + segment == Sam3Processor -> Sam3Model -> post_process_instance_segmentation."""
    processor, model = reference_detector
    kwargs = {"images": image, "text": prompt["text"], "return_tensors": "pt"}
    if "boxes" in prompt:
        kwargs["input_boxes"] = [prompt["boxes"]]
    if "box_labels" in prompt:
        kwargs["input_boxes_labels"] = [prompt["box_labels"]]
    inputs = processor(**kwargs)
    with torch.inference_mode():
        outputs = model(**inputs)
    expected = processor.post_process_instance_segmentation(
        outputs, threshold=threshold, mask_threshold=0.5, target_sizes=inputs["original_sizes"].tolist()
    )[0]
    order = torch.argsort(expected["scores"], descending=True, stable=True)
    h, w = image.shape[:2]
    expected_boxes = expected["boxes"][order].clone()
    expected_boxes[:, 0::2] = expected_boxes[:, 0::2].clamp(0, w)
    expected_boxes[:, 1::2] = expected_boxes[:, 1::2].clamp(0, h)

    result = engine.segment_concept(loaded, features, threshold=threshold, **prompt)
    assert len(result) == len(order) > 0
    assert torch.equal(result.masks, expected["masks"][order].bool())
    assert torch.equal(result.scores, expected["scores"][order])
    assert torch.equal(result.boxes, expected_boxes)


@pytest.mark.parametrize(
    "prompt",
    [
        {"points": [(60, 50)]},
        {"points": [(60, 50), (150, 100)], "point_labels": [1, 0]},
        {"box": (40, 30, 120, 90)},
        {"points": [(60, 50)], "box": (40, 30, 120, 90), "multimask": True},
    ],
    ids=["point", "pos-neg", "box", "point+box-multimask"],
)
def test_interactive_bit_identical_to_transformers(loaded, features, image, reference_tracker, prompt):
    """Shared-backbone tracker head == Sam3TrackerModel (own copy of the backbone) + processor."""
    processor, model = reference_tracker
    kwargs = {"images": image, "return_tensors": "pt"}
    if "points" in prompt:
        kwargs["input_points"] = [[[list(p) for p in prompt["points"]]]]
        kwargs["input_labels"] = [[prompt.get("point_labels", [1] * len(prompt["points"]))]]
    if "box" in prompt:
        kwargs["input_boxes"] = [[list(prompt["box"])]]
    inputs = processor(**kwargs)
    with torch.inference_mode():
        outputs = model(**inputs, multimask_output=prompt.get("multimask", False))
    # With Meta's hole filling plugged in, as the server runs it (tests/runtime/test_mask_postprocessing.py: == Meta's).
    expected_masks = processor.post_process_masks(fill_interactive_holes(outputs.pred_masks), inputs["original_sizes"])[0][0]
    scores = outputs.iou_scores[0, 0]
    order = torch.argsort(scores, descending=True, stable=True)

    result = engine.segment_interactive(loaded, features, **prompt)
    assert torch.equal(result.masks, expected_masks[order])
    assert torch.equal(result.scores, scores[order])
    assert result.masks.any()


def test_features_reuse_and_nbytes(loaded, image, features):
    expected_bytes = sum(t.numel() * t.element_size() for t in (*features.fpn, *features.tracker))
    assert features.nbytes == expected_bytes > 0
    fresh = engine.compute_image_features(loaded, image)
    for a, b in zip((*features.fpn, *features.tracker), (*fresh.fpn, *fresh.tracker)):
        assert torch.equal(a, b)
    first = engine.segment_concept(loaded, features, text="dog", threshold=0.0)
    again = engine.segment_concept(loaded, features, text="dog", threshold=0.0)
    from_fresh = engine.segment_concept(loaded, fresh, text="dog", threshold=0.0)
    assert torch.equal(first.masks, again.masks) and torch.equal(first.masks, from_fresh.masks)
    click = engine.segment_interactive(loaded, features, points=[(60, 50)])
    assert torch.equal(click.masks, engine.segment_interactive(loaded, fresh, points=[(60, 50)]).masks)

    detector_only = engine.compute_image_features(loaded, image, include_tracker=False)
    assert 0 < detector_only.nbytes < features.nbytes
    moved = features.to("cpu")
    assert moved.nbytes == features.nbytes and moved.original_size == features.original_size


def test_batched_features(loaded):
    images = [_test_image(150, 200, seed=1), _test_image(90, 120, seed=2)]
    batch = engine.compute_image_features_batch(loaded, images)
    assert [f.original_size for f in batch] == [(150, 200), (90, 120)]
    for item, image in zip(batch, images):
        single = engine.compute_image_features(loaded, image)
        assert item.nbytes == single.nbytes  # owns its slice, not the whole batch
        for a, b in zip((*item.fpn, *item.tracker), (*single.fpn, *single.tracker)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        result = engine.segment_concept(loaded, item, text="cat", threshold=0.0)
        assert result.masks.shape[1:] == image.shape[:2]
    assert engine.compute_image_features_batch(loaded, []) == []


def test_warmup_runs_every_image_path_once(tiny_dir):
    """Warmup must have run the backbone (both necks), the text encoder, the detector and the
    tracker's mask decoder, so the first request finds them compiled/initialised, and left the
    box-only prompt text encoded."""
    fresh = load_sam3(tiny_dir, None, "cpu")
    modules = {
        "backbone": fresh.detector.vision_encoder,
        "text encoder": fresh.detector.text_encoder,
        "detector decoder": fresh.detector.detr_decoder,
        "detector masks": fresh.detector.mask_decoder,
        "tracker neck": fresh.model.tracker_neck,
        "tracker masks": fresh.tracker.mask_decoder,
    }
    calls = dict.fromkeys(modules, 0)
    hooks = [
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        for name, module in modules.items()
    ]
    try:
        assert engine.warmup(fresh) is None
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == dict.fromkeys(modules, 1)
    assert list(fresh.text_cache) == [engine.VISUAL_PROMPT_TEXT]  # box-only prompts skip the text encoder
    assert not fresh.model.training


def test_tiny_checkpoint_loads_as_the_declared_tiny_model(tiny_dir):
    """What write_tiny_checkpoint writes, read back by the real loader, is tiny_video_config() with
    build_tiny_model()'s weights and a tokenizer that fits its text encoder exactly."""
    from inference.runtime.tiny import build_tiny_model
    from inference.runtime.tokenizer import bpe_vocab_size

    def comparable(value):  # the dtype and source path are recorded on load, not declared
        if isinstance(value, dict):
            return {k: comparable(v) for k, v in value.items() if k not in ("dtype", "_name_or_path")}
        return value

    loaded_model = load_sam3(tiny_dir, None, "cpu")
    vocab_size = bpe_vocab_size(tiny_dir / "bpe_simple_vocab_16e6.txt.gz")
    assert comparable(loaded_model.model.config.to_dict()) == comparable(tiny_video_config(vocab_size).to_dict())
    assert vocab_size == loaded_model.model.config.detector_config.text_config.vocab_size == len(loaded_model.tokenizer)
    assert loaded_model.resolution == 224 and loaded_model.is_tiny_random

    declared = build_tiny_model(seed=0, vocab_size=vocab_size).state_dict()
    state = loaded_model.model.state_dict()
    assert state.keys() == declared.keys()
    assert all(torch.equal(state[name], tensor) for name, tensor in declared.items())
    other_seed = build_tiny_model(seed=1, vocab_size=vocab_size).state_dict()
    assert not all(torch.equal(state[name], tensor) for name, tensor in other_seed.items())

    marker = json.loads((tiny_dir / TINY_MARKER_FILE).read_text())
    assert marker["seed"] == 0 and marker["parameters"] == loaded_model.identity["parameters"]
    assert loaded_model.tokenizer("a dog").input_ids[1:-1] == [320, loaded_model.tokenizer.convert_tokens_to_ids("dog</w>")]


# --------------------------------------------------------------------------- text prompt length


def test_text_prompt_token_limit(loaded, features):
    """The text encoder has 32 positions; a longer prompt is refused in our words, not transformers'."""
    assert engine.text_token_limit(loaded) == 32
    fits = "dog " * 30  # 30 one-token words + start and end markers = 32 tokens
    assert engine.check_text_prompt(loaded, fits) == 32
    assert len(engine.segment_concept(loaded, features, text=fits, threshold=0.0)) == 20
    with pytest.raises(engine.PromptTooLong) as refused:
        engine.segment_concept(loaded, features, text=fits + "dog", threshold=0.0)
    assert refused.value.code == "prompt_too_long" and (refused.value.tokens, refused.value.limit) == (33, 32)
    assert str(refused.value).startswith("The text prompt has 33 tokens; the text encoder reads at most 32")
    assert "max_position_embeddings" not in str(refused.value)
    assert isinstance(refused.value, ValueError)  # the worker maps the engine's ValueErrors to 400
    # Few words, many tokens: words unknown to the vocabulary split into pieces.
    with pytest.raises(engine.PromptTooLong) as refused:
        engine.segment_concept(loaded, features, text="quixotic zephyrs juxtapose xylophones", threshold=0.0)
    assert refused.value.tokens == 33


def test_video_text_prompt_token_limit(loaded):
    session = ConceptVideoSession(loaded, _video(2))
    with pytest.raises(engine.PromptTooLong):
        session.add_text_prompt("dog " * 31)
    assert session.prompts == []
    assert session.add_text_prompt("dog " * 30) == [("dog " * 30).strip()]


def test_every_word_is_at_least_one_token(loaded):
    """The web refuses a text whose words + 2 markers exceed the limit without the vocabulary; that is
    only right if no text tokenizes into fewer tokens than it has whitespace-separated words."""
    generator = np.random.default_rng(5)
    alphabet = [*"abcxyz dog,.!?'-0123456789 \t\n", "é", "e\u0301", "\u00a0", "\u2009", "\u3000", "\u200b",
                                                            "🐕", "狗", "\u0301", "\x1c", "\x85", "'s", "'ll"]
    for _ in range(500):
        text = "".join(generator.choice(alphabet, size=int(generator.integers(1, 60))))
        assert len(loaded.tokenizer(text, verbose=False).input_ids) >= len(text.split()) + 2, repr(text)


# --------------------------------------------------------------------------- video


def _video(n: int = 4, height: int = 96, width: int = 128) -> list[np.ndarray]:
    base = _test_image(height, width, seed=3)
    return [np.roll(base, shift=2 * i, axis=1) for i in range(n)]


@pytest.fixture
def video_loaded(tiny_dir):
    """A separate model instance whose detection thresholds admit a few random detections."""
    loaded = load_sam3(tiny_dir, None, "cpu")
    features = engine.compute_image_features(loaded, _video(1)[0], include_tracker=False)
    scores = engine.segment_concept(loaded, features, text="dog", threshold=0.0).scores
    threshold = float(scores[3])  # about three detections per frame
    model = loaded.model
    model.score_threshold_detection = model.new_det_thresh = threshold
    return loaded


def test_lazy_frames_match_transformers_video_preprocessing(loaded):
    frames = _video(3)
    lazy = LazyFrames(loaded, frames)
    expected = loaded.video_processor.video_processor(videos=[np.stack(frames)], return_tensors="pt")
    assert len(lazy) == 3 and lazy.size == (96, 128)
    for i in range(3):
        assert torch.equal(lazy[i], expected["pixel_values_videos"][0][i])
    with pytest.raises(ValueError):
        LazyFrames(loaded, [])


def test_concept_video_session(video_loaded):
    frames = _video(4)
    session = ConceptVideoSession(video_loaded, frames)
    with pytest.raises(ValueError):
        next(session.propagate())
    assert session.add_text_prompt("dog") == ["dog"]
    results = list(session.propagate())
    assert [i for i, _ in results] == [0, 1, 2, 3]
    for _, frame in results:
        assert frame.masks.shape[1:] == (96, 128) and frame.masks.dtype == torch.bool
        assert frame.object_ids.shape == frame.scores.shape and set(frame.labels) <= {"dog"}
    tracked = set(session.object_ids)
    assert tracked

    # A new prompt restarts tracking so both prompts cover the whole video.
    assert session.add_text_prompt("cat") == ["dog", "cat"]
    assert session.object_ids == []
    results = list(session.propagate())
    assert [i for i, _ in results] == [0, 1, 2, 3]
    assert {"cat", "dog"} <= set(results[0][1].labels)

    victim = session.object_ids[0]
    session.remove_object(victim)
    assert victim not in session.object_ids
    with pytest.raises(KeyError):
        session.remove_object(10_000)

    backward = list(session.propagate(start_frame=3, reverse=True))
    assert [i for i, _ in backward] == [2, 1, 0]
    session.reset()
    assert session.prompts == [] and session.object_ids == []


def test_interactive_video_session(loaded):
    frames = _video(5)
    session = InteractiveVideoSession(loaded, frames)
    first = session.add_prompt(2, 7, points=[(40, 40)])
    assert first.object_ids.tolist() == [7] and first.masks.shape == (1, 96, 128)
    both = session.add_prompt(2, 9, box=(60, 20, 120, 90))
    assert both.object_ids.tolist() == [7, 9]
    refined = session.add_prompt(2, 7, points=[(80, 60)], point_labels=[0], clear_old=False)
    assert refined.object_ids.tolist() == [7, 9]

    forward = list(session.propagate())
    assert [i for i, _ in forward] == [2, 3, 4]
    assert all(r.object_ids.tolist() == [7, 9] and r.masks.shape == (2, 96, 128) for _, r in forward)
    backward = list(session.propagate(start_frame=2, reverse=True))
    assert [i for i, _ in backward] == [2, 1, 0]

    session.remove_object(7)
    assert session.object_ids == [9]
    assert [r.object_ids.tolist() for _, r in session.propagate(start_frame=0)] == [[9]] * 5

    seeded = session.add_mask(4, 11, forward[-1][1].masks[1].numpy())
    assert seeded.object_ids.tolist() == [9, 11]
    with pytest.raises(ValueError):
        session.add_prompt(99, 1, points=[(1, 1)])
    session.reset()
    assert session.object_ids == []


def test_temporal_disambiguation_switch(video_loaded):
    from inference.runtime.video import set_temporal_disambiguation

    model = video_loaded.model
    set_temporal_disambiguation(video_loaded, False)
    assert (model.hotstart_delay, model.recondition_every_nth_frame) == (0, 0)
    session = ConceptVideoSession(video_loaded, _video(3))
    session.add_text_prompt("dog")
    assert [i for i, _ in session.propagate()] == [0, 1, 2]
    set_temporal_disambiguation(video_loaded, True)
    assert (model.hotstart_delay, model.hotstart_unmatch_thresh) == (15, 8)
