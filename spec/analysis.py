"""`analysis:` what is computed from a sweep's results (docs/spec-reference.md, docs/science.md).

Plain settings; the fitting and reporting code implements the math. The law is eq. 1/3:
L(S, N, D) = (a_S (1-S)^b_S + c_S) N^-b_N + (a_D / D)^b_D + c.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from spec.common import SpecModel


class NoHoldout(SpecModel):
    """Fit on every run."""

    kind: Literal["none"] = Field(description="Holdout type.")


class LargestNonzerosHoldout(SpecModel):
    """Hold out the runs of the largest non-zero count, to test extrapolation in N."""

    kind: Literal["largest_nonzeros"] = Field(description="Holdout type.")


class RunsHoldout(SpecModel):
    """Hold out the from-scratch runs whose sweep coordinates match any of the listed ones. Each
    entry must select at least one run and together they must leave runs to fit
    (`engine validate --plan` and `engine run` check this before training)."""

    kind: Literal["runs"] = Field(description="Holdout type.")
    coordinates: list[dict[str, Any]] = Field(
        min_length=1,
        description=(
            "Each a mapping sweep axis (dotted field path) -> value, e.g. {model.nonzeros: 40000, data.steps: 600}; "
            "a run matching every pair of any entry is held out."
        ),
    )


Holdout = Annotated[NoHoldout | LargestNonzerosHoldout | RunsHoldout, Field(discriminator="kind")]


class FitSettings(SpecModel):
    """How the law is fitted: Huber loss (Hoffmann et al.) minimised from several starts, with
    coefficients kept positive, then bootstrap intervals. The paper uses delta 1e-3 on log L for
    T5 and delta 1e-2 on L for ViT. These defaults are also `engine fit`'s."""

    huber_delta: float = Field(default=1e-3, gt=0, description="Huber loss threshold.")
    log_loss: bool = Field(default=True, description="Fit log L instead of L.")
    starts: int = Field(default=32, gt=0, description="Random starting points of the minimisation.")
    seed: int = Field(default=0, description="Seed for the starting points and the bootstrap.")
    bootstrap: int = Field(default=1000, ge=0, description="Bootstrap resamples for coefficient intervals; 0 for none.")
    holdout: Holdout = Field(
        default_factory=lambda: LargestNonzerosHoldout(kind="largest_nonzeros"),
        description="Runs left out of the fit to measure prediction error (default: the largest size).",
    )


class GainsSettings(SpecModel):
    """Effective size multipliers of sparsity, eq. 7 (Table 2)."""

    sparsities: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75, 0.875], min_length=1, description="Sparsity levels to report gains at."
    )


class OptimalSparsitySettings(SpecModel):
    """The optimal sparsity S_opt(N, C) (eq. 5/6), for dense and/or sparse costs: a table of how many
    times the Chinchilla-optimal length one must train before each listed sparsity is optimal, and
    the contours over (N, C)."""

    sparsities: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75, 0.875], min_length=1,
        description="Sparsity levels of the table: the training length (in Chinchilla multiples) at which each becomes optimal.",
    )
    costs: list[Literal["dense", "sparse"]] = Field(
        default_factory=lambda: list[Literal["dense", "sparse"]](["dense", "sparse"]),
        min_length=1,
        description="Training-cost conventions: dense (C of the dense base model) and sparse (eq. 4).",
    )


class ExtrapolationPoint(SpecModel):
    """A point (S, N, D) at which the fitted law's loss is reported."""

    sparsity: float = Field(ge=0, lt=1, description="S.")
    nonzeros: float = Field(gt=0, description="N, non-zero weights of the sparsified layers.")
    data: float = Field(gt=0, description="D, in examples (vision) or tokens (language).")


class IsoflopSettings(SpecModel):
    """The IsoFLOP analysis (Hoffmann et al.'s approach 2), per sparsity: runs sharing a budget
    (N x D) form a curve whose parabola in log N gives that budget's optimal N and D; across budgets,
    N_opt ~ C^a and D_opt ~ C^b, reported with bootstrap intervals beside what the fitted law implies."""

    budget_tolerance: float = Field(
        default=0.02, gt=0, lt=1, description="Runs whose N x D agree within this relative tolerance share a budget."
    )
    min_sizes: int = Field(default=3, ge=3, description="Distinct sizes a budget needs for its parabola.")


