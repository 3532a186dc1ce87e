"""Variants in one cell: `sweep:` (every combination of listed values) and `variants:`
(partial headers applied on top of the rest), and the labels that tell the tiles apart.

    sweep:                      variants:
      mode: [std, pro]            - {prompt: A lighthouse, seen from a ship}
      duration: [5, 10]           - {mode: pro}
    -> 4 headers                -> 2 headers (x every sweep combination, if both)
"""

from __future__ import annotations

import itertools
from typing import Any

from ..errors import SpecError

MAX_EXPANSION = 200  # beyond any confirmation: refuse outright


def expand(header: dict, lines) -> list[tuple[dict, dict]]:
    """[(header of one variant, the fields this variant set)], in the order written."""
    sweep = header.get("sweep")
    variants = header.get("variants")
    base = {k: v for k, v in header.items() if k not in ("sweep", "variants")}
    if sweep is None and variants is None:
        return [(base, {})]
    combos: list[dict] = [{}]
    if sweep is not None:
        if not isinstance(sweep, dict) or not sweep:
            raise SpecError(
                "must map fields to lists of values, e.g. `mode: [std, pro]`", field="sweep", line=lines.of("sweep")
            )
        for key, values in sweep.items():
            if key in ("sweep", "variants"):
                raise SpecError(
                    "cannot sweep over sweep or variants", field=f"sweep.{key}", line=lines.of("sweep", key)
                )
            if not isinstance(values, list) or not values:
                raise SpecError("must be a non-empty list of values", field=f"sweep.{key}", line=lines.of("sweep", key))
        keys = list(sweep)
        count = 1
        for values in sweep.values():
            count *= len(values)
        _check_size(count, lines)
        combos = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())]
    overlays: list[dict] = [{}]
    if variants is not None:
        if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
            raise SpecError(
                "must be a non-empty list of partial headers (mappings)", field="variants", line=lines.of("variants")
            )
        for i, v in enumerate(variants):
            if "sweep" in v or "variants" in v:
                raise SpecError(
                    "a variant cannot hold sweep or variants", field=f"variants[{i}]", line=lines.of("variants", i)
                )
        overlays = variants
    _check_size(len(overlays) * len(combos), lines)
    out = []
    for overlay in overlays:
        for combo in combos:
            changed = {**overlay, **combo}
            out.append(({**base, **changed}, changed))
    return out


def labels(changed: list[dict]) -> list[dict]:
    """For each variant, only the fields whose values differ across the batch."""
    if len(changed) < 2:
        return [{} for _ in changed]
    keys: list[str] = []
    for c in changed:
        keys.extend(k for k in c if k not in keys)
    varying = [k for k in keys if len({_key(c.get(k)) for c in changed}) > 1]
    # A field a variant does not set is left out of its label (never "mode=None").
    return [{k: _short(c[k]) for k in varying if k in c} for c in changed]


def _check_size(count: int, lines) -> None:
    if count > MAX_EXPANSION:
        raise SpecError(
            f"expands to {count} generations; at most {MAX_EXPANSION} in one cell",
            field="sweep",
            line=lines.of("sweep"),
        )


def _key(value: Any) -> str:
    return repr(value)


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 40:
        return value[:39] + "…"
    if isinstance(value, (list, dict)):
        text = repr(value)
        return text if len(text) <= 40 else text[:39] + "…"
    return value
