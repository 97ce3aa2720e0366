"""The Shapes-VQA model as a :class:`camlib.model.CamModel`: every CAM method, question held fixed.

The CAM layer is the image encoder's last ReLU (``encoder``); the tail F maps its activations and
the question embedding q to the answer logits, F(A; q) = classifier(image_head(A) ∘ q). The head
computes q from the question once and the tail receives it as a fixed input (paper Sec. 4.4), so
SHAP-CAM, LIFT-CAM and Ablation-CAM vary only the image's activation maps. Importing this module
registers the model in the zoo as ``vqa_shapes`` (``camlib.load_model("vqa_shapes")``).
"""

from __future__ import annotations

import torch

from camlib import zoo
from camlib.model import CamModel


#: What students type that the model's vocabulary spells differently (compared in lower case).
SPELLINGS = {"color": "colour"}
#: Phrases said in more words than the templates use, and the words of the templates.
PHRASES = (("to the left of", "left of"), ("to the right of", "right of"),
           ("on the left of", "left of"), ("on the right of", "right of"), ("what's", "what is"),
           ("whats", "what is"))
#: Questions of each family, shown when a typed question cannot be used.
EXAMPLES = ("what colour is the circle?", "what shape is the blue object?", "is there a red square?",
            "how many triangles are there?", "what colour is the object left of the green circle?")


def canonical_question(text: str) -> str:
    """A typed question in the templates' words: lower case, single spaces, common spellings
    (:data:`SPELLINGS`, "color" -> "colour") and phrasings (:data:`PHRASES`) replaced, commas
    dropped, at most one final "?" removed (also when typed after a space)."""
    words = str(text).strip().lower().replace(",", " ")
    words = words[:-1] if words.endswith("?") else words
    words = " " + " ".join(words.split()) + " "
    for long, short in PHRASES:
        words = words.replace(f" {long} ", f" {short} ")
    return " ".join(SPELLINGS.get(w, w) for w in words.split())


def describe_vocabulary(vocabulary) -> str:
    """The vocabulary in words, grouped (shapes, colours, the other words), with example questions."""
    from camlib.vqa import scenes

    words = [w for w in vocabulary if w != scenes.PAD]
    shapes = [w for w in words if w in scenes.SHAPES]
    plurals = [w for w in words if w in scenes.SHAPE_PLURALS]
    colours = [w for w in words if w in scenes.COLOURS]
    other = [w for w in words if w not in {*shapes, *plurals, *colours}]
    examples = "; ".join(f"“{e}”" for e in EXAMPLES)
    return (f"The model's vocabulary has {len(words)} words. Shapes: {', '.join(shapes)} (plural: {', '.join(plurals)}). "
            f"Colours: {', '.join(colours)}. Other words: {', '.join(other)}. Questions look like: {examples}.")


class VQACamModel(CamModel):
    """A CamModel whose extra input is the question: ``explain(model, scene, m, question="...")``."""

    def __init__(self, module, meta: dict, device: torch.device):
        from camlib.vqa import model as vqa_model
        from camlib.vqa import scenes

        self.meta = meta
        self.vocabulary = list(meta.get("vocab", scenes.VOCAB))  # load_vqa checked it equals scenes.VOCAB
        size = scenes.IMAGE_SIZE
        example = scenes.tokenize("what colour is the circle", self.vocabulary).view(1, -1)
        super().__init__("vqa_shapes", module, device, list(meta.get("answers", scenes.ANSWERS)),
                         default_layer=vqa_model.CAM_LAYER, preset_layers=(vqa_model.CAM_LAYER,),
                         input_size=(size, size), title="Shapes-VQA (bundled weights)",
                         example_extra=(example,),
                         note="trained here on generated scenes; the question is held fixed while explaining")

    def question_tokens(self, question) -> torch.Tensor:
        """(1, T) token ids of a question (text or ids) on the model's device.

        Text goes through :func:`canonical_question` first ("What color is the circle?" works).
        Raises ``ValueError`` naming the unknown words and describing the vocabulary in words
        (:func:`describe_vocabulary`) for an empty question, an unknown word or an id outside the
        vocabulary (ids may be right-padded with 0, as the model expects).
        """
        from camlib.vqa import scenes

        words = describe_vocabulary(self.vocabulary)
        if isinstance(question, torch.Tensor):
            tokens = question.long().view(1, -1)
            if ((tokens < 0) | (tokens >= len(self.vocabulary))).any():
                raise ValueError(f"token ids must be in 0..{len(self.vocabulary) - 1}. {words}")
            present = tokens != 0
            if (present[:, 1:] & ~present[:, :-1]).any():
                raise ValueError("padding (id 0) may only follow the words, not precede them")
        else:
            if not isinstance(question, str):
                raise ValueError(f"the question must be text (or a tensor of token ids). {words}")
            text = canonical_question(question)
            if not text:
                raise ValueError(f"the question is empty. {words}")
            known = set(self.vocabulary) - {scenes.PAD}
            unknown = list(dict.fromkeys(w for w in text.split() if w not in known))
            if unknown:
                listed = ", ".join(f"“{w}”" for w in unknown)
                raise ValueError(f"{listed} {'is' if len(unknown) == 1 else 'are'} not in the model's vocabulary. {words}")
            tokens = scenes.tokenize(text, self.vocabulary).view(1, -1)
        if tokens.numel() == 0 or not (tokens != 0).any():
            raise ValueError(f"the question is empty. {words}")
        return tokens.to(self.device)

    def extra_inputs(self, batch: int, question=None, **options):
        if question is None:
            raise ValueError("the VQA model explains an answer to a question: pass question='...'")
        tokens = self.question_tokens(question)
        return (tokens.expand(batch, tokens.shape[1]),), options


def load_cam_model(device=None) -> VQACamModel:
    """The committed Shapes-VQA weights as a CamModel (checked against the code's version)."""
    from camlib.devices import resolve_device
    from camlib.vqa import load_vqa

    device = resolve_device(device)
    module, meta = load_vqa(device)
    return VQACamModel(module, meta, device)


def _load(device: torch.device, weights) -> VQACamModel:
    if weights != "default":
        raise ValueError("the Shapes-VQA model ships its own weights (camlib/assets/vqa); use weights='default'")
    return load_cam_model(device)


zoo.register(zoo.ModelSpec("vqa_shapes", "Shapes-VQA (bundled weights)", _load, kind="vqa", offline=True,
                           note="trained here on generated scenes; the question is held fixed while explaining"))
