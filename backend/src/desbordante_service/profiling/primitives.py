"""The primitives and algorithms the service offers, each with an explicit config schema.

Desbordante silently ignores unknown options; these schemas forbid them, check types strictly
and bound every value, so a bad request is a 422 naming the field, never a surprise result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _integral(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A strict integer that also takes an integral float (3.0), as JSON Schema's `integer` does;
# 3.5, "3" and true stay errors. Written `Annotated[int, Field(strict=True, ...), INTEGRAL]`:
# the constraints come before the validator, so the document shows them as `minimum`/`maximum`.
INTEGRAL = BeforeValidator(_integral)

MaxLhs = Annotated[
    int, Field(strict=True, ge=1, le=64, description="largest left-hand side considered"), INTEGRAL
]
Threads = Annotated[
    int, Field(strict=True, ge=1, le=16, description="worker threads of the algorithm"), INTEGRAL
]
Seed = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1, description="random seed"), INTEGRAL]
Error = Annotated[float, Field(ge=0.0, le=1.0, description="error threshold in [0, 1]")]
Arity = Annotated[
    int, Field(strict=True, ge=1, le=16, description="largest IND arity considered"), INTEGRAL
]
SampleSize = Annotated[int, Field(strict=True, ge=1, le=10_000), INTEGRAL]


def json_int(**constraints: Any) -> Any:
    """The integer type above with CONSTRAINTS known only at run time (typed `Any` for that)."""
    return Annotated[int, Field(strict=True, **constraints), INTEGRAL]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ExactFd(Options):
    max_lhs: MaxLhs | None = None


class ThreadedFd(ExactFd):
    threads: Threads = 1


class EulerFdOptions(ExactFd):
    is_null_equal_null: bool = True
    custom_random_seed: Seed | None = None


class PyroFdOptions(ThreadedFd):
    seed: Seed | None = None


class TaneAfd(Options):
    error: Error = 0.0
    max_lhs: MaxLhs | None = None
    afd_error_measure: Literal["g1", "pdep", "tau", "mu_plus", "rho"] = "g1"


class PfdTaneAfd(Options):
    error: Error = 0.0
    max_lhs: MaxLhs | None = None
    pfd_error_measure: Literal["per_tuple", "per_value"] = "per_tuple"


class PyroAfd(Options):
    error: Error = 0.0
    max_lhs: MaxLhs | None = None
    seed: Seed | None = None
    threads: Threads = 1


class HyUccOptions(Options):
    threads: Threads = 1


class NoOptions(Options):
    pass


class PyroUccOptions(Options):
    max_lhs: MaxLhs | None = None
    seed: Seed | None = None


class SpiderOptions(Options):
    is_null_equal_null: bool = True
    threads: Threads = 1


class MindOptions(Options):
    max_arity: Arity = 1


class FaidaOptions(Options):
    max_arity: Arity = 1
    sample_size: SampleSize = 500
    hll_accuracy: Annotated[float, Field(gt=0.0, le=1.0)] = 0.001
    ignore_constant_cols: bool = False
    ignore_null_cols: bool = False
    threads: Threads = 1


@dataclass(frozen=True)
class Primitive:
    name: str
    description: str
    module: str  # desbordante submodule holding `algorithms`
    default: str
    algorithms: dict[str, type[Options]]


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        Primitive(
            "fd",
            "exact functional dependencies",
            "fd",
            "HyFD",
            {
                "HyFD": ThreadedFd,
                "Aid": ExactFd,
                "DFD": ThreadedFd,
                "Depminer": ExactFd,
                "EulerFD": EulerFdOptions,
                "FDep": ExactFd,
                "FUN": ExactFd,
                "FastFDs": ThreadedFd,
                "FdMine": ExactFd,
                "Pyro": PyroFdOptions,
            },
        ),
        Primitive(
            "afd",
            "approximate functional dependencies (error threshold)",
            "afd",
            "Tane",
            {"Tane": TaneAfd, "PFDTane": PfdTaneAfd, "Pyro": PyroAfd},
        ),
        Primitive(
            "ucc",
            "unique column combinations",
            "ucc",
            "HyUCC",
            {"HyUCC": HyUccOptions, "HPIValid": NoOptions, "PyroUCC": PyroUccOptions},
        ),
        Primitive(
            "ind",
            "inclusion dependencies within the dataset",
            "ind",
            "Spider",
            {"Spider": SpiderOptions, "Mind": MindOptions, "Faida": FaidaOptions},
        ),
    )
}
