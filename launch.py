"""The one entry point (the same as the `sassid` console script); flags and modes live in
sassid_jax/cli.py.

python launch.py --config configs/default.py --workdir runs/default            # train
python launch.py --mode denoise --checkpoint runs/default --input IN --output OUT
python launch.py --mode eval --config configs/sidd_validation.py --checkpoint CKPT --output DIR
python launch.py --mode submit --config configs/dnd.py --checkpoint CKPT --output DIR
python launch.py --mode prepare --config configs/sasl_paper.py   # build the datasets once

JAX options are flags too (--jax_platforms=cpu, --jax_compilation_cache_dir=DIR; see
--helpfull). Bad input: one line on stderr, exit code 2.
"""

from sassid_jax.cli import run

if __name__ == "__main__":
    run()
