"""The Shapes-VQA model explained with every CAM method, the question held fixed (committed weights)."""

import numpy as np
import pytest
import torch

import camlib
from camlib import metrics
from camlib.vqa import scenes
from tests.numerics import alpha_scale, assert_close_scaled, chain, fan_ins

METHODS = [m for m in camlib.list_methods() if m != "cam"]  # CAM needs a linear tail (tested below)
HELD_OUT = (1_000_000_003, 1_000_000_024)


@pytest.fixture(scope="module")
def model():
    return camlib.load_model("vqa_shapes", device="cpu")


@pytest.fixture(scope="module")
def hand_scene():
    """red circle (top left), green triangle (top right), blue square (bottom right)."""
    return scenes.make_scene([("circle", "red", (28, 40), 11), ("triangle", "green", (90, 30), 10),
                              ("square", "blue", (96, 88), 11)])


def held_out_cases():
    cases = []
    for seed in HELD_OUT:
        scene = scenes.generate_scene(seed)
        cases += [(scene, q) for q in scenes.generate_questions(scene)]
    return cases


def tail_difference(model, image, text, target):
    """(F^c(A; q) − F^c(0; q), the magnitude of the values it is a difference of, the tail's
    chain), from the split at the CAM layer, and checked against VQANet's own halves."""
    split = model.split("encoder")
    tokens = model.question_tokens(text)
    net = model.module
    with torch.inference_mode():
        activations, *fixed = split.head(model.normalize(image), tokens)
        outputs = split.tail(activations, *fixed)[0], split.tail(torch.zeros_like(activations), *fixed)[0]
        q = net.encode_question(tokens)
        a = net.encoder(image)
        direct = net.answer(a, q)[0, target] - net.answer(torch.zeros_like(a), q)[0, target]
    # A difference of two tail outputs: twice the tail's chain, of the outputs' size (all answers:
    # the terms of its last layer).
    magnitude = float(torch.cat(outputs).abs().max())
    rel = chain(*fan_ins(split.tail, activations, *fixed))
    delta = outputs[0][target] - outputs[1][target]
    assert_close_scaled(delta, direct, magnitude, 2 * rel, "F(A) - F(0) by the split and by VQANet")
    return float(delta), magnitude, rel


def test_vocabulary_comes_from_the_metadata(model):
    assert "vocab" in model.meta
    assert model.vocabulary == list(model.meta["vocab"]) == list(scenes.VOCAB)
    assert model.class_names == list(scenes.ANSWERS)


@pytest.mark.numerics
def test_liftcam_local_accuracy_with_the_question_fixed(model):
    checked = 0
    for scene, question in held_out_cases():
        image = scenes.to_tensor(scene.image)
        for target in (None, question.answer_id, scenes.ANSWERS.index("no")):
            exp = camlib.explain(model, image, "liftcam", target=target, question=question.text)
            c = int(exp.target[0])
            delta, magnitude, rel = tail_difference(model, image, question.text, c)
            alpha = exp.coefficients[0].double()
            total = float(alpha.sum())
            # Σα (K contributions through the tail) against the difference of two tail outputs:
            # twice the tail's chain, of the outputs' and of Σ|α|'s size.
            k = alpha.numel()
            scale = max(magnitude, float(alpha.abs().sum()))
            assert_close_scaled(total, delta, scale, 2 * rel + chain(k), f"Σα - ΔF: {question.text} ({c})")
            # the engine's own record agrees: its float32 sum of the K α's, its two tail outputs
            recorded_total, recorded_delta = (float(v[0]) for v in exp.info["local_accuracy"])
            assert_close_scaled(recorded_total, total, float(alpha.abs().sum()), chain(k), "recorded Σα")
            assert_close_scaled(recorded_delta, delta, magnitude, 2 * rel, "recorded ΔF")
            checked += 1
    assert checked >= 15


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_is_finite(model, method):
    scene = scenes.generate_scene(HELD_OUT[1])
    question = scenes.generate_questions(scene)[0]
    options = {"permutations": 20} if method == "shapcam" else {}
    exp = camlib.explain(model, scenes.to_tensor(scene.image)[0], method, question=question.text, **options)
    assert exp.coefficients.shape == (64,)
    assert torch.isfinite(exp.coefficients).all()
    assert exp.saliency.shape == (scenes.IMAGE_SIZE, scenes.IMAGE_SIZE)
    assert torch.isfinite(exp.saliency).all() and exp.saliency.min() >= 0 and exp.saliency.max() <= 1
    assert not bool(exp.constant)
    assert model.class_names[int(exp.target)] == question.answer  # the model is right on this scene


