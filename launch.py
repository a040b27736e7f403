"""`python launch.py ...`: the command line of sassid_jax/cli.py, as the `sassid` console script."""

from sassid_jax.cli import run

if __name__ == "__main__":
    run()
