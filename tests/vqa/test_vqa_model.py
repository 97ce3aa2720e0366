"""VQANet contract (fx-traceable, CAM layer, independent paths) and the committed weights."""
import json
import shutil

import numpy as np
import pytest
import torch
import torch.fx

from camlib.vqa import (ASSET_DIR, CAM_LAYER, CODE_VERSION, answer_names, build_model,
                        encode_question, load_vqa, scenes)
from camlib.vqa.model import VQANet



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model().eval()


def _batch(n=3, seed=0):
    images = scenes.to_tensor(np.stack([scenes.generate_scene(seed + i).image for i in range(n)]))
    texts = ["what colour is the circle?", "how many red objects are there?",
             "what colour is the object left of the blue square?"][:n]
    questions = torch.from_numpy(scenes.pad_tokens([scenes.tokenize(t).tolist() for t in texts]))
    return images, questions


def test_forward_shapes_and_cam_layer(model):
    images, questions = _batch()
    captured = {}
    layer = dict(model.named_modules())[CAM_LAYER]
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("cam", o))
    logits = model(images, questions)
    handle.remove()
    assert logits.shape == (3, len(scenes.ANSWERS))
    assert CAM_LAYER == "encoder" and isinstance(model.encoder[-1], torch.nn.ReLU)
    assert captured["cam"].shape == (3, 64, 8, 8) == (3, *model.cam_shape)
    assert (captured["cam"] >= 0).all()
    # the tail is a function of the CAM activations and the question only
    tail = model.answer(captured["cam"], model.encode_question(questions))
    assert torch.allclose(tail, logits)


def test_fx_traceable_and_cam_node_separates_image_from_output(model):
    traced = torch.fx.symbolic_trace(model)
    images, questions = _batch()
    assert torch.allclose(traced(images, questions), model(images, questions))
    nodes = {n.name: n for n in traced.graph.nodes}
    cam_node = [n for n in traced.graph.nodes
                if n.op == "call_module" and n.target == f"encoder.{len(model.encoder) - 1}"]
    assert len(cam_node) == 1

    def depends_on_image(node, blocked):
        stack, seen = [node], set()
        while stack:
            n = stack.pop()
            if n in seen or n is blocked:
                continue
            seen.add(n)
            if n.name == "image":
                return True
            stack.extend(n.all_input_nodes)
        return False

    output = nodes["output"]
    assert depends_on_image(output, blocked=None)
    # every path from the image to the output passes through the CAM node
    assert not depends_on_image(output, blocked=cam_node[0])
    # the question path never touches the image
    q_nodes = [n for n in traced.graph.nodes
               if n.op == "call_module" and n.target.startswith("question_fc")]
    assert q_nodes and not any(depends_on_image(n, blocked=None) for n in q_nodes)


def test_question_path_independent_of_image(model):
    images, questions = _batch()
    captured = []
    handle = model.question_fc.register_forward_hook(lambda m, i, o: captured.append(o.clone()))
    out_a = model(images, questions)
    out_b = model(torch.rand_like(images), questions)
    handle.remove()
    assert torch.equal(captured[0], captured[1])
    assert not torch.allclose(out_a, out_b)


def test_padding_does_not_change_question_embedding(model):
    ids = scenes.tokenize("is there a red circle?")
    short, long_ = torch.zeros(1, len(ids), dtype=torch.long), torch.zeros(1, 12, dtype=torch.long)
    short[0], long_[0, :len(ids)] = ids, ids
    assert torch.allclose(model.encode_question(short), model.encode_question(long_), atol=1e-6)


# ------------------------------------------------------------------ committed weights
@pytest.fixture(scope="module")
def trained():
    return load_vqa()


def test_weights_load_frozen_and_documented(trained):
    model, meta = trained
    assert isinstance(model, VQANet) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert meta["code_version"] == CODE_VERSION and meta["cam_layer"] == CAM_LAYER
    assert meta["cam_shape"] == list(model.cam_shape)
    assert answer_names(meta) == list(scenes.ANSWERS)
    assert set(meta["accuracy"]["per_family"]) == set(scenes.FAMILIES)
    assert (ASSET_DIR / "vqa_shapes.pt").stat().st_size < 8 * 2 ** 20


def test_weights_answer_held_out_questions(trained):
    """The first 300 held-out questions are answered about as well as reported."""
    from camlib.vqa.train import fixed_heldout_set, predict
    model, meta = trained
    data = fixed_heldout_set()
    assert len(data.answers) == 300 and set(data.families.tolist()) == set(range(5))
    preds = predict(model, data)
    acc = 100.0 * float((preds == data.answers).mean())
    assert acc >= meta["accuracy"]["overall"] - 5.0, (acc, meta["accuracy"]["overall"])
    assert abs(acc - meta["first300_accuracy"]) <= 1.0
    # the same through the public single-question interface
    scene = scenes.generate_scene(meta["test_seed_base"])
    q = scenes.generate_questions(scene, np.random.default_rng((meta["test_question_seed"],
                                                                meta["test_seed_base"])))[0]
    logits = model(scenes.to_tensor(scene.image), encode_question(q.text, meta))
    assert logits.shape == (1, len(scenes.ANSWERS))
    assert answer_names(meta)[int(logits.argmax())] == scenes.ANSWERS[preds[0]]


def test_mismatched_weights_raise_clear_error(tmp_path):
    from camlib.vqa import VQAWeightsError
    shutil.copy(ASSET_DIR / "vqa_shapes.pt", tmp_path / "vqa_shapes.pt")
    meta = json.loads((ASSET_DIR / "vqa_shapes.json").read_text())
    (tmp_path / "vqa_shapes.json").write_text(json.dumps({**meta, "code_version": "old"}))
    with pytest.raises(VQAWeightsError, match="code version 'old'"):
        load_vqa(directory=tmp_path)
    hp = {**meta["hparams"], "fused_dim": meta["hparams"]["fused_dim"] // 2}
    (tmp_path / "vqa_shapes.json").write_text(json.dumps({**meta, "hparams": hp}))
    with pytest.raises(VQAWeightsError, match="does not match VQANet"):
        load_vqa(directory=tmp_path)
    with pytest.raises(FileNotFoundError):
        load_vqa(directory=tmp_path / "missing")


def test_encode_question_errors():
    with pytest.raises(ValueError, match="vocabulary"):
        encode_question("what colour is the hexagon?")
    with pytest.raises(ValueError, match="empty"):
        encode_question("")
    assert encode_question("how many circles are there?").shape == (1, 5)
