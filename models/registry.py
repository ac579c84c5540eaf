"""Name -> factory registries: detectors and recognizers here; backbones (models/backbones/base.py)
and margin heads (models/heads/base.py) use the same class.

A spec string is ``name`` or ``name:argument`` (e.g. ``dlib-hog``, ``insightface:/models/buffalo_l``,
``onnx:/models/w600k_r50.onnx``). Adding a model is one decorated factory; no if/elif elsewhere.
"""

from __future__ import annotations

from typing import Callable

from curate.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable] = {}

    def register(self, name: str):
        def deco(factory):
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def factory(self, name: str) -> Callable:
        return self._factories[name]

    def names(self) -> list[str]:
        return sorted(self._factories)

    def parse(self, spec: str) -> tuple[str, str | None]:
        name, _, arg = spec.partition(":")
        if name not in self._factories:
            raise ConfigError(f"unknown {self.kind} {spec!r}; known: {', '.join(self.names())}")
        return name, (arg or None)

    def build(self, spec: str, **kwargs):
        name, arg = self.parse(spec)
        return self._factories[name](arg, **kwargs)


DETECTORS = Registry("detector")
RECOGNIZERS = Registry("recognizer")
