"""An open, reproducible companion to UIU-Net (U-Net in U-Net for infrared small object detection, TIP 2023): model, authors' weights, training, Pd/Fa metrics, baselines.

Modules:

- `uiunet.device`: Where a model computes (CUDA, Apple MPS, CPU), in which number format (float32, bfloat16 or float16 mixed precision) and memory layout, and the facts about the processor that a timing or a resumed run must record.
- `uiunet.learner`: A plain PyTorch fit loop for UIU-Net: the release's recipe and the field's standard one, atomic safetensors checkpoints, exact resume, validation with IoU, nIoU, Pd and Fa."""

__version__ = "0.1.0"
