"""Copy an evaluation folder to its results URI (s3://bucket/prefix or a folder), file by file, via seedr1.storage.

    python upload_results.py LOCAL_DIR DEST_URI
"""
import sys
from pathlib import Path

from seedr1.storage import get_storage, join

src, dest = Path(sys.argv[1]), sys.argv[2].rstrip("/")
storage = get_storage(dest)
files = sorted(p for p in src.rglob("*") if p.is_file())
for path in files:
    storage.upload_file(path, join(dest, path.relative_to(src).as_posix()))
print(f"uploaded {len(files)} files from {src} to {dest}", flush=True)