def test_cam_needs_a_linear_tail(model):
    scene = scenes.generate_scene(HELD_OUT[0])
    with pytest.raises(ValueError, match="linear"):
        camlib.explain(model, scenes.to_tensor(scene.image), "cam", question="how many circles are there?")


def test_target_a_chosen_answer(model, hand_scene):
    image = scenes.to_tensor(hand_scene.image)
    text = "what colour is the circle?"
    predicted = camlib.explain(model, image, "liftcam", question=text)
    assert model.class_names[int(predicted.target[0])] == "red"
    for target in ("blue", scenes.ANSWERS.index("blue")):
        exp = camlib.explain(model, image, "gradcam", target=target, question=text)
        assert model.class_names[int(exp.target[0])] == "blue"
    blue = camlib.explain(model, image, "liftcam", target="blue", question=text)
    assert int(blue.target[0]) == scenes.ANSWERS.index("blue")
    torch.testing.assert_close(blue.logits, predicted.logits)  # same input, another answer explained
    assert float(metrics.cosine_similarity(blue.coefficients, predicted.coefficients)[0]) < 0.9
    with pytest.raises(ValueError, match="unknown class name"):
        camlib.explain(model, image, "gradcam", target="purple", question=text)


@pytest.mark.parametrize("bad", ["", "   ", "?", "what colour is the banana?", "is there a red circle??",
                                 "how many objects are there ? please"])
def test_bad_questions_raise_listing_the_vocabulary(model, hand_scene, bad):
    image = scenes.to_tensor(hand_scene.image)
    with pytest.raises(ValueError, match="vocabulary") as info:
        camlib.explain(model, image, "liftcam", question=bad)
    assert "magenta" in str(info.value)  # the list itself, not just the word
    with pytest.raises(ValueError, match="vocabulary"):
        model.question_tokens(bad)


def test_bad_question_inputs(model, hand_scene):
    image = scenes.to_tensor(hand_scene.image)
    with pytest.raises(ValueError, match="question="):
        camlib.explain(model, image, "liftcam")
    for tokens in (torch.tensor([[1, 2, 99]]), torch.tensor([[0, 0]]), torch.tensor([[-1]])):
        with pytest.raises(ValueError, match="vocabulary"):
            camlib.explain(model, image, "liftcam", question=tokens)
    with pytest.raises(ValueError, match="padding"):
        camlib.explain(model, image, "liftcam", question=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="vocabulary"):
        camlib.explain(model, image, "liftcam", question=42)
    # token ids (right-padded) and text give the same explanation
    ids = torch.cat([scenes.tokenize("what colour is the circle"), torch.zeros(3, dtype=torch.long)])
    a = camlib.explain(model, image, "liftcam", question=ids)
    b = camlib.explain(model, image, "liftcam", question="What colour is the circle?")
    torch.testing.assert_close(a.coefficients, b.coefficients)


