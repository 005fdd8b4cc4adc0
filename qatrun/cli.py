"""``qatrun``: compose the Hydra config, call ``train``, print the final figures. Nothing else."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://qatrun.configs", config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from qatrun import dist
    from qatrun.train import TrainingError, summary_lines, train  # imported late: --help stays fast

    run_dir = cfg.resume or HydraConfig.get().runtime.output_dir
    try:
        summary = train(cfg, run_dir)
    except (ValueError, TrainingError) as exc:  # user errors: one line, no traceback
        print(f"qatrun: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        dist.teardown()
    if not dist.is_main():
        return None
    print(f"\nrun directory: {run_dir}")
    print("\n".join(summary_lines(summary)))
    return summary.get("pair/quantized_agreement")


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
