"""What a part is: its builder, its own options, and what it can do.

Every part of a model (network, posterior, flow, prior, likelihood, objective, and the
objective's divergence) is a class (or a small holder of builders) registered under a
name in :mod:`vaekit.registry`. The class itself declares everything the rest of the library
needs to know, so that code outside the part asks its :class:`Part` instead of
comparing its name:

- ``Options``: a dataclass of its own settings (``model.prior: {name: vamp,
  components: 500}``), validated with did-you-mean like every other setting. A class
  without one gets a dataclass derived from its ``__init__`` signature.
- ``abilities``: what it can do (:class:`PosteriorAbilities`, :class:`PriorAbilities`,
  :class:`LikelihoodAbilities`, :class:`ObjectiveAbilities`).
- ``check(options, composition)`` (optional, static): a message when it cannot be combined
  with the other parts chosen, else None.
- ``label(options)`` (optional, static): its short name in summaries and plots.
- ``ignored(options, composition)`` (optional, static): the options set that change
  nothing with the other parts chosen, each with why and what to do instead (a mapping
  ``{option: reason}``); a config that sets one is refused or noted (:mod:`vaekit.config`).

A user's own class plugs in the same way, by import path (``module:Class``) wherever a
part is named; the attributes above are optional for it (defaults below).

Example:
    >>> from vaekit.registry import PRIORS
    >>> vamp = PRIORS.get("vamp")
    >>> vamp.abilities.needs_gaussian_posterior, vamp.options().components
    (True, 500)
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from vaekit.errors import ConfigError
from vaekit.validate import short

__all__ = [
    "PartError",
    "NoOptions",
    "PartConfig",
    "install_registries",
    "lookup",
    "registry_of",
    "nested_part",
    "PosteriorAbilities",
    "FlowAbilities",
    "PriorAbilities",
    "LikelihoodAbilities",
    "NetworkAbilities",
    "ObjectiveAbilities",
    "DivergenceAbilities",
    "Composition",
    "Part",
    "Registry",
    "is_import_path",
    "import_path_problem",
    "import_object",
    "PYTHON_PART",
]

# Names of parts that were handed over as Python objects (vaekit.compose, fit(objective=obj)):
# config.json records what they were, and the run is rebuilt by passing the objects again.
PYTHON_PART = "python:"


class PartError(ConfigError):
    """A part that cannot be found, imported or built; the message says what to do."""


@dataclass
class NoOptions:
    """The options of a part that has none."""


@dataclass
class PartConfig:
    """A part chosen by name (registered, or ``module:Class``) with its own options.

    ``options`` is the part's options dataclass; building a ModelConfig from names or
    mappings fills it in (:mod:`vaekit.config` re-exports this class).

    Example:
        >>> from vaekit.config import ModelConfig, part
        >>> ModelConfig(prior=part("vamp", components=50)).prior
        PartConfig(name='vamp', options=VampPrior.Options(components=50, ...))
    """

    name: str
    options: Any = None


# -- abilities ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PosteriorAbilities:
    """What a posterior q(z|x) can do.

    ``density``: it has ``log_prob`` (the ELBO, IWAE and the importance-sampled NLL need it);
    ``stochastic``: its draws vary (a point mass, the plain autoencoder's code, does not);
    ``gaussian``: it is a diagonal Normal, ``Independent(Normal)`` (the VampPrior's
    components, the DReG estimator); ``factorised``: independent across latent dimensions
    (KL per dimension, free bits per dimension); ``takes_flow``: ``model.flow`` may
    transform it. ``gaussian_top``: the layer the prior is over is a diagonal Gaussian
    given x (a hierarchy's q(z_L|x): the VampPrior fits it); ``dreg``: its log-density can
    be taken with its parameters held fixed (``log_prob_fixed``), as the doubly
    reparameterised gradient needs (a diagonal Gaussian can without saying so);
    ``networks``: it brings the model's encoder and decoder networks itself (a
    convolutional hierarchy), so ``model.encoder`` and ``model.decoder`` are not used;
    ``layered``: several stochastic layers whose conditional priors p(z_l | z_>l) live in
    this part, so ``model.prior`` is the prior of the top layer only; ``discrete``: z is a discrete code (one-hot rows, or a codebook's
    vectors) whose density counts codes, so it pairs with priors over codes only
    (:attr:`PriorAbilities.discrete`). A deterministic posterior with a density (VQ-VAE's
    one-hot code, log q = 0) still has an ELBO: ``stochastic=False, density=True``.
    ``extras``: its q(z|x) carries a loss of its own and terms to report (``aux_loss``,
    ``terms``: VQ-VAE's commitment loss, a codebook's perplexity), which every objective
    adds. The abilities with members (``layered``, ``networks``, ``discrete``, ``extras``,
    ``dreg``) name them in :mod:`vaekit.abilities`.
    """

    density: bool = True
    stochastic: bool = True
    gaussian: bool = False
    factorised: bool = False
    takes_flow: bool = False
    gaussian_top: bool = False
    dreg: bool = False
    networks: bool = False
    layered: bool = False
    discrete: bool = False
    extras: bool = False


@dataclass(frozen=True)
class FlowAbilities:
    """What a flow does to the posterior it transforms: q keeps a density (the flow's
    log-determinant) but is no longer Gaussian nor factorised."""


@dataclass(frozen=True)
class PriorAbilities:
    """What a prior p(z) needs and is.

    ``needs_gaussian_posterior``: it is built from the encoder's diagonal Gaussian
    posteriors (the VampPrior); ``conditional``: it works in a conditional model;
    ``factorised``: independent across latent dimensions; ``learned``: it has parameters;
    ``discrete``: a distribution over the codes of a discrete posterior (it reads and
    writes z through the posterior's codebook), so it pairs with those only.
    ``temperature``: p(z) can be sampled at a temperature (a Gaussian or a mixture of
    them, or a distribution with ``tempered(t)``: :func:`vaekit.distributions.priors.tempered`).
    ``per_class``: a prior p(z|y) for each class (:class:`vaekit.abilities.ClassPrior`:
    ``given(labels)``), so it needs a conditional model; its p(z) is their uniform mixture.
    """

    needs_gaussian_posterior: bool = False
    conditional: bool = True
    factorised: bool = False
    learned: bool = False
    discrete: bool = False
    temperature: bool = False
    per_class: bool = False


# The kinds of data a likelihood may be asked to model (``Dataset.kind``).
DATA_KINDS = ("binary", "grey", "real")


@dataclass(frozen=True)
class LikelihoodAbilities:
    """Which data a likelihood p(x|z) fits, and what its log-probability means there.

    ``fits``: the data kinds it accepts (``binary`` {0, 1}, ``grey`` [0, 1], ``real``);
    ``exact``: the kinds on which ``log_prob`` is a normalised likelihood of the data (a
    Bernoulli on grey levels is a cross-entropy, not a likelihood); ``levels``: it models
    L evenly spaced levels of data in [0, 1] (8-bit images), so nats and bits per
    dimension compare with the literature's discrete likelihoods. ``advice``: how to
    choose it well, shown when another likelihood does not fit the data.
    """

    fits: frozenset[str] = frozenset(DATA_KINDS)
    exact: frozenset[str] = frozenset(DATA_KINDS)
    levels: bool = False
    advice: str = ""


@dataclass(frozen=True)
class NetworkAbilities:
    """``images``: the network needs image-shaped data ``(C, H, W)``."""

    images: bool = False


@dataclass(frozen=True)
class ObjectiveAbilities:
    """What an objective reports and needs.

    ``bound``: the per-example term that is the bound it trains; ``sign`` is +1 when higher
    is better (a log-likelihood bound) and -1 for a loss; the best epoch is the one whose
    validation ``sign * bound`` is highest. ``bound_label`` names it in figures.
    ``needs_density`` / ``needs_stochastic``: what the posterior must have.
    ``optimizers``: one name per optimiser the trainer runs (an adversarial objective has
    two); ``warmup``: it weighs a KL term up over ``warmup_epochs`` (early stopping counts
    from its end). ``fixed``: the parts of the model it leaves untrained by design (their
    parameters get no gradient), named as the model's modules: ``encoder``, ``decoder``,
    ``prior_module`` (a second stage that fits only the prior fixes the other two).
    ``hidden_labels``: it learns from examples whose label is hidden (label -1,
    :data:`vaekit.data.HIDDEN_LABEL`: ``data.labels``), as a semi-supervised objective
    does; ``classifier``: it needs the model's classifier q(y|x) (``model.classifier``).
    """

    bound: str = "elbo"
    sign: float = 1.0
    bound_label: str = "ELBO"
    needs_density: bool = True
    needs_stochastic: bool = True
    optimizers: tuple[str, ...] = ("model",)
    fixed: tuple[str, ...] = ()
    warmup: bool = False
    hidden_labels: bool = False
    classifier: bool = False

    def score(self, terms: typing.Mapping[str, float]) -> float:
        """The best-epoch score of one split's mean terms (higher is better)."""
        return self.sign * float(terms[self.bound])


@dataclass(frozen=True)
class DivergenceAbilities:
    """What the divergence an objective weighs by beta (``objective.divergence``) is.

    ``kl``: it is the KL term itself, KL(q(z|x) || p(z)) per example (free bits, which
    floor the KL per dimension, apply only to it); ``per_example``: each example has its
    own value; False for a term of the whole batch, such as the MMD between the batch's
    codes and draws of the prior, which every example of the batch reports.
    """

    kl: bool = False
    per_example: bool = True


ABILITIES: dict[str, type] = {
    "network": NetworkAbilities,
    "posterior": PosteriorAbilities,
    "flow": FlowAbilities,
    "prior": PriorAbilities,
    "likelihood": LikelihoodAbilities,
    "objective": ObjectiveAbilities,
    "divergence": DivergenceAbilities,
}


@dataclass(frozen=True)
class Composition:
    """The abilities of the parts chosen for one model, as a part's ``check`` sees them.

    ``posterior`` is the effective posterior: a flow on a Gaussian keeps the density and
    drops ``gaussian`` and ``factorised``.
    """

    posterior: PosteriorAbilities = field(default_factory=PosteriorAbilities)
    prior: PriorAbilities = field(default_factory=PriorAbilities)
    likelihood: LikelihoodAbilities = field(default_factory=LikelihoodAbilities)
    # None where no objective is chosen yet (a model on its own).
    objective: ObjectiveAbilities | None = field(default_factory=ObjectiveAbilities)
    # The posterior as its head makes it, before any flow.
    base_posterior: PosteriorAbilities = field(default_factory=PosteriorAbilities)
    flow: bool = False
    conditional: bool = False
    # The model has a classifier q(y|x) (model.classifier).
    classifier: bool = False
    # What each chosen part is called in messages: "model.prior=vamp".
    names: dict[str, str] = field(default_factory=dict)


# -- one part ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One registered part: its builder(s), options type, abilities and hooks.

    ``build(options, *args, **context)`` calls the builder with the contract's positional
    arguments, the options as keywords, and those ``context`` keywords (``data_shape``,
    ``num_classes``, ...) that its signature asks for.
    """

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type
    abilities: Any
    summary: str = ""
    label_fn: Callable[[Any], str] | None = None
    check_fn: Callable[[Any, Composition], str | None] | None = None
    ignored_fn: Callable[[Any, Composition], dict[str, str]] | None = None
    # Networks: builders of the encoder and the decoder role (both default to ``factory``),
    # and how a decoder mirrors the encoder's options when none is given.
    encoder: Callable[..., Any] | None = None
    decoder: Callable[..., Any] | None = None
    mirror_fn: Callable[[Any], Any] | None = None
    user: bool = False

    @classmethod
    def from_class(cls, kind: str, name: str, obj: Any, *, user: bool = False) -> Part:
        """The part that ``obj`` (a class, or a holder of builders) declares."""
        if kind not in ABILITIES:
            raise PartError(f"unknown kind of part {kind!r}; one of {', '.join(ABILITIES)}")
        abilities = getattr(obj, "abilities", None)
        want = ABILITIES[kind]
        if abilities is None:
            abilities = want()
        elif not isinstance(abilities, want):
            raise PartError(
                f"{name}: `abilities` must be a vaekit.parts.{want.__name__}, got {type(abilities).__name__}"
            )
        encoder = getattr(obj, "encoder", None) if kind == "network" else None
        decoder = getattr(obj, "decoder", None) if kind == "network" else None
        if kind == "network" and not (callable(encoder) and callable(decoder)):
            encoder = decoder = obj
        options = getattr(obj, "Options", None)
        if options is None:
            options = _options_from_signature(kind, name, encoder or obj)
        elif not (isinstance(options, type) and dataclasses.is_dataclass(options)):
            raise PartError(f"{name}: `Options` must be a dataclass")
        doc = inspect.getdoc(obj) or ""
        return cls(
            kind=kind,
            name=name,
            factory=obj,
            options=options,
            abilities=abilities,
            summary=first_sentence(doc),
            label_fn=getattr(obj, "label", None) if callable(getattr(obj, "label", None)) else None,
            check_fn=getattr(obj, "check", None) if callable(getattr(obj, "check", None)) else None,
            ignored_fn=(
                getattr(obj, "ignored", None) if callable(getattr(obj, "ignored", None)) else None
            ),
            encoder=encoder,
            decoder=decoder,
            mirror_fn=getattr(obj, "mirror", None),
            user=user,
        )

    def label(self, options: Any) -> str:
        """The part's short name with its main options, for summaries and plots."""
        if self.label_fn is not None:
            return str(self.label_fn(options))
        return self.name

    def check(self, options: Any, composition: Composition) -> str | None:
        """Why this part cannot be combined with the others chosen (None when it can)."""
        return self.check_fn(options, composition) if self.check_fn is not None else None

    def ignored(self, options: Any, composition: Composition) -> dict[str, str]:
        """The options set that change nothing in this composition: ``{option: why}``."""
        return dict(self.ignored_fn(options, composition)) if self.ignored_fn is not None else {}

    def mirror(self, options: Any) -> Any:
        """The decoder's options when the decoder mirrors this encoder."""
        return self.mirror_fn(options) if self.mirror_fn is not None else options

    def option_values(self, options: Any) -> dict[str, Any]:
        """The options as plain keyword arguments."""
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}

    def build(self, options: Any, *args: Any, role: str | None = None, **context: Any) -> Any:
        """Call the builder (for a network, the ``role`` "encoder" or "decoder")."""
        fn: Callable[..., Any] | None = self.factory
        if role is not None:
            fn = self.encoder if role == "encoder" else self.decoder
        assert fn is not None
        kwargs = self.option_values(options)
        accepted, positional = _accepted_keywords(fn, len(args))
        for key, value in context.items():
            if key not in positional and (accepted is None or key in accepted):
                kwargs.setdefault(key, value)
        try:
            return fn(*args, **kwargs)
        except TypeError as e:
            if self.user:
                raise PartError(
                    f"cannot build {self.kind} {self.name} with options {kwargs}: {e} "
                    f"(see the contract for a user {self.kind} in docs/guides/parts-of-your-own.md)"
                ) from None
            raise


def _accepted_keywords(fn: Callable[..., Any], n_args: int) -> tuple[set[str] | None, set[str]]:
    """Parameter names a callable takes by keyword (None: any, it has **kwargs), and the
    names of its first ``n_args`` positional parameters (filled by the contract's arguments)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, set()
    params = list(sig.parameters.values())
    positional = {p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)}
    first = {p.name for p in params[:n_args] if p.name in positional}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None, first
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, first


# Positional arguments of each kind's contract, and keywords the builder passes as context:
# neither is an option.
CONTRACT_ARGS: dict[str, tuple[str, ...]] = {
    "network": ("data_shape", "out_features", "context_features", "latent_dim"),
    "posterior": ("latent_dim",),
    "flow": ("latent_dim",),
    "prior": ("latent_dim",),
    "likelihood": ("data_shape",),
    "objective": (),
    "divergence": (),
}
# ``code_space``: a discrete posterior's positions and codes (None for a continuous one),
# for the priors over its codes.
CONTEXT_KEYWORDS = frozenset(
    {"data_shape", "num_classes", "encoder_width", "encoder_activation", "latent_dim", "code_space"}
)

_SIMPLE_TYPES = (int, float, str, bool)


def _options_from_signature(kind: str, name: str, fn: Any) -> type:
    """A dataclass of the keyword parameters of ``fn`` beyond its contract's arguments."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        sig = inspect.signature(target)
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError):
        return NoOptions
    skip = set(CONTRACT_ARGS.get(kind, ())) | CONTEXT_KEYWORDS | {"self"}
    fields: list[Any] = []
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    # The contract's arguments come first, whatever the user named them.
    contract = len(CONTRACT_ARGS.get(kind, ()))
    if kind == "network":
        contract = 3  # an encoder's (data_shape, out_features, context_features)
    lead = {p.name for p in positional[:contract] if p.default is p.empty}
    for p in sig.parameters.values():
        if p.name in skip or p.name in lead or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        tp = hints.get(p.name, Any)
        if not _plain_type(tp):
            tp = Any
        if p.default is p.empty:
            fields.append((p.name, tp))
        elif isinstance(p.default, (list, dict)):
            fields.append((p.name, tp, field(default_factory=_copier(p.default))))
        else:
            fields.append((p.name, tp, field(default=p.default)))
    # Required options first: dataclasses refuse a field without a default after one with.
    fields.sort(key=lambda f: len(f) == 3)
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return dataclasses.make_dataclass(f"Options_{safe}", fields)


