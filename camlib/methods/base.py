"""The contract of a CAM method: what it declares, what it is given, what it returns.

Every CAM is L = ReLU(Σ_k α_k A_k) (paper Eq. 1); a method supplies only its coefficients α.
It is one class in one file, importing only this module (and, for estimators over orderings of
the maps, :mod:`camlib.methods.shapley`):

* ``key``, ``title``, ``summary``: its names and a one-line description;
* ``needs``: the quantities it reads (:class:`Need`: gradients, gradient sums or dots, DeepLIFT
  contributions, the coalition game, masked-input scores, LRP relevance); the engine decides which backend
  computes them (:mod:`camlib.engine.backends`) and records it in ``Explanation.info["backends"]``;
* ``cost`` (:class:`Cost`) and :meth:`Method.evaluations`: how much work it does, for front ends
  that show the expected time and for benchmarks that count tail evaluations;
* ``options``: its parameters (:class:`Option`: default and bounds), checked by :func:`camlib.explain`
  and read by the app, the CLI and the benchmarks to build their controls;
* ``default``: in the default set (the single-pass methods, shown first everywhere);
  ``paper``: compared in the paper's Tables 3-5 (the benchmarks' default set);
* ``coefficients(q, **options)``: α (B, K) from a :class:`Quantities` object that provides exactly
  the declared needs. Its docstring gives the formula and the paper's equation number.

:mod:`camlib.cam` then makes the map the same way for every method.
"""

from __future__ import annotations

import dataclasses
import enum

import torch

from camlib.engine.quantities import DeepLift, Game, Lrp, Need, Quantities

__all__ = ["Cost", "DeepLift", "Game", "Lrp", "Method", "Need", "Option", "Quantities"]


class Cost(enum.Enum):
    """How a method's work grows (its :meth:`Method.evaluations` gives the count)."""

    ONE_PASS = "one pass"          # one forward and one backward pass through the tail
    PER_MAP = "N_l passes"         # one evaluation per activation map (N_l = K maps)
    PER_ORDERING = "per ordering"  # K + 1 tail evaluations per sampled ordering of the maps
    PER_SAMPLE = "per sample"      # one tail evaluation per sampled coalition of maps


@dataclasses.dataclass(frozen=True)
class Option:
    """A method parameter: ``name``, ``default`` (its type is the option's type), inclusive bounds."""

    name: str
    default: int | float
    minimum: int | float | None = None
    maximum: int | float | None = None
    help: str = ""
    #: How titles write the option (SHAP-CAM's ``permutations`` is the paper's ``|Π|``); else its name.
    symbol: str = ""

    def check(self, value, method: str = ""):
        """``value`` as the option's type, or a ValueError naming the option and its bounds."""
        kind = type(self.default)
        owner = f"{method} option " if method else "option "
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
                raise TypeError
            converted = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{owner}{self.name!r} must be {'an integer' if kind is int else 'a number'}, "
                             f"got {value!r}") from None
        if (self.minimum is not None and converted < self.minimum) or \
                (self.maximum is not None and converted > self.maximum):
            raise ValueError(f"{owner}{self.name!r} must be in {self.bounds()}, got {converted}")
        return converted

    def bounds(self) -> str:
        low = "-∞" if self.minimum is None else f"{self.minimum:,}"
        high = "∞" if self.maximum is None else f"{self.maximum:,}"
        return f"[{low}, {high}]"


class Method:
    """Base of every CAM method (see the module docstring for the contract)."""

    key: str = ""
    title: str = ""
    summary: str = ""
    needs: frozenset = frozenset()
    cost: Cost = Cost.ONE_PASS
    #: Whether the evaluations are of the whole network (Score-CAM) rather than of the tail.
    network_passes: bool = False
    options: tuple[Option, ...] = ()
    #: The options whose value changes what is estimated, so that benchmark rows name them
    #: (SHAP-CAM's ``permutations``: ``shapcam_100``).
    label_options: tuple[str, ...] = ()
    default: bool = False
    paper: bool = False

    def option(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def resolve_options(self, options: dict) -> dict:
        """Every declared option: the given value, checked, or its default. An option this method
        does not have is a ValueError that lists the ones it has."""
        names = {o.name for o in self.options}
        unknown = sorted(set(options) - names)
        if unknown:
            have = ", ".join(f"{o.name} (default {o.default})" for o in self.options) or "none"
            raise ValueError(f"{self.title} has no option {', '.join(map(repr, unknown))}; its options: {have}")
        return {o.name: o.check(options.get(o.name, o.default), self.title) for o in self.options}

    def evaluations(self, n_maps: int, **options) -> int:
        """Nominal evaluations of the tail (or the network, when ``network_passes``) for K = ``n_maps``
        maps and one image: 1 for a single pass, K per map, |Π|·(K + 1) per ordering, the sample
        count per sample."""
        options = self.resolve_options(options)
        if self.cost is Cost.ONE_PASS:
            return 1
        if self.cost is Cost.PER_MAP:
            return int(n_maps)
        if self.cost is Cost.PER_ORDERING:
            return int(options["permutations"]) * (int(n_maps) + 1)
        return int(options["samples"]) if options.get("samples") else int(n_maps)

    def label(self, **options) -> str:
        """The method's name in benchmark rows: the key, with the values of its ``label_options``
        (SHAP-CAM's |Π|: ``shapcam_100``; LIME-CAM at its automatic sample count: ``limecam``)."""
        return "_".join([self.key, *(str(self._value(n, options)) for n in self._shown(options))])

    def label_title(self, **options) -> str:
        """The title with the values of its ``label_options``, each written by its option's symbol:
        "SHAP-CAM (|Π|=100)"."""
        shown = self._shown(options)
        if not shown:
            return self.title
        parts = (f"{self.option(n).symbol or n}={self._value(n, options)}" for n in shown)
        return f"{self.title} ({', '.join(parts)})"

    def _shown(self, options: dict) -> list[str]:
        """The label options a label names: all but those at 0 where 0 is the default, the
        automatic value (LIME-CAM's ``samples=0``: N_l)."""
        return [n for n in self.label_options
                if not (self._value(n, options) == 0 and self.option(n).default == 0)]

    def _value(self, name: str, options: dict):
        return options[name] if name in options else self.option(name).default

    def coefficients(self, q: Quantities, **options) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
