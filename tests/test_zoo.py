"""camlib.zoo: the models, offline behaviour, safe checkpoints."""

import pickle

import pytest
import torch

import camlib
from camlib import zoo
from tests.numerics import assert_close_scaled, chain, local_accuracy_scale, tail_terms


def test_list_models():
    names = camlib.list_models()
    assert names[0] == "efficientnet_lite0"
    assert {"vgg16", "resnet50", "resnet18", "mobilenet_v2", "densenet121", "vqa_shapes"} <= set(names)


@pytest.mark.parametrize("name,layer,shape", [
    ("vgg16", "features.29", (512, 14, 14)), ("resnet50", "layer4", (2048, 7, 7)),
    ("resnet18", "layer4", (512, 7, 7)), ("mobilenet_v2", "features.18", (1280, 7, 7)),
    ("densenet121", "features.norm5", (1024, 7, 7))])
@pytest.mark.numerics
def test_torchvision_models_with_random_weights(name, layer, shape):
    model = camlib.load_model(name, device="cpu", weights=None)
    assert model.default_layer == layer and model.layer_info().shape == shape
    assert model.preset_layers[0] == layer and len(model.class_names) == 1000
    exp = camlib.explain(model, torch.rand(3, 224, 224), "liftcam")
    total, delta = exp.info["local_accuracy"]
    # Σ of K contributions against a difference of two tail outputs: twice the tail's chain +
    # chain(K), of Σ|α| and the logits' size (tests/numerics.py).
    rel = 2 * chain(*tail_terms(model, layer, exp)) + chain(shape[0])
    assert_close_scaled(total, delta, local_accuracy_scale(exp), rel, f"{name}: Σα - ΔF")


def test_offline_missing_weights_name_the_file_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr("socket.create_connection", refuse)
    with pytest.raises(camlib.ModelUnavailableError) as info:
        camlib.load_model("vgg16", device="cpu")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path / "hub" / "checkpoints") in message


def test_user_checkpoint_loads_safely(tmp_path):
    torch.manual_seed(0)
    source = camlib.load_model("resnet18", device="cpu", weights=None).module
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.randn(10, 512)
    state["fc.bias"] = torch.zeros(10)
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": state}, path)
    model = camlib.load_model("resnet18", device="cpu", weights=path)
    assert len(model.class_names) == 10
    torch.testing.assert_close(model.module.fc.weight, state["fc.weight"])
    assert camlib.explain(model, torch.rand(3, 224, 224), "gradcam").logits.shape == (10,)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"fc.weight": Evil()}, fh)
    with pytest.raises(ValueError, match="safely"):
        camlib.load_model("resnet18", device="cpu", weights=path)
    assert "must never run" not in capsys.readouterr().out


def test_unknown_model_and_device():
    with pytest.raises(ValueError, match="unknown model"):
        camlib.load_model("alexnet")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            camlib.load_model("efficientnet_lite0", device="cuda")


def test_default_layer_and_presets(lite0):
    assert lite0.default_layer == "bn2" and lite0.preset_layers[:2] == ["bn2", "blocks.6"]
    assert "offline" in zoo.MODELS["efficientnet_lite0"].title
