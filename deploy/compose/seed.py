"""Write a synthetic scene (image and ground-truth labels) to object storage for the compose job.

    python seed.py s3://geoseg-demo/scene.zarr --size 2048

The bucket is created when missing; an existing scene is kept. Endpoint and credentials come
from the AWS_* environment variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

from __future__ import annotations

import argparse

import fsspec

from geoseg.demo import write_scene
from geoseg.io.output import output_exists
from geoseg.synth import make_scene


def seed(url: str, size: int, seed: int = 2026) -> bool:
    """Write the scene at ``url`` unless one is there; True when written."""
    fs, path = fsspec.core.url_to_fs(url)
    bucket = path.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    if output_exists(url):
        return False
    write_scene(make_scene(size, size, seed=seed), url)
    return True


def parser() -> argparse.ArgumentParser:
    """The command line: URL, --size, --seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="Where to write the scene (a Zarr group URL).")
    parser.add_argument("--size", type=int, default=2048, help="Height and width in pixels.")
    parser.add_argument("--seed", type=int, default=2026, help="Scene seed.")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    written = seed(args.url, args.size, args.seed)
    print(f"{'wrote' if written else 'kept the existing'} scene {args.url}")


if __name__ == "__main__":
    main()
