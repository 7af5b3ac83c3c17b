"""Typed request and response bodies (they make the OpenAPI document at /openapi.json)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


def settings_model():
    """A pydantic model of the settings JSON, built from ``dmst.schema``: one field per parameter, with its range.

    So the OpenAPI document describes whatever console the schema describes.
    """
    from .. import schema

    groups = {}
    for group in schema.GROUPS:
        fields = {}
        for p in schema.SCHEMA:
            if p.group == group:
                unit = f" [{p.unit}]" if p.unit else ""
                extra = {"json_schema_extra": {"enum": list(p.choices)}} if p.discrete else {}
                fields[p.name] = (float, Field(ge=p.minimum, le=p.maximum, description=p.description + unit,
                                               examples=[p.default], **extra))
        groups[group] = (create_model(f"{group.capitalize()}Settings", **fields), ...)
    return create_model("Settings", schema_version=(int, Field(schema.SCHEMA_VERSION)),
                        meta=(dict | None, Field(None, description="model, presets, amount, source")), **groups)


class Versions(BaseModel):
    dmst: str
    python: str
    torch: str
    torchaudio: str
    numpy: str
    fastapi: str
    pydantic: str


class PoolInfo(BaseModel):
    threads: int
    capacity: int = Field(description="renders running plus waiting before 503")
    in_flight: int
    torch_threads: int = Field(description="torch's own threads per render (1 unless --torch-threads)")
    kernel_threads: int = Field(description="threads the compiled render loops split their work over")


class Health(BaseModel):
    status: Literal["ok"]
    model: str = Field(description="the model served as 'default'")
    schema_version: int
    versions: Versions
    render_pool: PoolInfo


class PresetInfo(BaseModel):
    name: str
    description: str
    changes: list[str] = Field(description="one line per change, e.g. 'compressor.ratio x1.6'")
    source: str


class ModelInfo(BaseModel):
    name: str
    kind: Literal["server", "fine-tuned"]
    base_model: str | None = None
    created_at: float | None = None
    job: str | None = None
    best_val_loss: float | None = None
    init_val_loss: float | None = None


class ParamInfo(BaseModel):
    key: str
    group: str
    name: str
    unit: str
    minimum: float
    maximum: float
    default: float
    scale: Literal["log", "linear", "discrete"]
    description: str
    choices: list[float] = Field([], description="a discrete parameter's only values (empty: any in the range)")


class SchemaInfo(BaseModel):
    schema_version: int
    groups: list[str]
    params: list[ParamInfo]


class CurvesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: dict[str, dict[str, float]] = Field(description="the settings JSON's groups (schema_version and meta "
                                                              "are ignored)")
    sample_rate: int = Field(44100, ge=8000, le=384000)
    points: int = Field(256, ge=16, le=2048)


class EqCurve(BaseModel):
    freq_hz: list[float]
    gain_db: list[float]


class CompressorCurve(BaseModel):
    input_db: list[float]
    output_db: list[float]
    threshold_db: float
    knee_db: float


class Curves(BaseModel):
    eq: EqCurve = Field(description="the EQ's gain: an impulse through the EQ itself, as dmst plot draws it")
    post_eq: EqCurve = Field(description="the post-compressor EQ's gain, measured the same way")
    compressor: CompressorCurve


JobKind = Literal["mix", "finetune"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobInfo(BaseModel):
    id: str
    kind: JobKind
    state: JobState
    progress: float = Field(ge=0, le=1)
    error: str | None = Field(None, description="why it failed; or a note such as 'interrupted ...; resumed'")
    attempts: int
    created_at: float
    updated_at: float
    finished_at: float | None = None
    result_url: str | None = None
    result: dict | None = Field(None, description="mix: settings and true peak; finetune: the new model's name")


class JobDeleted(BaseModel):
    id: str
    state: Literal["deleted", "cancelling"]
