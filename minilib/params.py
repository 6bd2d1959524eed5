"""Notebook parameters: profiles, parsing and validation in the first cell after ``parameters``.

Every notebook's ``parameters`` cell holds plain literals (what papermill overrides), among them

* ``profile``: ``"test"`` (what nbval runs: tiny models, seconds), ``"default"`` (offline on the
  embedded models, CPU-feasible; what ``make reproduce`` runs) or ``"paper"`` (the original studies'
  settings, meant for a GPU, on hub models: ``HubOr`` values);
* ``None`` for every setting that depends on the profile: it is filled from the study's profile table;
  any explicit value (``papermill -p nsamples 64``) wins over the profile;
* ``results_path`` / ``figures_dir``: ``""`` means a fresh run folder ``runs/<notebook>/<time>/``, so a
  run with custom parameters never overwrites the committed ``results/`` and ``figures/`` (only
  ``make reproduce`` writes there, by passing both paths).

The next cell calls ``resolve``, which checks every value against the notebook's spec (types,
ranges, choices, a writable ``results_path``) and fails in seconds with an error naming the
parameter, the value and what is allowed -- before any compute.  Lists and dicts passed with
``papermill -p`` arrive as strings; they are parsed (YAML), so ``-p ratios "[0.1, 0.3]"`` works
(``-y``/``-f params.yaml`` are the papermill ways for structured values).

    resolved = resolve("SparseGPT_one_shot", globals(), SPEC, PROFILES)
    globals().update(resolved)                           # the notebook reads plain names
    ...
    write_results(results_path, {"notebook": ..., "metrics": ...}, parameters=resolved)   # recorded once

``resolve`` returns a ``Parameters`` dict; ``Parameters.recorded()`` (what ``write_results`` records)
leaves out where outputs and caches go (``results_path``, ``figures_dir``, other ``*_dir`` /
``*_path``) and ``allow_fallback``.

Hub models (``HubOr``).  A ``paper`` profile names a hub model (``facebook/opt-125m``, ``gpt2``, ...) with
an embedded fallback.  When the hub is not reachable (``HF_HUB_OFFLINE=1``, or no connection to
huggingface.co within 3 s, probed once per process), ``resolve`` raises ``HubUnreachableError`` naming
the parameter and both models: the fallback would run a different model with the paper-sized settings,
which is not the paper's experiment.  Opt in with ``MINILIB_ALLOW_FALLBACK=1`` in the environment (or
``papermill -p allow_fallback True``, or ``resolve(..., allow_fallback=True)``); ``resolve`` then warns
(``HubFallbackWarning``, one line naming both models) and uses the embedded model.  An explicit
``-p model ...`` is never replaced.  The specs and profiles of the notebooks are in ``minilib.profiles``.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PROFILES = ("test", "default", "paper")
ROOT = Path(__file__).resolve().parent.parent


class ParameterError(ValueError):
    """A notebook parameter with a wrong type or value; ``name``: the parameter, where one is at fault."""

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name


class HubUnreachableError(ParameterError):
    """A profile's hub model cannot be used (the hub is not reachable) and no fallback was allowed."""

    def __init__(self, message: str, name: str, hub: str, offline: str):
        super().__init__(message, name)
        self.hub, self.offline = hub, offline


class HubFallbackWarning(UserWarning):
    """A profile's hub model was replaced by its embedded fallback (``MINILIB_ALLOW_FALLBACK=1``)."""

    def __init__(self, message: str, name: str = "", hub: str = "", offline: str = ""):
        super().__init__(message)
        self.name, self.hub, self.offline = name, hub, offline


