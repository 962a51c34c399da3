"""The synthetic world is deterministic and meets the spec the test bed relies on."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from accelgate.testbed import text, world


def test_same_seed_same_scene_and_bytes():
    for i in range(20):
        a, b = world.scene_at(3, i), world.scene_at(3, i)
        assert a == b
        for size in world.RESOLUTIONS:
            assert world.render(a, size).tobytes() == world.render(b, size).tobytes()
    assert world.scene_at(3, 0) != world.scene_at(4, 0)


def test_vocabulary_sizes():
    assert len(world.SHAPES) >= 6 and len(world.COLOURS) >= 8 and len(world.POSITIONS) == 9
    rgb = np.array(list(world.COLOURS.values()), dtype=float)
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)]
    assert min(distances) > 60, "object colours must stay well separated (RGB distance)"
    for colour in rgb:  # and distinct from every background
        assert min(np.linalg.norm(colour - np.array(bg)) for bg in world.BACKGROUNDS.values()) > 60


def test_shapes_stay_distinct_at_32px():
    """Each shape, drawn medium in the centre, differs from every other by many pixels."""
    base = world.Scene((world.Obj("circle", "red", "center", "small"),), "grey", "plain")
    masks = {}
    for shape in world.SHAPES:
        obj = world.Obj(shape, "red", "center", "small", size_frac=0.0)
        img = world.render(world.Scene((obj,), "grey", "plain"), 32).astype(int)
        masks[shape] = np.abs(img - world.render(world.Scene((), "grey", "plain"), 32)).sum(-1) > 96
    for a, b in itertools.combinations(world.SHAPES, 2):
        assert (masks[a] ^ masks[b]).sum() >= 12, f"{a} and {b} look alike at 32 px"
    assert base.caption() == "a small red circle in the center on a grey background"


def test_smallest_object_and_layout():
    for i in range(300):
        scene = world.scene_at(5, i)
        assert len(scene.objects) in (1, 2)
        for obj in scene.objects:
            cx, cy, side = world.object_box(obj, 32)
            assert side >= 10 and side / 2 <= cx <= 32 - side / 2 and side / 2 <= cy <= 32 - side / 2
        if len(scene.objects) == 2:
            (r1, c1), (r2, c2) = (divmod(world.POSITIONS.index(o.position), 3) for o in scene.objects)
            assert max(abs(r1 - r2), abs(c1 - c2)) == 2
    two = np.mean([len(world.scene_at(6, i).objects) == 2 for i in range(600)])
    assert 0.15 < two <= 1 / 3
    kinds = {world.scene_at(6, i).kind for i in range(50)}
    assert kinds == {"plain", "gradient"}


def test_captions_labels_and_edits():
    scene = world.scene_at(7, 1, two_objects=False)
    words = scene.caption().split()
    assert scene.main.colour in words and scene.main.shape in words and scene.background in words
    assert world.class_attributes(scene.class_label()) == (scene.main.shape, scene.main.colour)
    assert 0 <= scene.class_label() < world.NUM_CLASSES
    for kind in world.EDIT_KINDS:
        edit = world.edit_at(7, 2, kind)
        changed = [f for f in ("shape", "colour", "size") if getattr(edit.source.main, f) != getattr(edit.target.main, f)]
        changed += ["background"] if edit.source.background != edit.target.background else []
        assert changed == [kind] and edit.instruction.split()[-1] in world.words()
        assert edit.source.main.jitter == edit.target.main.jitter  # nuisance kept


def test_held_out_combinations_never_train():
    assert not any(world.is_held_out(world.scene_at(1, i)) for i in range(2000))
    held = np.mean([world.is_held_out(world.scene_at(1, i, two_objects=False, train=False)) for i in range(4000)])
    assert 0.03 < held < 0.1


def test_evaluation_items_are_held_out_and_fixed():
    items = world.evaluation_items(16)
    assert items == world.evaluation_items(16)
    assert all(world.is_held_out(it.scene) and it.caption == it.scene.caption() for it in items)
    assert len({it.caption for it in items}) == 16
    assert [it.edit.kind for it in items[:4]] == list(world.EDIT_KINDS)
    train = {world.scene_at(0, i).caption() for i in range(3000)}
    assert not train & {it.caption for it in items}


def test_every_world_word_is_one_token_and_open_clip_agrees(tmp_path: Path):
    tokenizer = text.clip_tokenizer()
    for word in world.words():
        assert len(tokenizer.tokenize(word)) == 1, word
    captions = [world.scene_at(0, i).caption() for i in range(50)] + ["make the ring blue", "an unknown zebra"]
    hf = tokenizer(captions, padding="max_length", max_length=text.CLIP_MAX_LENGTH, truncation=True).input_ids
    oc = text.open_clip_tokenizer(text.write_open_clip_bpe(tmp_path / "bpe.txt.gz"))(captions)
    for row_hf, row_oc in zip(hf, oc.tolist()):
        end = row_oc.index(tokenizer.eos_token_id) + 1
        assert row_hf[:end] == row_oc[:end]
    t5 = text.t5_tokenizer()
    assert t5.convert_ids_to_tokens(t5("a red ring").input_ids) == ["▁a", "▁red", "▁ring", "</s>"]


@pytest.mark.parametrize("size", world.RESOLUTIONS)
def test_render_shape_and_range(size):
    img = world.render(world.scene_at(0, 0), size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
