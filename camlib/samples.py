"""The bundled sample gallery.

The sample photos are not copied into this repository: they are the photos
that ship inside the scikit-image wheel (``skimage.data``) and are loaded from
there at run time, so they work offline.  Only photos that are part of the
scikit-image distribution itself are used (some ``skimage.data`` images are
downloaded on demand with ``pooch`` and are not available offline), and only
those whose licence is stated in scikit-image's documentation.

For every sample we record the ImageNet-1k classes a classifier is expected to
predict (indices 0-999 in the standard torchvision ordering) and hand-drawn
bounding boxes of the object(s) of those classes, in the original image's
pixel coordinates: ``(xmin, ymin, xmax, ymax)``, inclusive, x to the right and
y down.  The boxes were drawn on the images as shipped with scikit-image 0.26;
:func:`load_sample` checks the image size so that a changed photo is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from PIL import Image

from camlib.images import load_image

__all__ = ["Sample", "list_samples", "load_sample"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Sample:
    """Metadata of one gallery sample.

    Attributes:
        key: short identifier, e.g. ``"chelsea"``.
        title: human-readable title for the gallery.
        source: provenance and licence of the photo.
        classes: the ImageNet-1k class indices (torchvision ordering) of
            the boxed object, most likely first.
        boxes: ground-truth boxes of the object(s) of those classes, each
            ``(xmin, ymin, xmax, ymax)`` inclusive, in original pixels.
        note: a remark for users: what the app's default model
            (EfficientNet-Lite0) predicts, quoting its top classes as
            'class name' (checked against the model by tests/app/test_gallery.py),
            and what the box marks.
    """

    key: str
    title: str
    source: str
    classes: tuple[int, ...]
    boxes: tuple[Box, ...]
    note: str = ""


_SAMPLES: tuple[Sample, ...] = (
    Sample(
        key="chelsea",
        title="Chelsea the cat",
        source=(
            "scikit-image data: chelsea. Chelsea the cat, photographed by "
            "Stefan van der Walt. No copyright restrictions; CC0 by the "
            "photographer."
        ),
        classes=(281, 282, 285),  # tabby, tiger cat, Egyptian cat
        boxes=((0, 0, 399, 299),),
        note="EfficientNet-Lite0 (the default model) answers 'Egyptian cat', then 'tiger cat' and "
        "'tabby'. The cat's box covers most of the photo: no test for the pointing game.",
    ),
    Sample(
        key="coffee",
        title="Espresso cup",
        source=(
            "scikit-image data: coffee. Coffee cup, photograph courtesy of "
            "Pikolo Espresso Bar, taken by Rachel Michetti. No copyright "
            "restrictions; CC0 by the photographer."
        ),
        classes=(967, 968, 504),  # espresso, cup, coffee mug
        boxes=((173, 19, 406, 304),),  # the cup, handle included
        note="EfficientNet-Lite0 (the default model) answers 'espresso', then 'cup' and 'coffee mug'.",
    ),
    Sample(
        key="rocket",
        title="Falcon 9 rocket on the launch pad",
        source=(
            "scikit-image data: rocket. Launch photo of DSCOVR on Falcon 9 by "
            "SpaceX (flickr.com/photos/spacexphotos/16511594820), released "
            "into the public domain by SpaceX."
        ),
        classes=(812, 657, 744),  # space shuttle, missile, projectile
        boxes=((307, 128, 335, 405),),  # the rocket, not the towers
        note="ImageNet has no 'rocket' class. EfficientNet-Lite0 (the default model) answers "
        "'drilling platform' (the launch towers), then 'missile', 'projectile' and 'space shuttle'. The box "
        "marks the rocket itself: explain the class missile to see where the model finds it.",
    ),
    Sample(
        key="astronaut",
        title="Astronaut Eileen Collins",
        source=(
            "scikit-image data: astronaut. NASA portrait of astronaut Eileen "
            "Collins, from the NASA Great Images database "
            "(flic.kr/p/r9qvLn). No known copyright restrictions; public "
            "domain."
        ),
        classes=(812,),  # space shuttle
        boxes=((355, 0, 458, 272),),  # the shuttle model, top right
        note="ImageNet has no 'person' or 'astronaut' class. EfficientNet-Lite0 (the default model) "
        "answers 'bobsled', then 'football helmet': a person in a suit and helmet. The box marks the shuttle "
        "model behind her (class space shuttle, far down the model's list): explain that class to ask where "
        "the model would see a shuttle.",
    ),
    Sample(
        key="camera",
        title="Cameraman with a tripod",
        source=(
            "scikit-image data: camera. Photograph by Lav Varshney. No "
            "copyright restrictions; CC0 by the photographer."
        ),
        classes=(872,),  # tripod
        boxes=((229, 186, 407, 511),),  # the tripod, below the camcorder
        note="Grayscale photo. ImageNet has no 'person' or 'camcorder' class; EfficientNet-Lite0 (the default "
        "model) answers 'tripod', the object in the box.",
    ),
)

# skimage.data function that returns each sample, and the (width, height) the
# boxes were drawn on.
_SKIMAGE_SOURCES = MappingProxyType({
    "chelsea": ("chelsea", (451, 300)),
    "coffee": ("coffee", (600, 400)),
    "rocket": ("rocket", (640, 427)),
    "astronaut": ("astronaut", (512, 512)),
    "camera": ("camera", (512, 512)),
})


def list_samples() -> list[Sample]:
    """Return the metadata of all gallery samples, in gallery order."""
    return list(_SAMPLES)


def load_sample(key: str) -> tuple[Image.Image, Sample]:
    """Load one sample photo from scikit-image (offline) as an RGB image.

    Args:
        key: a :attr:`Sample.key` from :func:`list_samples`.

    Returns:
        ``(image, sample)``: the photo as an 8-bit RGB PIL image at its
        original size, and its metadata.

    Raises:
        KeyError: if ``key`` is not a sample.
        RuntimeError: if the installed scikit-image returns an image of a
            different size than the boxes were drawn on.
    """
    sample = next((s for s in _SAMPLES if s.key == key), None)
    if sample is None:
        known = ", ".join(s.key for s in _SAMPLES)
        raise KeyError(f"Unknown sample {key!r}; known samples: {known}")

    import skimage.data  # imported lazily: it is slow to import

    function_name, expected_size = _SKIMAGE_SOURCES[key]
    image = load_image(getattr(skimage.data, function_name)())
    if image.size != expected_size:
        raise RuntimeError(
            f"scikit-image's {function_name!r} image is {image.size[0]}x"
            f"{image.size[1]}, but the sample boxes were drawn on a "
            f"{expected_size[0]}x{expected_size[1]} image."
        )
    return image, sample