class DesignSettings(SpecModel):
    """An adaptive study: the sweep is the candidate grid; `engine run` trains the `initial` runs,
    then alternates fit -> suggest -> train (engine suggest's design) until the target's bootstrap
    standard deviation is below `stop_sd`, `rounds` are done, or `budget` is spent."""

    target: str = Field(
        pattern=r"^(all|a_S|b_S|c_S|b_N|a_D|b_D|c|gain:[^,]+|loss:[^,]+,[^,]+,[^,]+|sopt:[^,]+,[^,]+)$",
        description="What to pin down: gain:S, a coefficient (e.g. b_N), loss:S,N,D, sopt:N,C, or all (D-optimal).",
        examples=["gain:0.75"],
    )
    initial: dict[str, list[Any]] = Field(
        min_length=1,
        description="The runs trained first: sweep axis path -> the values of that axis to take (their product).",
        examples=[{"model.nonzeros": [5000, 40000], "sparsity.level": [0.0, 0.75], "data.steps": [150, 600]}],
    )
    budget: float = Field(
        gt=0, description="Training FLOPs the rounds may spend, as a multiple of the initial runs' FLOPs (dense costs)."
    )
    rounds: int = Field(default=3, ge=1, description="Fit -> suggest -> train rounds at most.")
    batch: int = Field(default=4, ge=1, description="Runs proposed per round.")
    stop_sd: float | None = Field(
        default=None, gt=0, description="Stop once the target's bootstrap standard deviation is below this; null: never early."
    )


class SpecFitSource(SpecModel):
    """The fit of another experiment spec's sweep."""

    kind: Literal["spec"] = Field(description="Source type.")
    spec: str = Field(description="Path of the experiment spec, relative to this spec file.")


class FileFitSource(SpecModel):
    """A fit.json written by `engine fit` or a report."""

    kind: Literal["fit_file"] = Field(description="Source type.")
    path: str = Field(description="Path of the fit.json, relative to this spec file.")


FitSource = Annotated[SpecFitSource | FileFitSource, Field(discriminator="kind")]


class NmRefitSettings(SpecModel):
    """n:m laws (section 4.1): refit only a_S, b_S, c_S with the dense coefficients frozen."""

    dense_fit: FitSource = Field(description="Where the frozen coefficients b_N, a_D, b_D, c come from.")


class PretrainedVsScratchSettings(SpecModel):
    """Table 4: the data a from-scratch run needs to match each pruned pretrained run, through a
    fitted law, with and without the pretraining cost."""

    law: FitSource = Field(description="The fitted law of from-scratch training used for the comparison.")


class ReportSettings(SpecModel):
    """What the report writes."""

    formats: list[Literal["markdown", "html"]] = Field(
        default_factory=lambda: list[Literal["markdown", "html"]](["markdown", "html"]), min_length=1,
        description="Report formats written: markdown (index.md, figures/*.png), html (index.html, self-contained).",
    )


class AnalysisSpec(SpecModel):
    """Analyses run after the sweep. Optional parts are off when absent (null)."""

    fit: FitSettings | None = Field(
        default_factory=FitSettings, description="Fit the law to this sweep's results; null to skip (e.g. too few runs)."
    )
    gains: GainsSettings | None = Field(default_factory=GainsSettings, description="Gains table (eq. 7); null to skip.")
    optimal_sparsity: OptimalSparsitySettings | None = Field(
        default_factory=OptimalSparsitySettings, description="Optimal-sparsity contours; null to skip."
    )
    extrapolation: list[ExtrapolationPoint] = Field(
        default_factory=list, description="Points (S, N, D) at which to report the law's prediction."
    )
    isoflop: IsoflopSettings | None = Field(
        default=None, description="IsoFLOP analysis per budget and sparsity (needs runs sharing budgets); null to skip."
    )
    design: DesignSettings | None = Field(
        default=None,
        description="An adaptive study (fit -> suggest -> train rounds over the sweep's grid); null: train the whole grid.",
    )
    nm_refit: NmRefitSettings | None = Field(
        default=None,
        description=(
            "n:m refit against a frozen dense fit, with `fit`'s Huber, starts and bootstrap settings (no "
            "holdout; Huber 0.01 on L when `fit` is null); it replaces this sweep's own full fit, and with it "
            "what is derived from that fit (gains, optimal_sparsity, extrapolation, isoflop): the refit "
            "reports its gains at the n:m levels of the results. Null to skip."
        ),
    )
    pretrained_vs_scratch: PretrainedVsScratchSettings | None = Field(
        default=None,
        description=(
            "Pretrained-vs-scratch data equivalence (Table 4) of this sweep's pretrained runs through the "
            "law named in `law`. It adds a report section and does not replace this sweep's own fit: with "
            "`fit` set the from-scratch runs are still fitted and reported (Table 4 through that fit is "
            "left out, the named law's is shown); with `fit` null the section is the whole report. Null to skip."
        ),
    )
    report: ReportSettings = Field(default_factory=ReportSettings, description="Report output settings.")
