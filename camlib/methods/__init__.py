"""The CAM methods. Each supplies only its coefficients α (:mod:`camlib.methods.base`);
:mod:`camlib.cam` makes the map. To add a method: one file with its class, one line in
:data:`METHODS` below."""

from __future__ import annotations

from camlib.methods.ablationcam import AblationCAM
from camlib.methods.antishapcam import AntiShapCAM
from camlib.methods.base import Cost, Method, Option
from camlib.methods.gradcam import CAM, GradCAM
from camlib.methods.gradcampp import GradCAMPlusPlus
from camlib.methods.kernelshapcam import KernelShapCAM
from camlib.methods.liftcam import LiftCAM
from camlib.methods.limecam import LimeCAM
from camlib.methods.lrpcam import LrpCAM
from camlib.methods.scorecam import ScoreCAM
from camlib.methods.shapcam import ShapCAM
from camlib.methods.stratshapcam import StratShapCAM
from camlib.methods.xgradcam import XGradCAM

#: Every method, in the order front ends show them.
METHODS: dict[str, Method] = {m.key: m for m in (
    GradCAM(), GradCAMPlusPlus(), XGradCAM(), ScoreCAM(), AblationCAM(), LiftCAM(), LrpCAM(), ShapCAM(), AntiShapCAM(),
    StratShapCAM(), LimeCAM(), KernelShapCAM(), CAM())}


def _normal(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "").replace("+", "p")


# Names accepted by get_method: keys, titles and common spellings, compared without case,
# hyphens, underscores or spaces ("Grad-CAM++" = "gradcampp").
_ALIASES = {**{_normal(k): k for k in METHODS}, **{_normal(m.title): k for k, m in METHODS.items()},
            "lift": "liftcam", "lrp": "lrpcam", "shap": "shapcam", "lime": "limecam", "kernelshap": "kernelshapcam"}


def list_methods() -> list[str]:
    """Method keys in the order the app shows them."""
    return list(METHODS)


def default_methods() -> list[str]:
    """The default set: the single-pass methods, which give their maps in a fraction of a second."""
    return [k for k, m in METHODS.items() if m.default]


def paper_methods() -> list[str]:
    """The methods the paper compares in its Tables 3-5 (the benchmarks' default set)."""
    return [k for k, m in METHODS.items() if m.paper]


def get_method(name: str) -> Method:
    """A method by key, title or common spelling; ValueError naming the available ones."""
    key = _ALIASES.get(_normal(str(name)))
    if key is None:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[key]


__all__ = ["METHODS", "Cost", "Method", "Option", "default_methods", "get_method", "list_methods", "paper_methods"]
