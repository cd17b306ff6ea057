"""Which execution provider runs a graph: discovery and selection through onnxruntime and OpenVINO.

Nothing here dispatches work itself. onnxruntime's plugin-EP registry lists the devices
(``get_ep_devices``) and places nodes (``add_provider_for_devices`` / its selection policy);
OpenVINO lists and compiles for its own devices. This module only turns ``--device``,
``--backend`` and ``--ep`` into those libraries' calls, and says what it chose.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import onnxruntime as ort

from amanuensis.errors import OptionsError, UserError

BACKENDS = ("onnxruntime", "openvino")
DEVICES = ("auto", "npu", "gpu", "cpu")
CPU_EP = "CPUExecutionProvider"


class DeviceUnavailable(UserError, RuntimeError):
    """The requested device or execution provider is not present and fallback was refused."""


@dataclass(frozen=True)
class PluginEP:
    """An execution provider shipped as a separate pip package (onnxruntime's plugin-EP form)."""

    ep_name: str  # the name onnxruntime registers it under
    module: str  # Python package that carries the shared library
    extra: str  # pyproject extra that installs it
    options: Callable[[object], dict[str, str]] = lambda module: {}  # provider options from the package


def _qnn_options(module: object) -> dict[str, str]:
    # The HTP backend is the NPU (Hexagon); on x86 the same library is Qualcomm's HTP emulator.
    return {"backend_path": module.get_qnn_htp_path()}  # type: ignore[attr-defined]


PLUGINS = (
    PluginEP("QNNExecutionProvider", "onnxruntime_qnn", "qnn", _qnn_options),
    PluginEP("OpenVINOExecutionProvider", "onnxruntime_ep_openvino", "openvino"),
)
# Hardware an EP device is reported on, in the words --device uses.
HARDWARE_NAMES = {
    ort.OrtHardwareDeviceType.CPU: "cpu",
    ort.OrtHardwareDeviceType.GPU: "gpu",
    ort.OrtHardwareDeviceType.NPU: "npu",
}

_registered: dict[str, str] = {}  # ep name → library path, registered in this process
_registration_errors: dict[str, str] = {}  # ep name → why its library could not be registered
_lock = threading.Lock()


def register_plugins() -> None:
    """Register every installed plugin-EP package with onnxruntime, once per process."""
    # libsndfile loaded after the QNN EP's libraries crashes on its first read (exit 139, every
    # run of `transcribe --ep QNNExecutionProvider`); loaded before them it works, so load it first.
    import soundfile  # noqa: F401

    with _lock:
        for plugin in PLUGINS:
            if plugin.ep_name in _registered or plugin.ep_name in _registration_errors:
                continue
            try:
                module = importlib.import_module(plugin.module)
            except ImportError:
                continue  # not installed: nothing to say unless the user asks for it
            try:
                path = module.get_library_path()
                ort.register_execution_provider_library(plugin.ep_name, path)
            except Exception as error:  # a broken install must not stop the CPU path
                _registration_errors[plugin.ep_name] = str(error).splitlines()[0]
                continue
            _registered[plugin.ep_name] = path


def plugin_options(ep_name: str) -> dict[str, str]:
    for plugin in PLUGINS:
        if plugin.ep_name == ep_name:
            return plugin.options(importlib.import_module(plugin.module))
    return {}


@dataclass(frozen=True)
class DeviceEntry:
    """One (execution provider, hardware device) pair a session could use."""

    backend: str  # "onnxruntime" | "openvino"
    ep: str  # onnxruntime EP name, or the OpenVINO device name (CPU, NPU, GPU.0, …)
    hardware: str  # "cpu" | "gpu" | "npu"
    vendor: str  # hardware vendor as the library reports it
    name: str = ""  # full device name where the library gives one
    note: str = ""  # anything the user should know (emulator, registration error)


def _ep_note(ep_name: str, hardware: str) -> str:
    if ep_name == "QNNExecutionProvider" and hardware == "cpu":
        return "Qualcomm HTP emulator on x86 (the NPU compiler, run in software; slow)"
    return ""


def onnxruntime_devices() -> list[object]:
    """onnxruntime's OrtEpDevice list after registering the installed plugin EPs."""
    register_plugins()
    return list(ort.get_ep_devices())


def list_devices() -> list[DeviceEntry]:
    """Everything both backends can see here, plus plugin packages that failed to register."""
    entries = []
    ep_devices = onnxruntime_devices()
    for ep_device in ep_devices:
        hardware = HARDWARE_NAMES.get(ep_device.device.type, str(ep_device.device.type))
        entries.append(
            DeviceEntry(
                "onnxruntime",
                ep_device.ep_name,
                hardware,
                ep_device.device.vendor,
                note=_ep_note(ep_device.ep_name, hardware),
            )
        )
    offered = {d.ep_name for d in ep_devices}
    for ep_name in _registered:
        if ep_name not in offered:
            entries.append(
                DeviceEntry("onnxruntime", ep_name, "-", "", note="plugin registered; it offers no device here")
            )
    for ep_name, error in _registration_errors.items():
        entries.append(DeviceEntry("onnxruntime", ep_name, "?", "", note=f"not registered: {error}"))
    core = _openvino_core()
    for name in core.available_devices if core else []:
        full_name = str(core.get_property(name, "FULL_DEVICE_NAME"))
        entries.append(DeviceEntry("openvino", name, name.split(".")[0].lower(), "", full_name))
    return entries


def _openvino_core():  # -> openvino.Core | None; openvino is an optional extra
    try:
        import openvino
    except ImportError:
        return None
    return openvino.Core()


def openvino_devices() -> list[str]:
    """OpenVINO's device names (CPU, NPU, GPU.0, …); empty when it is not installed."""
    core = _openvino_core()
    return list(core.available_devices) if core else []


@dataclass(frozen=True)
class SessionPlan:
    """What a session will be asked to use, decided before it is created."""

    backend: str  # "onnxruntime" | "openvino"
    ep: str  # chosen EP (onnxruntime) or device string (OpenVINO, e.g. "AUTO:NPU,CPU")
    hardware: str  # "cpu" | "gpu" | "npu"
    requested: str  # the --device value it answers
    fallback_reason: str = ""  # why the requested device is not what runs, if it is not
    ep_devices: list = field(default_factory=list, compare=False)  # OrtEpDevice objects (onnxruntime)
    ep_options: dict[str, str] = field(default_factory=dict)  # provider options for add_provider_for_devices

    def describe(self) -> str:
        text = f"{self.backend} {self.ep} ({self.hardware})"
        return f"{text}; {self.fallback_reason}" if self.fallback_reason else text


def _fallback(requested: str, reason: str, allow: bool, backend: str = "onnxruntime") -> SessionPlan:
    """The CPU of the same backend in place of a missing device, or an error under --no-fallback."""
    if not allow:
        raise DeviceUnavailable(f"{reason}; not falling back to the CPU (--no-fallback)")
    cpu = CPU_EP if backend == "onnxruntime" else "CPU"
    return SessionPlan(backend, cpu, "cpu", requested, fallback_reason=f"{reason}, using the CPU")


def plan_onnxruntime(device: str, ep: str | None = None, allow_fallback: bool = True) -> SessionPlan:
    """Choose onnxruntime EP devices for ``--device`` (or one named ``--ep``).

    ``auto`` prefers an NPU-type device, then the CPU EP. It does not hand the choice to
    ``PREFER_NPU`` unconditionally: with no NPU present that policy picks the QNN plugin's x86
    HTP emulator (a CPU-type device) over the CPU EP, which is a test tool, not a fast path.
    """
    if device not in DEVICES:
        raise OptionsError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    ep_devices = onnxruntime_devices()
    if ep:
        known_names = {*ort.get_all_providers(), *(p.ep_name for p in PLUGINS), *(d.ep_name for d in ep_devices)}
        if ep not in known_names:  # a typo, not a provider that is missing here
            raise OptionsError(f"unknown execution provider {ep!r}; `amanuensis devices` lists the ones present")
        chosen = [d for d in ep_devices if d.ep_name == ep]
        if not chosen:
            known = sorted({d.ep_name for d in ep_devices})
            hint = _install_hint(ep)
            return _fallback(
                device, f"execution provider {ep} is not available (have: {', '.join(known)}){hint}", allow_fallback
            )
    elif device == "cpu":
        return SessionPlan("onnxruntime", CPU_EP, "cpu", device)
    else:
        wanted = ("npu",) if device in ("npu", "auto") else ("gpu",)
        chosen = [d for d in ep_devices if HARDWARE_NAMES.get(d.device.type) in wanted]
        if not chosen:
            if device == "auto":
                return SessionPlan("onnxruntime", CPU_EP, "cpu", device)
            return _fallback(device, f"no {device.upper()} execution provider found", allow_fallback)
    first = chosen[0]
    return SessionPlan(
        "onnxruntime",
        first.ep_name,
        HARDWARE_NAMES.get(first.device.type, "?"),
        device,
        ep_devices=[d for d in chosen if d.ep_name == first.ep_name],
        ep_options=plugin_options(first.ep_name),
    )


def _install_hint(ep: str) -> str:
    for plugin in PLUGINS:
        if plugin.ep_name == ep:
            return f"; install it with pip install 'amanuensis[{plugin.extra}]'"
    return ""


OPENVINO_TARGETS = {"auto": "AUTO:NPU,CPU", "npu": "NPU", "gpu": "GPU", "cpu": "CPU"}


def plan_openvino(device: str, allow_fallback: bool = True) -> SessionPlan:
    """OpenVINO compiles for its own device names; ``auto`` is its AUTO plugin, NPU first."""
    available = openvino_devices()
    if not available:
        raise DeviceUnavailable("the openvino backend is not installed; pip install 'amanuensis[openvino]'")
    target = OPENVINO_TARGETS[device]
    has = {name.split(".")[0] for name in available}
    if device in ("npu", "gpu") and target not in has:
        reason = f"OpenVINO has no {target} device (have: {', '.join(available)})"
        return _fallback(device, reason, allow_fallback, backend="openvino")
    hardware = device if device != "auto" else ("npu" if "NPU" in has else "cpu")
    return SessionPlan("openvino", target, hardware, device)


def plan(backend: str, device: str, ep: str | None = None, allow_fallback: bool = True) -> SessionPlan:
    if backend == "onnxruntime":
        return plan_onnxruntime(device, ep, allow_fallback)
    if backend == "openvino":
        if ep:
            raise OptionsError("--ep names an onnxruntime execution provider; it does not apply to --backend openvino")
        return plan_openvino(device, allow_fallback)
    raise OptionsError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