@pytest.mark.parametrize("method", ["liftcam", "shapcam"])
def test_the_question_changes_the_answer_and_the_explanation(model, hand_scene, method):
    """Same image, three questions about three objects: three answers, and the map's energy is
    largest on the object asked about (its exact mask)."""
    image = scenes.to_tensor(hand_scene.image)
    masks = torch.from_numpy(np.stack([o.mask for o in hand_scene.objects]))
    cases = [("what colour is the circle?", "red", 0), ("what shape is the green object?", "triangle", 1),
             ("what colour is the square?", "blue", 2)]
    coefficients = []
    for text, answer, obj in cases:
        options = {"permutations": 200} if method == "shapcam" else {}
        exp = camlib.explain(model, image, method, question=text, **options)
        assert model.class_names[int(exp.target[0])] == answer
        energy = metrics.energy_in_mask(exp.saliency.expand(3, -1, -1), masks)
        assert int(energy.argmax()) == obj, (text, energy.tolist())
        assert float(energy[obj]) > 2 * float(masks[obj].float().mean())  # well above a uniform map
        coefficients.append(exp.coefficients[0])
    for i in range(3):
        for j in range(i):
            assert float(metrics.cosine_similarity(coefficients[i], coefficients[j])) < 0.9


@pytest.mark.numerics
def test_batch_of_scenes_with_one_question(model):
    images = scenes.to_tensor(np.stack([scenes.generate_scene(s).image for s in HELD_OUT]))
    text = "how many circles are there?"
    batch = camlib.explain(model, images, "liftcam", question=text)
    # The whole network (encoder and answer) in batches of other sizes: twice its chain, of max |α|
    # per image (and of max |logits| for the logits).
    tokens = model.question_tokens(text)
    rel = 2 * chain(*fan_ins(model.module, model.normalize(images[:1]), tokens))
    scale = alpha_scale("liftcam", batch)
    for i in range(2):
        single = camlib.explain(model, images[i], "liftcam", question=text)
        assert_close_scaled(single.coefficients.reshape(-1), batch.coefficients[i], scale[i], rel, f"image {i}")
    # logits_fn holds the question fixed for the metrics
    fn = model.logits_fn(tokens)
    assert_close_scaled(fn(images), batch.logits, batch.logits.abs().amax(1, keepdim=True), rel, "logits_fn")


@pytest.mark.parametrize("typed, canonical", [
    ("What color is the circle?", "what colour is the circle"),
    ("what colour is the circle ?", "what colour is the circle"),
    ("  WHAT   COLOR IS THE CIRCLE  ", "what colour is the circle"),
    ("what colour is the object to the left of the red square?", "what colour is the object left of the red square"),
    ("what's the colour of the circle", "what is the colour of the circle"),
    ("is there a red circle, or not?", "is there a red circle or not"),
])
def test_common_spellings_are_accepted(model, typed, canonical):
    """What a student types reaches the templates' words: the same tokens as the canonical text."""
    from camlib.vqa.explainable import canonical_question

    assert canonical_question(typed) == canonical
    if all(w in model.vocabulary for w in canonical.split()):
        assert model.question_tokens(typed).tolist() == [scenes.tokenize(canonical).tolist()]


def test_typed_question_explained_like_the_template(model, hand_scene):
    image = scenes.to_tensor(hand_scene.image)
    a = camlib.explain(model, image, "liftcam", question="What color is the circle?")
    b = camlib.explain(model, image, "liftcam", question="what colour is the circle?")
    torch.testing.assert_close(a.coefficients, b.coefficients)


@pytest.mark.parametrize("bad, named", [("what colour is the banana?", ["banana"]),
                                        ("what colour is the purple thing", ["purple", "thing"]),
                                        ("", [])])
def test_bad_question_messages_are_words(model, bad, named):
    """The message names the unknown words and lists what is allowed in words (no Python list),
    with example questions that the model does accept."""
    from camlib.vqa.explainable import EXAMPLES

    with pytest.raises(ValueError) as info:
        model.question_tokens(bad)
    message = str(info.value)
    assert "[" not in message and "]" not in message
    for word in named:
        assert f"“{word}”" in message
    assert "Colours: red, green, blue, yellow, magenta, cyan." in message
    assert "Shapes: circle, square, triangle" in message
    for example in EXAMPLES:
        assert f"“{example}”" in message
        model.question_tokens(example)  # every example is a valid question
