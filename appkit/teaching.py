"""The words of the landing page: why the maps agree at the last layer and part ways at an inner
one. The text depends on the layer's tail (``model.layer_info(layer).linear_tail``) and quotes the
agreement measured on the maps on screen (the lowest cosine similarity between two of them)."""

from __future__ import annotations


def agreement_words(agreement: float | None) -> str:
    if agreement is None:
        return ""
    return f"lowest cosine similarity between two of the maps: **{agreement:.3f}**"


def why(model, layer: str, agreement: float | None, other: str | None, other_agreement: float | None) -> str:
    """A paragraph for the current layer (and the layer it is compared with, when shown)."""
    info = model.layer_info(layer)
    measured = f" Here: {agreement_words(agreement)}." if agreement is not None else ""
    if info.linear_tail:
        text = (
            f"**Why do the maps look alike?** After *{layer}* the rest of the network is linear (here: global "
            "average pooling, then one fully connected layer), so the class score is "
            "F<sup>c</sup>(A) = Σ<sub>k</sub> w<sup>c</sup><sub>k</sub>·mean(A<sub>k</sub>) + b<sup>c</sup>. "
            "Its gradient is the same number w<sup>c</sup><sub>k</sub>/(h·w) everywhere: Grad-CAM's and "
            "XGrad-CAM's α<sub>k</sub> are both ∝ w<sup>c</sup><sub>k</sub>, the original CAM, and LIFT-CAM's "
            "α<sub>k</sub> = w<sup>c</sup><sub>k</sub>·mean(A<sub>k</sub>) is exactly the SHAP value. "
            f"Built from the same weights, the maps nearly coincide.{measured}")
    else:
        text = (
            f"**Why do the maps differ?** After *{layer}* the rest of the network is nonlinear (more "
            "convolutions and activations). The gradient at A changes from place to place and saturates, so "
            "the gradient methods weigh the maps by a local slope, while LIFT-CAM compares the real maps with "
            "all-zero maps (DeepLIFT) and approximates the SHAP values: the α, and the maps, part ways."
            f"{measured}")
    if other is not None and other_agreement is not None:
        text += f" At *{other}*: {agreement_words(other_agreement)}."
    return text


def compare_button(model, layer: str, other: str) -> str:
    kind = "nonlinear" if not model.layer_info(other).linear_tail else "linear"
    verb = "where they differ" if kind == "nonlinear" else "where they agree"
    return f"Compare with layer {other} ({kind} tail: {verb}), side by side"
