"""A sweep's trials: each one's parameters drawn from the search space, and its run spec.

Drawn once, when the sweep is created, from the sweep's seed: the same spec gives the same
trials, and a trial's spec is validated as any run's before anything is stored.
"""

import itertools
import math
import random
from typing import Any

from pydantic import ValidationError

from services.api.errors import Unprocessable
from shared.specs import RunSpec
from shared.sweeps import Choice, IntRange, LogUniform, Parameter, SweepSpec, Uniform, log_uniform_grid


def _draw(parameter: Parameter, rng: random.Random) -> Any:
    if isinstance(parameter, LogUniform):
        return math.exp(rng.uniform(math.log(parameter.low), math.log(parameter.high)))
    if isinstance(parameter, Uniform):
        return rng.uniform(parameter.low, parameter.high)
    if isinstance(parameter, IntRange):
        return rng.randrange(parameter.low, parameter.high + 1, parameter.step)
    return rng.choice(parameter.values)


def _grid(parameter: Parameter) -> list[Any]:
    if isinstance(parameter, LogUniform):
        return log_uniform_grid(parameter.low, parameter.high, parameter.grid_points)
    if isinstance(parameter, Uniform):
        if parameter.grid_points == 1:
            return [(parameter.low + parameter.high) / 2]
        step = (parameter.high - parameter.low) / (parameter.grid_points - 1)
        return [parameter.low + i * step for i in range(parameter.grid_points)]
    if isinstance(parameter, IntRange):
        return list(range(parameter.low, parameter.high + 1, parameter.step))
    assert isinstance(parameter, Choice)
    return list(parameter.values)


def trial_parameters(spec: SweepSpec) -> list[dict[str, Any]]:
    """Each trial's values of the searched fields, in trial order."""
    fields = sorted(spec.space)
    if spec.searcher.name == "grid":
        points = itertools.product(*(_grid(spec.space[f]) for f in fields))
        return [dict(zip(fields, point, strict=True)) for point in itertools.islice(points, spec.trials)]
    rng = random.Random(spec.seed)
    return [{f: _draw(spec.space[f], rng) for f in fields} for _ in range(spec.trials)]


def trial_specs(spec: SweepSpec) -> list[tuple[dict[str, Any], RunSpec]]:
    """(parameters, run spec) of every trial; 422 naming the trial and field when one is not a valid run."""
    epochs = spec.searcher.max_epochs if spec.searcher.name == "asha" else None
    trials = []
    for index, parameters in enumerate(trial_parameters(spec)):
        fields = {**spec.base, **parameters, "name": f"{spec.name}-{index + 1:02d}"}
        if epochs is not None:
            fields["epochs"] = epochs
        try:
            trials.append((parameters, RunSpec.model_validate(fields)))
        except ValidationError as error:
            problems = []
            for item in error.errors():
                top = str(item["loc"][0]) if item["loc"] else ""
                where = f"space.{top}" if top in parameters else ("searcher.max_epochs" if top == "epochs"
                                                                   and epochs is not None else f"base.{top}")
                where += "".join(f".{part}" for part in item["loc"][1:])
                problems.append({"field": where, "message": item["msg"],
                                 "value": repr(item.get("input"))[:200]})
            first = problems[0]
            raise Unprocessable(f"trial {index + 1} is not a valid run: {first['field']} = {first['value']}: "
                                f"{first['message']}", problems) from error
    return trials
