"""The CAM methods. Each supplies only its coefficients α; :mod:`camlib.cam` makes the map."""

from camlib.methods.ablationcam import AblationCAM
from camlib.methods.base import CamMethod, Context
from camlib.methods.gradcam import CAM, GradCAM
from camlib.methods.gradcampp import GradCAMPlusPlus
from camlib.methods.liftcam import LiftCAM
from camlib.methods.scorecam import ScoreCAM
from camlib.methods.shapcam import ShapCAM
from camlib.methods.xgradcam import XGradCAM

METHODS: dict[str, CamMethod] = {m.key: m for m in (
    GradCAM(), GradCAMPlusPlus(), XGradCAM(), ScoreCAM(), AblationCAM(), LiftCAM(), ShapCAM(), CAM())}

# Aliases accepted by get_method (titles and common spellings).
_ALIASES = {**{m.title.lower().replace("-", "").replace(" ", "").replace("+", "p"): k for k, m in METHODS.items()},
            "grad-cam": "gradcam", "gradcam++": "gradcampp", "lift": "liftcam", "shap": "shapcam"}


def list_methods() -> list[str]:
    """Method keys in the order the app shows them."""
    return list(METHODS)


def get_method(name: str) -> CamMethod:
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "").replace("+", "p")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[key]


__all__ = ["METHODS", "CamMethod", "Context", "get_method", "list_methods"]
