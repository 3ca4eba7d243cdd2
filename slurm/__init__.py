"""Slurm backends: sbatch templates, submission (sbatch, submitit), job tracking, the loopback test cluster."""
