"""Packaging for hf-ddpm.

The pipeline lives in the top-level ``pipelines/`` folder of the repository (the project's layout) and is
installed as the sub-package ``hf_ddpm.pipelines``, so there is one definition of ``DDPMDocPipeline`` and
``from hf_ddpm import DDPMDocPipeline`` works after a plain ``pip install .``. The link ``hf_ddpm/pipelines`` →
``../pipelines`` makes the same import work from a checkout (Python started in the repository root finds the
source tree's ``hf_ddpm`` before the installed one).
"""

from setuptools import find_packages, setup

setup(
    name="hf-ddpm",
    version="0.1.0",
    description="Denoising Diffusion Probabilistic Models (Ho et al. 2020) as a Hugging Face diffusers extension",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["hf_ddpm", "hf_ddpm.*"], exclude=["hf_ddpm.pipelines"]) + ["hf_ddpm.pipelines"],
    package_dir={"hf_ddpm.pipelines": "pipelines"},
    # hf_ddpm/model_card.md links to the root template; the digits evaluator ships its weights
    package_data={"hf_ddpm": ["model_card.md", "metrics/digits_evaluator_weights/*"]},
    install_requires=[
        "torch>=2.1",
        "diffusers>=0.30",
        "accelerate>=1.0",
        "datasets>=2.18",
        "huggingface_hub>=0.24",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pillow>=9.0",
        "tqdm>=4.60",
        "scikit-learn>=1.2",
        "transformers>=4.40",
        "matplotlib>=3.5",
        "Jinja2>=3.0",  # model card rendering (hf_ddpm.hub)
        "PyYAML>=5.1",  # model card metadata check (hf_ddpm.hub)
    ],
    # tensorboard, wandb: the --logger tests (offline wandb); mpmath: high-precision references of the bound's terms;
    # docs: the documentation site (mkdocs.yml; `mkdocs build --strict` in CI), its API reference from the docstrings
    # guided-diffusion-sdk: openai's guided_diffusion (it brings blobfile), the reference of hf_ddpm.convert's tests
    extras_require={"test": ["pytest>=7", "tensorboard>=2.10", "wandb>=0.16", "mpmath>=1.0",
                             "guided-diffusion-sdk>=1.0"],
                    "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26",
                             "pymdown-extensions>=10.0"]},
    entry_points={"console_scripts": ["hf-ddpm=hf_ddpm.cli:main"]},
)