def _copier(value: Any) -> Callable[[], Any]:
    return lambda: copy.deepcopy(value)


def _plain_type(tp: Any) -> bool:
    """Types the config converter knows: int, float, str, bool, lists and unions of them."""
    if tp in _SIMPLE_TYPES:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return len(args) == 1 and _plain_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return all(a is type(None) or _plain_type(a) for a in args)
    return False


def _top_level(text: str, end: int) -> bool:
    """Whether position ``end`` of ``text`` is outside parentheses and `code`."""
    head = text[:end]
    return head.count("(") == head.count(")") and len(re.findall("`+", head)) % 2 == 0


def first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph; a long one up to its first
    colon, so that it fits a line (a part's summary, as ``vaekit parts`` lists it)."""
    para = " ".join(doc.split("\n\n", 1)[0].split())
    first = para
    # A full stop ends it, except after an abbreviation (Kingma et al. 2016, e.g.).
    for match in re.finditer(r"\.(\s|$)", para):
        word = para[: match.start()].rsplit(" ", 1)[-1]
        if word not in ("al", "e.g", "i.e", "cf", "vs") and _top_level(para, match.start()):
            first = para[: match.start() + 1]
            break
    if len(first) > 100:
        colon = next(
            (m.start() for m in re.finditer(": ", first) if _top_level(first, m.start())), None
        )
        if colon is not None:
            first = first[:colon] + "."
    return first


# -- import paths ---------------------------------------------------------------------------------


def import_path_problem(name: str, noun: str = "Class") -> str | None:
    """What is wrong with ``name`` as a ``module:Object`` import path; None when nothing is
    (or when it has no colon, so it is no import path at all). ``noun`` is what the path
    names: ``Class`` for a part, ``function`` for a dataset.

    Example:
        >>> import_path_problem("myparts:")
        "'myparts:' names nothing after the colon: write myparts:Class"
    """
    if ":" not in name:
        return None
    module, _, attr = name.partition(":")
    if any(c.isspace() for c in name.strip()):
        return f"{short(name)} has a space in it: write module:{noun} without any"
    if not module.strip():
        return (
            f"{short(name)} names no module before the colon: write module:{noun} "
            f"(my_parts:{noun}, pkg.parts:{noun}), with the module's folder on PYTHONPATH"
        )
    if not attr.strip():
        return f"{short(name)} names nothing after the colon: write {module.strip()}:{noun}"
    bad = next((p for p in module.split(".") if not p.isidentifier()), None)
    if bad is not None:
        return (
            f"{short(name)}: {bad!r} is not a Python module name (module:{noun}, the module a "
            "dotted name of identifiers such as my_parts or pkg.parts, as `import` takes it)"
        )
    if not all(p.isidentifier() for p in attr.split(".")):
        return (
            f"{short(name)}: {attr!r} is not a Python name (module:{noun}: one colon, then "
            f"the name of the {noun.lower()} in the module)"
        )
    return None


def is_import_path(name: str) -> bool:
    """``module:Object`` (``pkg.mod:Class``) names a user's part by import path."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr) and all(
        p.isidentifier() for p in [*module.split("."), *attr.split(".")]
    )


def import_object(path: str, what: str = "part") -> Any:
    """The object that ``module:Name`` names; a clear error when it cannot be imported."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.split(".")[0] == e.name.split(".")[0]:
            raise PartError(
                f"cannot import module {short(module_name)} for the {what} {short(path)}: put the folder that "
                f"holds {module_name.replace('.', '/')}.py on PYTHONPATH (for example "
                f"`PYTHONPATH=/path/to/folder vaekit ...`)"
            ) from None
        raise PartError(
            f"importing {short(module_name)} for the {what} {short(path)} failed: {e}"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise PartError(
            f"importing {short(module_name)} for the {what} {short(path)} failed: {type(e).__name__}: {e}"
        ) from None
    obj: Any = module
    for piece in attr.split("."):
        if not hasattr(obj, piece):
            names = [n for n in dir(module) if not n.startswith("_")]
            hint = difflib.get_close_matches(piece, names, n=1)
            extra = f" Did you mean {module_name}:{hint[0]}?" if hint else ""
            raise PartError(
                f"module {short(module_name)} has no {piece!r} (the {what} {short(path)}).{extra}"
            )
        obj = getattr(obj, piece)
    return obj


# -- registries -----------------------------------------------------------------------------------

# The registries by kind, installed by vaekit.registry when it is imported: a part that
# holds another part (an objective's divergence) finds it here, at build time, instead of
# importing the registry (which imports every part, the part itself among them).
_INSTALLED: dict[str, Registry] = {}


def install_registries(registries: typing.Mapping[str, Registry]) -> None:
    """Make ``registries`` (kind -> Registry) the ones :func:`lookup` serves."""
    _INSTALLED.update(registries)


def registry_of(kind: str) -> Registry:
    """The installed registry of ``kind`` (see :func:`lookup`)."""
    registry = _INSTALLED.get(kind)
    if registry is None:
        # The built-in parts register themselves when vaekit.registry is imported; a part
        # used on its own (vaekit.objectives.ELBO(divergence="mmd")) loads them here. A
        # late load by name, not an import of a module above: vaekit.registry is the one
        # module that imports every part.
        importlib.import_module("vaekit.registry")
        registry = _INSTALLED[kind]
    return registry


def lookup(kind: str, name: str, where: str | None = None) -> Part:
    """The part ``name`` of ``kind`` from the installed registries (:mod:`vaekit.registry`).

    Example:
        >>> import vaekit.registry
        >>> lookup("divergence", "mmd").abilities.kl
        False
    """
    return registry_of(kind).get(name, where)


def nested_part(kind: str, value: Any, where: str) -> PartConfig:
    """A part setting held inside another part's options (a name, a mapping with a name and
    options, or a PartConfig) as a PartConfig with checked options. The config layer parses
    these with its converters; this serves options built in Python
    (``ELBO.Options(divergence="mmd")``)."""
    if isinstance(value, PartConfig) and value.options is not None:
        return value
    if isinstance(value, PartConfig):
        value = value.name
    data = {"name": value} if isinstance(value, str) else dict(value)
    name = data.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(
            f"{where} must be a {kind} name or a mapping with a name, got {short(value)}"
        )
    part = lookup(kind, name, where)
    try:
        options = part.options(**data)
    except TypeError as e:
        raise ConfigError(f"{where}: {kind} {name!r}: {e}") from None
    validate = getattr(options, "validate", None)
    if callable(validate):
        validate(where)
    return PartConfig(name, options)


class Registry:
    """The parts of one kind by name; ``module:Class`` names a user's part.

    Example:
        >>> from vaekit.registry import LIKELIHOODS
        >>> "bernoulli" in LIKELIHOODS.names()
        True
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        # The class a part of the user's (by import path) must subclass; a network may
        # instead be a holder of the staticmethods ``encoder`` and ``decoder``.
        self.base = base
        self._parts: dict[str, Part] = {}
        self._imported: dict[str, Part] = {}

    def add(self, name: str, obj: Any) -> Part:
        """Register ``obj`` under ``name``; returns its :class:`Part`."""
        if name in self._parts:
            raise PartError(f"a {self.kind} named {name!r} is registered already")
        part = Part.from_class(self.kind, name, obj)
        self._parts[name] = part
        return part

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._parts)

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self) -> Iterator[Part]:
        return iter(self._parts[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._parts)

    def get(self, name: str, where: str | None = None) -> Part:
        """The part called ``name``, importing ``module:Class`` names on first use."""
        part = self._parts.get(name)
        if part is not None:
            return part
        if name.startswith(PYTHON_PART):
            return self._python_part(name)
        if is_import_path(name):
            cached = self._imported.get(name)
            if cached is None or _module_reloaded(name):
                obj = import_object(name, self.kind)
                self._check_user_class(name, obj, where or self.kind)
                cached = Part.from_class(self.kind, name, obj, user=True)
                self._imported[name] = cached
            return cached
        where = where or self.kind
        problem = import_path_problem(str(name))
        if problem is not None:
            raise PartError(f"{where}: {problem}")
        hint = difflib.get_close_matches(str(name), self.names(), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        # The catalogue (vaekit.catalog) says what each one is and takes.
        raise ConfigError(
            f"{where} must be one of {', '.join(self.names())}, or a class of yours as "
            f"module:Class; got {short(name)}{extra}; `vaekit parts {self.kind}` describes each"
        )

    def _check_user_class(self, path: str, obj: Any, where: str) -> None:
        """A part of the user's must be a class of the kind's base (built with its options),
        or for a network a holder of ``encoder`` and ``decoder`` builders."""
        base = self.base
        if base is None:
            return
        holder = self.kind == "network" and all(
            callable(getattr(obj, role, None)) for role in ("encoder", "decoder")
        )
        if inspect.isclass(obj) and (issubclass(obj, base) or holder):
            return
        args = ", ".join([*CONTRACT_ARGS.get(self.kind, ()), "**options"])
        if self.kind == "network":
            args = "data_shape, out_features, context_features, **options) (a decoder: Class(latent_dim, ..."
        extra = (
            " (or a class with the staticmethods encoder(...) and decoder(...))"
            if self.kind == "network"
            else ""
        )
        article = "an" if self.kind[0] in "aeiou" else "a"
        if inspect.isclass(obj):
            raise PartError(
                f"{where}: {short(path)} names the class {obj.__name__}, which does not subclass "
                f"{_type_name(base)}{extra}: {article} {self.kind} of yours is such a class, "
                f"built as Class({args}); see docs/guides/parts-of-your-own.md"
            )
        raise PartError(
            f"{where}: {short(path)} names {_describe(obj)}, not a class: {article} {self.kind} "
            f"of yours is a class, a subclass of {_type_name(base)}{extra}, built as "
            f"Class({args}); see docs/guides/parts-of-your-own.md"
        )

    def _python_part(self, name: str) -> Part:
        """A part given as a Python object: described, never rebuilt from the config."""
        kind = self.kind

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise PartError(
                f"the {kind} {name[len(PYTHON_PART) :]} was given as a Python object, so a run "
                "that uses it cannot be rebuilt from its config.json: build the same model again "
                "and pass it (vaekit.load(RUN, model=model), vaekit.fit(model, RUN, resume=True, "
                "data=...); an objective object: fit(..., objective=objective))"
            )

        return Part(
            kind,
            name,
            refuse,
            NoOptions,
            ABILITIES[kind](),
            encoder=refuse,
            decoder=refuse,
            user=True,
        )


def _type_name(cls: type) -> str:
    """The name a user imports ``cls`` by: torch.nn.Module, vaekit.objectives.Objective."""
    if cls.__module__.startswith("torch.nn."):
        return f"torch.nn.{cls.__qualname__}"
    # vaekit.objectives was one module before it became a package of one file per family:
    # its classes keep the path users import them by (vaekit.objectives.Objective).
    module = cls.__module__
    parent = module.rsplit(".", 1)[0]
    if (
        parent == "vaekit.objectives"
        and getattr(sys.modules.get(parent), cls.__qualname__, None) is cls
    ):
        module = parent
    return f"{module}.{cls.__qualname__}"


def _describe(obj: Any) -> str:
    """What an object is, in words: a function, a module, an int object."""
    if inspect.isroutine(obj):
        return f"the function {getattr(obj, '__name__', '?')}"
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    return f"an object of type {type(obj).__name__}"


def _module_reloaded(path: str) -> bool:
    # A module removed from sys.modules (tests re-import user files) is imported afresh.
    return path.partition(":")[0] not in sys.modules
