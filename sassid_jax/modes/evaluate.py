"""`--mode eval`: one trained network scored on the config's evaluation dataset.

It denoises the evaluation dataset (SIDD validation blocks, the embedded default, a folder with
references, ...) with one network, optionally with the x8 self-ensemble, scores it by the
published protocol (per phone and ISO on SIDD validation when the metadata is known) and writes
<output>/eval_<dataset>.json.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from etils import epath

from sassid_jax.configuration import validate_eval_config
from sassid_jax.data import sources
from sassid_jax.errors import ConfigError
from sassid_jax.evaluation.scoring import format_scores, limit, progress_bar, score_examples
from sassid_jax.inference import procedure
from sassid_jax.inference.colour_anchor import config_sigma
from sassid_jax.inference.predict import denoise_images
from sassid_jax.io.atomic_files import write_json
from sassid_jax.io.checkpoints import load_network_or_hint
from sassid_jax.io.paths import check_writable_folder


def run_eval(config: Any, checkpoint: str, output: str) -> dict[str, Any]:
    """Evaluate one network of `checkpoint` on the config's evaluation data.

    Args:
      config: a run config; config.dataset names the data (every image needs a clean
        reference), config.eval.network the network, config.eval.ensemble and
        config.postprocess.colour_sigma how it is run.
      checkpoint: a run folder, a folder inside its checkpoints/, or an authors' `.pth`.
      output: the folder that gets eval_<dataset>.json (created if missing).
    Returns:
      The results written there: PSNR and SSIM (mean, per image, per phone and ISO when
      known), the settings and the seconds taken. `checkpoint` and `output` may be bucket
      URLs (gs://...).
    """

    validate_eval_config(config, "eval")  # also when called from Python, not the CLI
    check_writable_folder(output, "--output")  # before the work, not after it
    examples = limit(sources.load_eval_examples(config.dataset), config.eval.max_images)
    name = config.dataset.get("eval_name") or config.dataset.name
    missing = [e["name"] for e in examples if e["clean"] is None]
    if missing:
        raise ConfigError(
            f"dataset {name!r}: {len(missing)} images have no clean reference "
            f"(first: {missing[0]}); use --mode submit or --mode denoise"
        )
    network = config.eval.network  # and the method's procedure (config.inference) around it
    arch = procedure.architecture(config, network)
    attributes = procedure.pth_attributes(config, network)  # a .pth's input_scale
    module, params = load_network_or_hint(
        checkpoint, network, "--config.eval.network=", arch, attributes
    )
    apply_fn = procedure.jit_procedure(module, params, procedure.from_config(config, network))
    sigma = config_sigma(config)
    start = time.perf_counter()
    with progress_bar(len(examples), "img") as bar:
        outputs = denoise_images(
            apply_fn,
            [e["noisy"] for e in examples],
            ensemble=config.eval.ensemble,
            batch=config.eval.batch,
            progress=bar.update,
            colour_sigma=sigma,
        )
    seconds = time.perf_counter() - start
    result = score_examples(examples, outputs)
    result.update(
        {
            "dataset": name,
            "checkpoint": str(checkpoint),
            "network": config.eval.network,
            "ensemble": bool(config.eval.ensemble),
            "colour_sigma": sigma,
            "seconds": seconds,
        }
    )
    print(
        format_scores(
            f"{name} ({config.eval.network}{', x8 ensemble' if config.eval.ensemble else ''})",
            result,
        )
    )
    out = epath.Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"eval_{name}.json", result)
    logging.info("wrote %s", out / f"eval_{name}.json")
    return result
