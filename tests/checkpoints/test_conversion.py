"""Meta's sam3.pt -> Hugging Face layout: bit-exact on the tiny model, cached, strict about what it accepts.

The tiny SAM3 is written in Meta's layout (the inverse of the conversion table) and loaded through
the real loader, which converts it; its weights and its masks on real photos and a short video
must equal the Hugging Face-layout original bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.runtime import engine
from inference.runtime.checkpoints import FORMAT_VERSION, MANIFEST_FILE, cached_conversion, convert_meta_checkpoint
from inference.runtime.loader import LoadedSam3, ModelLoadError, load_sam3
from inference.runtime.tiny import BPE_FILENAME
from inference.runtime.video import ConceptVideoSession, InteractiveVideoSession

from .conftest import panning_video, photos, write_meta_checkpoint


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path, cache: Path) -> LoadedSam3:
    return load_sam3(path, path.parent / BPE_FILENAME if path.is_file() else None, "cpu", cache_dir=cache)


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> LoadedSam3:
    return load_sam3(reference_dir, None, "cpu")


@pytest.fixture(scope="module")
def converted(meta_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedSam3:
    return _load(meta_checkpoint, tmp_path_factory.mktemp("cache"))


def test_converted_weights_equal_the_original(reference: LoadedSam3, converted: LoadedSam3, meta_checkpoint: Path) -> None:
    original, result = reference.model.state_dict(), converted.model.state_dict()
    assert original.keys() == result.keys()
    assert [k for k in original if not torch.equal(original[k], result[k])] == []
    manifest = json.loads((converted.checkpoint_dir / MANIFEST_FILE).read_text())
    assert manifest["sha256"] == converted.checkpoint_sha256 == _sha256(meta_checkpoint)
    assert sorted({k.rsplit(".", 2)[-2] if "points_" in k else k.rsplit(".", 1)[-1] for k in manifest["dropped"]}) == [
        "freqs_cis", "points_direct_project", "points_pool_project", "points_pos_enc_project"]
    assert converted.identity["name"] == "sam3.pt" and converted.identity["format"] == "meta (converted)"
    assert converted.identity["sha256"] == _sha256(meta_checkpoint)
    assert reference.identity["sha256"] == _sha256(reference.checkpoint_dir / "model.safetensors")


def test_masks_on_real_photos_are_bit_identical(reference: LoadedSam3, converted: LoadedSam3) -> None:
    for name, image in photos().items():
        height, width = image.shape[:2]
        outputs = []
        for loaded in (reference, converted):
            features = engine.compute_image_features(loaded, image)
            concept = engine.segment_concept(loaded, features, text="cat", threshold=0.0)
            boxed = engine.segment_concept(loaded, features, text=None, boxes=[(10, 10, width // 2, height // 2)],
                                           box_labels=[1], threshold=0.0)
            click = engine.segment_interactive(loaded, features, points=[(width / 2, height / 2)], multimask=True)
            outputs.append((concept, boxed, click))
        for expected, actual in zip(*outputs, strict=True):
            assert len(expected) > 0, name
            assert torch.equal(expected.masks, actual.masks) and torch.equal(expected.scores, actual.scores), name


def test_video_tracking_is_bit_identical(reference: LoadedSam3, converted: LoadedSam3) -> None:
    frames = panning_video()
    features = engine.compute_image_features(reference, frames[0], include_tracker=False)
    threshold = float(engine.segment_concept(reference, features, text="person", threshold=0.0).scores[2])
    runs = []
    for loaded in (reference, converted):
        loaded.model.score_threshold_detection = loaded.model.new_det_thresh = threshold
        concept = ConceptVideoSession(loaded, frames)
        concept.add_text_prompt("person")
        interactive = InteractiveVideoSession(loaded, frames)
        interactive.add_prompt(0, 1, points=[(80, 60)])
        runs.append((list(concept.propagate()), list(interactive.propagate())))
    for expected, actual in zip(*runs, strict=True):
        assert [i for i, _ in expected] == [i for i, _ in actual] == list(range(len(frames)))
        assert any(len(frame.object_ids) for _, frame in expected)
        for (_, want), (_, got) in zip(expected, actual, strict=True):
            assert torch.equal(want.object_ids, got.object_ids) and torch.equal(want.masks, got.masks)


def test_conversion_is_cached_by_sha256_and_reused(meta_checkpoint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stale = cache / f".{_sha256(meta_checkpoint)}.v{FORMAT_VERSION}.partial-killed"
    stale.mkdir(parents=True)  # what a conversion killed half-way leaves
    directory, digest = cached_conversion(meta_checkpoint, cache)
    assert directory == cache / f"{digest}.v{FORMAT_VERSION}" and digest == _sha256(meta_checkpoint)
    assert not stale.exists() and not [p for p in cache.iterdir() if ".partial-" in p.name]
    written = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "video_preprocessor_config.json", MANIFEST_FILE} <= set(written)
    assert json.loads((directory / "preprocessor_config.json").read_text())["mask_size"] == {"height": 288, "width": 288}

    again, _ = cached_conversion(meta_checkpoint, cache)  # reused: nothing rewritten
    assert again == directory and {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == written
    hashes = json.loads((cache / "sha256-cache.json").read_text())
    assert list(hashes.values()) == [digest]

    # The hash is remembered by (path, size, mtime): a changed file is hashed and converted anew.
    copy = tmp_path / "sam3.pt"
    copy.write_bytes(meta_checkpoint.read_bytes())
    os.utime(copy, ns=(1, 1))
    assert cached_conversion(copy, cache)[0] == directory
    with copy.open("ab") as file:
        file.write(b"\0")  # torch ignores bytes after the zip's end, the hash does not
    other, other_digest = cached_conversion(copy, cache)
    assert other != directory and other_digest == _sha256(copy)


def test_sharded_conversion_loads_the_same(reference_dir: Path, meta_checkpoint: Path, reference: LoadedSam3,
                                           tmp_path: Path) -> None:
    result = convert_meta_checkpoint(meta_checkpoint, tmp_path / "out", shard_bytes=4 << 20)
    shards = sorted(p.name for p in result.directory.glob("model-*.safetensors"))
    assert len(shards) > 1 and (result.directory / "model.safetensors.index.json").is_file()
    loaded = load_sam3(result.directory, reference_dir / BPE_FILENAME, "cpu")
    assert loaded.checkpoint_sha256 == _sha256(meta_checkpoint)  # the source's, from the manifest
    expected = reference.model.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in loaded.model.state_dict().items())
    with pytest.raises(ValueError, match="already exists"):
        convert_meta_checkpoint(meta_checkpoint, result.directory)


def _expect(path: Path, cache: Path, *fragments: str) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_sam3(path, None, "cpu", cache_dir=cache)
    reason = info.value.reason
    assert "Traceback" not in reason
    for fragment in fragments:
        assert fragment in reason, reason
    assert not [p for p in cache.glob("*") if p.is_dir()], "a failed conversion left a directory behind"
    return reason


def test_sam31_multiplex_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sam3.1_multiplex.pt"
    torch.save({"detector.backbone.vision_backbone.trunk.pos_embed": torch.zeros(1, 5, 4),
                "tracker.model.sam_mask_decoder.iou_token.weight": torch.zeros(1, 4)}, path)
    _expect(path, tmp_path / "cache", "SAM 3.1 multiplex", "transformers has no SAM 3.1", "supported: Meta's SAM 3")
    renamed = tmp_path / "weights.pt"  # recognised by its keys, whatever the file is called
    path.rename(renamed)
    _expect(renamed, tmp_path / "cache", "SAM 3.1 multiplex")


def test_unknown_files_are_refused_naming_what_was_found(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, other)
    _expect(other, cache, "not a SAM 3 checkpoint", "conv1, fc", "supported")
    text = tmp_path / "sam3.pt"
    text.write_text("not a checkpoint")
    _expect(text, cache, "sam3.pt", "not a PyTorch checkpoint", "sam3.pt alone")
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    _expect(listing, cache, "holds a list")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    _expect(broken, cache, "not a readable PyTorch checkpoint")


def test_unknown_and_missing_keys_fail_with_the_list(reference_dir: Path, tmp_path: Path) -> None:
    bad = write_meta_checkpoint(
        reference_dir, tmp_path / "sam3.pt",
        extra={"detector.backbone.vision_backbone.trunk.extra_gate": torch.zeros(3)},
        without=("tracker.obj_ptr_tpos_proj.weight",),
    )
    reason = _expect(bad, tmp_path / "cache", "1 unknown keys in the checkpoint: detector.backbone.vision_backbone.trunk.extra_gate",
                     "1 model keys the checkpoint does not fill: tracker_model.temporal_positional_encoding_projection_layer.weight")
    assert "shape" not in reason


def test_a_file_of_another_size_needs_its_config(reference_dir: Path, tmp_path: Path) -> None:
    # Without an embedded config the published architecture is assumed: the tiny weights do not fit it.
    bare = write_meta_checkpoint(reference_dir, tmp_path / "sam3.pt", embed_config=False)
    _expect(bare, tmp_path / "cache", "shape mismatches", "model keys the checkpoint does not fill")


def test_meta_checkpoint_needs_a_cache_dir(meta_checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match="no conversion cache directory"):
        load_sam3(meta_checkpoint, None, "cpu")


def test_hugging_face_files_beside_sam3_pt_are_used_as_they_are(reference_dir: Path, meta_checkpoint: Path,
                                                                tmp_path: Path) -> None:
    # The facebook/sam3 download holds sam3.pt and the Hugging Face files side by side: no conversion.
    import shutil

    both = tmp_path / "facebook-sam3"
    shutil.copytree(reference_dir, both)
    shutil.copy(meta_checkpoint, both / "sam3.pt")
    loaded = load_sam3(both / "sam3.pt", None, "cpu", cache_dir=tmp_path / "cache")
    assert loaded.checkpoint_dir == both and loaded.identity["format"] == "huggingface"
    assert not list((tmp_path / "cache").glob("*.v*"))


def test_convert_checkpoint_command(meta_checkpoint: Path, reference: LoadedSam3, tmp_path: Path, capsys) -> None:
    destination = tmp_path / "converted"
    call_command("convert_checkpoint", str(meta_checkpoint), str(destination), "--shard-size-mb", "8")
    assert f"sha256 {_sha256(meta_checkpoint)}" in capsys.readouterr().out
    loaded = load_sam3(destination, meta_checkpoint.parent / BPE_FILENAME, "cpu")
    expected = reference.model.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in loaded.model.state_dict().items())
    with pytest.raises(CommandError, match="already exists"):
        call_command("convert_checkpoint", str(meta_checkpoint), str(destination))
    with pytest.raises(CommandError, match="does not exist"):
        call_command("convert_checkpoint", str(tmp_path / "missing.pt"), str(tmp_path / "x"))


def test_model_info_command(meta_checkpoint: Path, tmp_path: Path, capsys, settings) -> None:
    settings.CONFIG = settings.CONFIG.model_copy(update={
        "data_dir": tmp_path / "var", "sam3_bpe_path": meta_checkpoint.parent / BPE_FILENAME,
        "image_model_confidence_threshold": 0.0,
    })
    call_command("model_info", "--checkpoint", str(meta_checkpoint), "--device", "cpu", "--json")
    info = json.loads(capsys.readouterr().out)
    assert info["sha256"] == _sha256(meta_checkpoint) and info["format"] == "meta (converted)"
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["resolution"] == 224
    assert info["parameters"] > 1_000_000 and info["path"].startswith(str(tmp_path / "var" / "checkpoints"))
    test = info["self_test"]
    assert test["text_instances"] > 0 and 0 <= test["click_score"] <= 1
    assert all(test[k] > 0 for k in ("backbone_ms", "text_prompt_ms", "click_ms"))

    call_command("model_info", "--checkpoint", str(meta_checkpoint), "--device", "cpu", "--no-self-test")
    text = capsys.readouterr().out
    assert "sha256: " + _sha256(meta_checkpoint) in text and "self_test" not in text
    with pytest.raises(CommandError, match="not found"):
        call_command("model_info", "--checkpoint", str(tmp_path / "nowhere.pt"), "--device", "cpu")