@dataclass(frozen=True)
class Param:
    """What one parameter may hold.

    ``kind``: ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict`` or ``any``; ``lo``/``hi``:
    inclusive bounds for numbers (``hi_open``: the upper bound is excluded); ``choices``: allowed
    values; ``item``: a ``Param`` every list element (or dict value) must satisfy; ``optional``: None
    allowed after profile resolution; ``min_len``: the smallest list/dict length; ``check``: a
    callable that raises ``ParameterError`` for values no bound can describe."""

    kind: str = "any"
    lo: float | None = None
    hi: float | None = None
    hi_open: bool = False
    choices: tuple | None = None
    item: "Param | None" = None
    optional: bool = False
    min_len: int = 0
    help: str = ""
    check: Callable[[Any], None] | None = field(default=None, compare=False)

    def validate(self, name: str, value):
        if value is None:
            if self.optional:
                return None
            raise ParameterError(f"parameter {name!r} is None and the profile gives no value")
        v = _coerce(name, value, self.kind)
        if self.choices is not None and v not in self.choices:
            raise ParameterError(f"parameter {name!r} = {v!r}: must be one of {list(self.choices)}")
        if self.kind in ("int", "float"):
            if isinstance(v, float) and not math.isfinite(v):
                raise ParameterError(f"parameter {name!r} = {v!r}: must be a finite number")
            if self.lo is not None and v < self.lo:
                raise ParameterError(f"parameter {name!r} = {v!r}: must be >= {self.lo}{self._range()}")
            if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
                raise ParameterError(f"parameter {name!r} = {v!r}: must be {'<' if self.hi_open else '<='} "
                                     f"{self.hi}{self._range()}")
        if self.kind in ("list", "dict"):
            if len(v) < self.min_len:
                raise ParameterError(f"parameter {name!r} needs at least {self.min_len} entr"
                                     f"{'y' if self.min_len == 1 else 'ies'}, got {v!r}")
            if self.item is not None:
                items = v.items() if isinstance(v, dict) else enumerate(v)
                v = type(v)((k, self.item.validate(f"{name}[{k!r}]", x)) for k, x in items) \
                    if isinstance(v, dict) else [self.item.validate(f"{name}[{k}]", x) for k, x in items]
        if self.check is not None:
            self.check(v)
        return v

    def _range(self) -> str:
        if self.lo is None and self.hi is None:
            return ""
        lo = "-inf" if self.lo is None else self.lo
        hi = "inf" if self.hi is None else self.hi
        return f" (allowed: [{lo}, {hi}{')' if self.hi_open else ']'})"


def Int(lo=None, hi=None, **kw) -> Param:  # noqa: N802  (reads like a type)
    return Param("int", lo, hi, **kw)


def Float(lo=None, hi=None, **kw) -> Param:  # noqa: N802
    return Param("float", lo, hi, **kw)


def Fraction(**kw) -> Param:  # noqa: N802
    """A number in [0, 1)."""
    return Param("float", 0.0, 1.0, hi_open=True, **kw)


def Str(choices=None, **kw) -> Param:  # noqa: N802
    return Param("str", choices=tuple(choices) if choices is not None else None, **kw)


def Bool(**kw) -> Param:  # noqa: N802
    return Param("bool", **kw)


def List(item: Param | None = None, min_len: int = 0, **kw) -> Param:  # noqa: N802
    return Param("list", item=item, min_len=min_len, **kw)


def Dict(item: Param | None = None, min_len: int = 0, **kw) -> Param:  # noqa: N802
    return Param("dict", item=item, min_len=min_len, **kw)


def _parse_structured(name: str, value: str, kind: str):
    import yaml
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ParameterError(f"parameter {name!r}: could not parse {value!r} as a {kind} ({e})") from None
    return parsed


