"""What a DiT run's config says about its network and how to sample it: the sections inference reads.

A trainer builds this from the command line's config, the pipeline from the config saved in the
run's checkpoint; both get the same network, prediction kind, noise-level shift and sampling
defaults. The fingerprint (the settings that shape the weights) is what resume and fine-tuning
compare.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sorajax.diffusion.flow import PREDICTION_KINDS
from sorajax.diffusion.sampling import SampleConfig
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.build import TextEncoderConfig, dit_config
from sorajax.models.dit import DiTConfig
from sorajax.patches import check_patch
from sorajax.runs.records import as_json_tree, fingerprint

SECTIONS = ("model", "patch", "prediction", "text_encoder", "time", "sample")


@dataclasses.dataclass(frozen=True)
class DiTSpec:
    model: Mapping[str, Any]  # a DiTConfig preset name plus overrides (validated in `from_config`)
    patch: tuple[int, int, int]
    prediction: str
    text_encoder: TextEncoderConfig
    time: TrainingTimeConfig
    sample: SampleConfig

    @classmethod
    def from_config(cls, config: Any) -> "DiTSpec":
        """From a run config (a ConfigDict or its saved JSON); reads only the sections above."""
        model = as_json_tree(config["model"])
        if config["prediction"] not in PREDICTION_KINDS:
            raise ValueError(f"prediction {config['prediction']!r} is unknown: use one of {PREDICTION_KINDS}")
        spec = cls(model=model, patch=check_patch(config["patch"]), prediction=config["prediction"],
                   text_encoder=TextEncoderConfig.from_mapping(config["text_encoder"]),
                   time=TrainingTimeConfig.from_mapping(config["time"]),
                   sample=SampleConfig.from_mapping(config["sample"] if "sample" in config else {}))
        spec.dit_config(latent_channels=1, text_dim=1)  # refuses a bad model section now, not after loading
        return spec

    def dit_config(self, latent_channels: int, text_dim: int) -> DiTConfig:
        return dit_config(self.model, self.patch, latent_channels, text_dim)

    @property
    def fingerprint(self) -> str:
        """The settings that shape the weights; where the text encoder's files lie is not one of them."""
        text = {k: v for k, v in dataclasses.asdict(self.text_encoder).items() if k not in ("path", "tokenizer_path")}
        return fingerprint({"model": self.model, "patch": list(self.patch), "text_encoder": text,
                            "prediction": self.prediction})

    def located(self, run: Any) -> "DiTSpec":
        """The spec with a relative text-encoder path taken relative to `run` (a converted run carries its UMT5)."""
        return dataclasses.replace(self, text_encoder=self.text_encoder.located(run))
