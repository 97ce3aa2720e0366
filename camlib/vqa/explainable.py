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

        Raises ``ValueError`` listing the vocabulary for an empty question, an unknown word or
        an id outside the vocabulary (ids may be right-padded with 0, as the model expects).
        """
        from camlib.vqa import scenes

        if isinstance(question, torch.Tensor):
            tokens = question.long().view(1, -1)
            if ((tokens < 0) | (tokens >= len(self.vocabulary))).any():
                raise ValueError(f"token ids must be in 0..{len(self.vocabulary) - 1}; "
                                 f"the vocabulary is {self.vocabulary[1:]}")
            words = tokens != 0
            if (words[:, 1:] & ~words[:, :-1]).any():
                raise ValueError("padding (id 0) may only follow the words, not precede them")
        else:
            if not isinstance(question, str):
                raise ValueError("the question must be text (or a tensor of token ids); "
                                 f"the vocabulary is {self.vocabulary[1:]}")
            tokens = scenes.tokenize(question, self.vocabulary).view(1, -1)
        if tokens.numel() == 0 or not (tokens != 0).any():
            raise ValueError(f"the question is empty; the vocabulary is {self.vocabulary[1:]}")
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
