"""camlib: class activation maps, exact where the math allows (LIFT-CAM, SHAP-CAM and friends).

Every CAM is L = ReLU(Σ_k α_k A_k) (paper Eq. 1); methods differ only in the coefficients α.
Quick use::

    import camlib
    model = camlib.load_model()                      # EfficientNet-Lite0, offline
    exp = camlib.explain(model, "cat.jpg", "liftcam")
    exp.saliency, exp.coefficients
"""

from camlib.explain import Explanation, explain
from camlib.methods import get_method, list_methods
from camlib.split import LayerError, LayerInfo
from camlib.zoo import CamModel, ModelUnavailableError, list_models, load_model

__all__ = ["CamModel", "Explanation", "LayerError", "LayerInfo", "ModelUnavailableError", "explain",
           "get_method", "list_methods", "list_models", "load_model"]
__version__ = "0.1.0"
