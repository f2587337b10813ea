"""Independent references for the numerical tests: softmax in 60-digit decimal arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, localcontext


def softmax_reference(logits: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(logits / temperature), exact to far beyond float64, rounded once at the end."""
    with localcontext() as ctx:
        ctx.prec = 60
        z = [Decimal(x) / Decimal(temperature) for x in logits]
        top = max(z)
        e = [(v - top).exp() for v in z]
        total = sum(e)
        return [float(v / total) for v in e]