def _coerce(name: str, value, kind: str):
    if kind == "any":
        return value
    if kind in ("list", "dict") and isinstance(value, str):  # papermill -p passes structures as strings
        value = _parse_structured(name, value, kind)
    if kind == "list":
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ParameterError(f"parameter {name!r} must be a list, got {value!r} ({type(value).__name__})")
        return value
    if kind == "dict":
        if not isinstance(value, dict):
            raise ParameterError(f"parameter {name!r} must be a dict, got {value!r} ({type(value).__name__})")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
            raise ParameterError(f"parameter {name!r} must be an integer, got {value!r} ({type(value).__name__})")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ParameterError(f"parameter {name!r} must be a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ParameterError(f"parameter {name!r} must be a string, got {value!r} ({type(value).__name__})")
        return value
    raise ValueError(f"unknown parameter kind {kind!r}")


# --- run folders ------------------------------------------------------------------------------

def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:  # the run folder, then the parents it created
        try:
            folder.rmdir()  # only an empty folder: whatever a run wrote stays
        except OSError:
            return


def run_dir(notebook: str, profile: str) -> Path:
    """A fresh folder for one run's outputs, created now: ``runs/<notebook>/<profile>-<time>/`` under
    the repository (or the working directory for an installed package).  If the process ends with
    the folder still empty (the run failed before writing anything), the folder is removed, and so
are the parents it created if they are empty then."""
    base = ROOT if (ROOT / "notebooks").is_dir() else Path.cwd()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while True:  # reserve the folder: two runs started in the same second get different ones
        d = base / "runs" / notebook / (f"{profile}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            created = [p for p in [d, *d.parents] if not p.exists()]
            d.mkdir(parents=True)
            atexit.register(_remove_if_empty, created)
            return d
        except FileExistsError:
            n += 1


def check_writable(name: str, path: Path) -> Path:
    """Fail now, not after the compute, if ``path`` (a file to be written) cannot be written."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise ParameterError(f"parameter {name!r} = {str(path)!r} is a folder; give a file path (e.g. .../results.json)")
    parent = path.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise ParameterError(f"parameter {name!r}: cannot write under {str(probe)!r} (no permission)")
    if path.exists() and not os.access(path, os.W_OK):
        raise ParameterError(f"parameter {name!r}: {str(path)!r} exists and is not writable")
    return path


FALLBACK_ENV = "MINILIB_ALLOW_FALLBACK"
_TRUE = ("1", "true", "yes", "on")

COMMON = {
    "profile": Str(PROFILES, help="test | default | paper (hub models: an error when the hub is unreachable, "
                                  f"unless {FALLBACK_ENV}=1 or allow_fallback=True)"),
    "device": Str(help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N'"),
    "results_path": Str(help="results JSON; '' = a fresh run folder"),
    "figures_dir": Str(help="figures folder; '' = the run folder"),
    "allow_fallback": Bool(optional=True, help="a profile's hub model (paper) when the hub is unreachable: "
                                               "True runs its embedded fallback with the same (paper-sized) "
                                               "settings, with a warning; False/None (default): an error. "
                                               f"Also {FALLBACK_ENV}=1 in the environment"),
}

_HUB_PROBE: dict = {}  # timeout -> (monotonic time, answer): the hub is probed once a minute at most
_HUB_PROBE_TTL = 60.0


def hub_offline_by_env() -> bool:
    """Whether ``HF_HUB_OFFLINE`` switches the hub off."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds, name lookup included (and is not
    switched off by ``HF_HUB_OFFLINE``).  One probe, no retries; the answer is kept for a minute."""
    if hub_offline_by_env():
        return False
    hit = _HUB_PROBE.get(timeout)
    if hit is not None and time.monotonic() - hit[0] < _HUB_PROBE_TTL:
        return hit[1]
    import socket
    answer = []

    def probe():  # in a thread: a name lookup is not bounded by the socket timeout
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            answer.append(True)
        except Exception:  # noqa: BLE001 - any failure of the probe means "not reachable", never a crash
            answer.append(False)

    t = threading.Thread(target=probe, name="minilib-hub-probe", daemon=True)
    t.start()
    t.join(timeout)
    ok = bool(answer and answer[0])
    _HUB_PROBE[timeout] = (time.monotonic(), ok)
    return ok


def fallback_allowed(explicit: bool | None = None) -> bool:
    """``explicit`` when given, else whether ``MINILIB_ALLOW_FALLBACK`` is set to 1/true/yes/on."""
    if explicit is not None:
        return bool(explicit)
    return os.environ.get(FALLBACK_ENV, "").strip().lower() in _TRUE


@dataclass(frozen=True)
class HubOr:
    """A profile value: the hub model ``hub``; ``offline`` is the embedded model ``resolve`` may use instead
    when the hub is unreachable and the fallback is allowed (``MINILIB_ALLOW_FALLBACK=1``)."""

    hub: str
    offline: str

    def pick(self, allow_fallback: bool = True) -> str:
        """``hub`` when the hub is reachable; else ``offline`` (or a ``HubUnreachableError`` if not
        ``allow_fallback``)."""
        if hub_reachable():
            return self.hub
        if not allow_fallback:
            raise HubUnreachableError(_unreachable_message("model", self, None), "model", self.hub, self.offline)
        return self.offline


def _why_unreachable() -> str:
    return "HF_HUB_OFFLINE is set" if hub_offline_by_env() else "no connection to huggingface.co:443 within 3 s"


def _unreachable_message(name: str, v: HubOr, profile: str | None) -> str:
    prof = f"the {profile!r} profile" if profile else "the profile"
    return (f"parameter {name!r}: {prof} runs the hub model {v.hub!r}, but the Hugging Face hub is not reachable "
            f"({_why_unreachable()}). Run where the hub is reachable, pass a model explicitly (papermill -p {name} "
            f"{v.offline}), or opt into the embedded fallback {v.offline!r} with the profile's paper-sized settings: "
            f"{FALLBACK_ENV}=1 (or papermill -p allow_fallback True)")


class Spec(dict):
    """A notebook's parameter spec (``name -> Param``) with the checks that relate parameters to each
    other: ``checks`` are functions of the resolved values (a dict) that raise ``ParameterError``
    naming every parameter involved.  ``resolve`` runs them after each value passed its own check and
    before any folder is made; ``minilib.profiles.plan`` reports them as problems of the plan."""

    def __init__(self, params: dict, checks=()):
        super().__init__(params)
        self.checks = tuple(checks)


def check_relations(spec: dict, values: dict) -> None:
    """Run ``spec``'s cross-parameter checks (none for a plain dict) on resolved ``values``."""
    for check in getattr(spec, "checks", ()):
        check(values)


def fallback_message(name: str, v: HubOr, profile: str | None) -> str:
    """The one-line warning of a hub model replaced by its embedded fallback."""
    prof = f"{profile!r} profile" if profile else "profile"
    return (f"[params] HUB FALLBACK: {name}: the Hugging Face hub is not reachable ({_why_unreachable()}); running "
            f"the embedded {v.offline!r} INSTEAD OF {v.hub!r} with the {prof}'s paper-sized settings "
            f"(allowed by {FALLBACK_ENV} / allow_fallback); results are not the paper model's")


class Parameters(dict):
    """A notebook's checked parameters (what ``resolve`` returns; a dict, so ``globals().update`` takes
    it) and the notebook's name.  ``recorded()``: the ones its results record."""

    def __init__(self, values: dict, notebook: str = ""):
        super().__init__(values)
        self.notebook = notebook

    def recorded(self) -> dict:
        """Every parameter but where outputs and caches go and the fallback policy (``results_path``,
        ``figures_dir``, any other ``*_dir`` / ``*_path``, ``allow_fallback``): the ``parameters`` of
        the notebook's results (``minilib.results.write_results(..., parameters=...)``)."""
        return {k: v for k, v in self.items() if not unrecorded(k)}


def unrecorded(name: str) -> bool:
    """Parameters a results file does not record: output and cache locations, the fallback policy."""
    return name == "allow_fallback" or name.endswith(("_dir", "_path"))


def resolve(notebook: str, values: dict, spec: dict[str, Param], profiles: dict[str, dict],
            verbose: bool = True, *, hub: bool | None = None, allow_fallback: bool | None = None,
            relations: bool = True) -> dict:
    """The notebook's parameters, filled from its profile and checked (a ``Parameters`` dict).

    ``values``: the notebook's namespace (``globals()``); only names in ``spec`` (plus the common ones:
    ``profile``, ``device``, ``results_path``, ``figures_dir``, ``allow_fallback``) are read.  A value of
    ``None`` is taken from ``profiles[profile]``.  Returns a dict of every checked parameter, with
    ``results_path`` and ``figures_dir`` made absolute (a fresh run folder when they were ``""``).

    A ``HubOr`` value becomes its hub model when the hub is reachable (``hub``: None probes it once,
    ``hub_reachable``; True/False take the answer as given, without probing: ``minilib.profiles.plan``).
    When it is not: ``HubUnreachableError`` unless the fallback is allowed (``allow_fallback``, else the
    ``allow_fallback`` value in ``values``, else ``MINILIB_ALLOW_FALLBACK``), and then a
    ``HubFallbackWarning`` and the embedded model."""
    full = {**COMMON, **spec}
    profile = values.get("profile", "default")
    COMMON["profile"].validate("profile", profile)
    table = profiles.get(profile)
    if table is None:
        raise ParameterError(f"notebook {notebook!r} has no {profile!r} profile; profiles: {sorted(profiles)}")
    unknown = set(table) - set(full)
    if unknown:
        raise ValueError(f"profile {profile!r} of {notebook!r} sets unknown parameters {sorted(unknown)}")
    if allow_fallback is None and values.get("allow_fallback") is not None:
        allow_fallback = COMMON["allow_fallback"].validate("allow_fallback", values["allow_fallback"])
    reachable = hub  # probed at the first HubOr value only
    out = {}
    for name, p in full.items():
        if name not in values and name not in table:
            continue
        v = values.get(name)
        if v is None and name in table:
            v = table[name]
        if isinstance(v, HubOr):
            if reachable is None:
                reachable = hub_reachable()
            if reachable:
                v = v.hub
            elif not fallback_allowed(allow_fallback):
                raise HubUnreachableError(_unreachable_message(name, v, profile), name, v.hub, v.offline)
            else:
                warnings.warn(HubFallbackWarning(fallback_message(name, v, profile), name, v.hub, v.offline),
                              stacklevel=2)
                v = v.offline
        out[name] = p.validate(name, v)
    if relations:  # off for minilib.profiles.plan, which reports them as problems
        check_relations(spec, out)
    folder = None
    if "results_path" in out:
        if out["results_path"] == "":
            folder = run_dir(notebook, profile)
            out["results_path"] = str(folder / "results.json")
        out["results_path"] = str(check_writable("results_path", Path(out["results_path"])))
    if "figures_dir" in out:
        if out["figures_dir"] == "":
            if folder is None:
                folder = Path(out["results_path"]).parent if "results_path" in out else run_dir(notebook, profile)
            out["figures_dir"] = str(folder / "figures")
        fd = Path(out["figures_dir"]).expanduser().resolve()
        if fd.exists() and not fd.is_dir():
            raise ParameterError(f"parameter 'figures_dir' = {str(fd)!r} is a file, not a folder")
        check_writable("figures_dir", fd / ".probe")
        out["figures_dir"] = str(fd)
    if "device" in out:
        from minilib.device import DeviceError, resolve_device
        try:
            resolve_device(out["device"])
        except DeviceError as e:
            raise ParameterError(f"parameter 'device': {e}") from None
    if verbose:
        shown = {k: v for k, v in out.items() if k not in ("results_path", "figures_dir")}
        print(f"[params] {notebook} ({profile}): {shown}")
        if "results_path" in out:
            print(f"[params] results -> {out['results_path']}")
        if "figures_dir" in out:
            print(f"[params] figures -> {out['figures_dir']}")
    return Parameters(out, notebook)
