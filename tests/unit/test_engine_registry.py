"""The engine registry: plugins checked when loaded, settings validated by their model."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

from skybatch.engines.base import Engine, EngineCapabilities, JobStatus
from skybatch.engines.errors import EngineConfigError, EngineSettingsError
from skybatch.engines.local import LocalEngine, LocalSettings
from skybatch.engines.registry import ENTRY_POINT_GROUP, EngineRegistry
from skybatch.errors import EXIT_USAGE


class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slots: int = Field(default=1, ge=1)
    queue: str = "default"


class ToyEngine(Engine):
    name: ClassVar[str] = "toy"
    settings_model: ClassVar[type[ToySettings]] = ToySettings

    def __init__(self, settings: ToySettings | None = None) -> None:
        self.settings = settings or ToySettings()

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(max_parallel_jobs=self.settings.slots)

    def submit(self, specs: Sequence[Any]) -> list[str]:
        return []

    def poll(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        return []

    def cancel(self, engine_ids: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        pass


class NoSettingsEngine(ToyEngine):
    name: ClassVar[str] = "bare"
    settings_model = None  # type: ignore[assignment]


class HalfEngine(Engine):  # submit, poll, cancel, close missing
    name: ClassVar[str] = "half"
    settings_model: ClassVar[type[ToySettings]] = ToySettings


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_the_installed_engines_include_local_and_build_it_from_settings() -> None:
    registry = EngineRegistry.default()
    assert "local" in registry.names()
    assert registry.get("local") is LocalEngine
    assert registry.settings_model("local") is LocalSettings
    engine = registry.create("local", {"max_workers": 3, "isolation": "process"})
    try:
        assert isinstance(engine, LocalEngine)
        assert engine.settings.max_workers == 3
        assert engine.settings.isolation == "process"
    finally:
        engine.close()


def test_an_unknown_engine_names_the_installed_ones() -> None:
    registry = EngineRegistry(
        {"toy": ToyEngine, "local": _ep("local", "skybatch.engines.local:LocalEngine")}
    )
    with pytest.raises(EngineConfigError) as caught:
        registry.get("tyo")
    error = caught.value
    assert error.message == "unknown engine 'tyo'"
    assert error.hint is not None
    assert "did you mean 'toy'?" in error.hint
    assert "use one of the installed engines: local, toy" in error.hint
    assert error.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (dict, "engine 'x' is <class 'dict'>, not a subclass of skybatch.engines.base.Engine"),
        (ToyEngine, "ToyEngine declares name 'toy', but is registered as 'x'"),
        (NoSettingsEngine, "has no settings_model (a pydantic BaseModel class)"),
        (HalfEngine, "HalfEngine does not implement cancel, capabilities, close, poll, submit"),
    ],
)
def test_a_class_that_is_not_a_usable_engine_is_refused(cls: Any, message: str) -> None:
    name = {NoSettingsEngine: "bare", HalfEngine: "half"}.get(cls, "x")
    with pytest.raises(EngineConfigError) as caught:
        EngineRegistry({name: cls})
    assert message.replace("'x'", repr(name)) in caught.value.message


def test_a_bad_entry_point_fails_only_when_its_engine_is_asked_for() -> None:
    registry = EngineRegistry(
        {
            "toy": ToyEngine,
            "notengine": _ep("notengine", "collections:OrderedDict"),
            "broken": _ep("broken", "skybatch_no_such_module:Engine"),
        }
    )
    assert registry.names() == ["broken", "notengine", "toy"]
    assert registry.get("toy") is ToyEngine  # the broken ones do not stop the others
    with pytest.raises(EngineConfigError) as caught:
        registry.get("notengine")
    assert "not a subclass of skybatch.engines.base.Engine" in caught.value.message
    assert caught.value.where == (
        f"entry point notengine = collections:OrderedDict (group {ENTRY_POINT_GROUP})"
    )
    with pytest.raises(EngineConfigError) as caught:
        registry.get("broken")
    assert caught.value.message.startswith("cannot load engine 'broken': ModuleNotFoundError")


def test_an_entry_point_is_loaded_once_and_checked() -> None:
    registry = EngineRegistry({"toy": _ep("toy", f"{__name__}:ToyEngine")})
    assert registry.get("toy") is ToyEngine
    assert registry.get("toy") is ToyEngine
    assert "toy" in registry


def test_one_engine_name_from_two_packages_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import skybatch.engines.registry as module

    found = [_ep("toy", f"{__name__}:ToyEngine"), _ep("toy", "other.package:Toy")]
    monkeypatch.setattr(module, "entry_points", lambda group: found)
    with pytest.raises(EngineConfigError, match="engine 'toy' is provided twice"):
        EngineRegistry.from_entry_points()


def test_settings_are_validated_by_the_engine_settings_model() -> None:
    registry = EngineRegistry({"toy": ToyEngine})
    engine = registry.create("toy", {"slots": 4})
    assert isinstance(engine, ToyEngine) and engine.settings.slots == 4
    with pytest.raises(EngineSettingsError) as caught:
        registry.create("toy", {"slots": 0, "qeue": "x"})
    error = caught.value
    assert error.problems == [
        ("slots", "Input should be greater than or equal to 1, got 0"),
        ("qeue", "unknown setting"),
    ]
    assert error.where == "engine 'toy' settings.slots"
    assert error.hint == "did you mean 'queue'? settings of engine 'toy': slots, queue"
    assert isinstance(error, EngineConfigError) and error.exit_code == EXIT_USAGE
    assert "slots: Input should be greater than or equal to 1, got 0" in str(error)


def test_normalized_settings_keep_only_what_was_given_as_json() -> None:
    registry = EngineRegistry({"toy": ToyEngine})
    assert registry.normalize_settings("toy", {"slots": "3"}) == {"slots": 3}
    assert registry.normalize_settings("toy", None) == {}
