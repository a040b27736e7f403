"""The local GCS emulator of test_bucket_paths.py, with object generations on downloads.

  python tests/gcs_emulator.py PORT BUCKET     (in memory, on 127.0.0.1 only)

gcp-storage-emulator answers object downloads without the `x-goog-generation` header that
real GCS sends. TensorStore (orbax's array writer) reads an OCDBT manifest back before
updating it and refuses a download without that header ("Malformed StorageGeneration"),
so a checkpoint of more than a few arrays cannot be written to the bare emulator. This
launcher adds the header (the stored object's generation) to every download handler, then
runs the emulator's own `start` command. Generation preconditions (ifGenerationMatch) are
still ignored by the emulator: fine for the single writer of the test.
"""

from __future__ import annotations

import sys


def _with_generation(download):
    def handler(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # not found: the original handler already answered 404
            return
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    return handler


def main(port: str, bucket: str) -> None:
    from gcp_storage_emulator import __main__ as cli
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    original = objects.download
    objects.download = patched = _with_generation(original)  # objects.get(alt=media) calls it
    for _, handlers in server.HANDLERS:
        if handlers.get(server.GET) is original:
            handlers[server.GET] = patched
    cli.main(
        ["start", "--host", "127.0.0.1", "--port", port, "--in-memory", "--default-bucket", bucket]
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
