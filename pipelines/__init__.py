"""Diffusers pipelines of hf-ddpm (installed as ``hf_ddpm.pipelines``)."""

from .pipeline_ddpm_doc import DDPMDocPipeline

__all__ = ["DDPMDocPipeline"]
