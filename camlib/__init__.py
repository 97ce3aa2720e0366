"""camlib: class activation maps, exact where the math allows (LIFT-CAM, SHAP-CAM and friends).

Every CAM is L = ReLU(Σ_k α_k A_k) (paper Eq. 1); methods differ only in the coefficients α.
Quick use::

    import camlib
    model = camlib.load_model()                      # EfficientNet-Lite0, offline
    exp = camlib.explain(model, "cat.jpg", "liftcam")
    exp.saliency, exp.coefficients
"""

from camlib.explain import Explanation, explain, explain_many
from camlib.graph.split import LayerError, LayerInfo
from camlib.methods import default_methods, get_method, list_methods
from camlib.model import CamModel
from camlib.vqa import explainable as _vqa  # registers the Shapes-VQA model in the zoo  # noqa: F401
from camlib.zoo import ModelUnavailableError, list_models, load_model

__all__ = ["CamModel", "Explanation", "LayerError", "LayerInfo", "ModelUnavailableError", "default_methods",
           "explain", "explain_many", "get_method", "list_methods", "list_models", "load_model"]
__version__ = "0.1.0"
